// Watch page: a read-only xterm on the session's watch socket. It shows the current screen,
// then live output; nothing typed here is sent. Reconnects (and redraws) after a drop.
(function () {
  "use strict";

  var THEMES = {
    dark: { background: "#0b1120", foreground: "#e2e8f0", cursor: "#22c55e", selectionBackground: "rgba(96,165,250,.35)" },
    light: { background: "#fbfcfd", foreground: "#1e293b", cursor: "#2563eb", selectionBackground: "rgba(37,99,235,.22)" }
  };
  var BACKOFF_MAX = 10000, MAX_ATTEMPTS = 12;

  function boot() {
    var root = document.getElementById("watch-app");
    if (!root || !window.Terminal) return;
    var screen = root.querySelector("[data-role=screen]");
    var statusEl = root.querySelector("[data-role=status]");
    var statusText = root.querySelector("[data-role=status-text]");
    var path = root.getAttribute("data-ws-path");
    var cols = parseInt(root.getAttribute("data-cols"), 10) || 80;
    var rows = parseInt(root.getAttribute("data-rows"), 10) || 24;
    var theme = "dark";
    try { theme = window.localStorage.getItem("portal.term.theme") || (window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark"); } catch (e) { /* default */ }
    if (window.portalTermThemes) THEMES = window.portalTermThemes;
    if (!THEMES[theme]) theme = "dark";
    root.setAttribute("data-term-theme", theme);

    var term = new window.Terminal({
      allowProposedApi: true, disableStdin: true, cursorBlink: false, cols: cols, rows: rows,
      fontFamily: '"DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace',
      fontSize: 14, lineHeight: 1.12, scrollback: 2000, theme: THEMES[theme]
    });
    try { term.loadAddon(new window.Unicode11Addon.Unicode11Addon()); term.unicode.activeVersion = "11"; } catch (e) { /* optional */ }
    term.open(screen);

    // Same columns as the shell being watched; shrink the font until it fits the width.
    function scale() {
      var avail = screen.clientWidth - 16;
      var size = 14;
      term.options.fontSize = size;
      var el = screen.querySelector(".xterm-screen");
      while (el && el.offsetWidth > avail && size > 7) {
        size -= 1;
        term.options.fontSize = size;
      }
    }
    scale();
    var t = null;
    window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(scale, 100); });

    var ws = null, attempt = 0, ended = false, timer = null;
    function setStatus(state, text) {
      statusEl.setAttribute("data-state", state);
      statusText.textContent = text;
    }
    function connect() {
      clearTimeout(timer);
      setStatus(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting (attempt " + attempt + ")…" : "connecting…");
      var proto = location.protocol === "https:" ? "wss:" : "ws:";
      var rel = path;
      if (/^wss?:\/\//i.test(rel)) { try { var u = new URL(rel); rel = u.pathname + u.search; } catch (e) { /* as is */ } }
      var sock = new WebSocket(proto + "//" + location.host + rel);
      sock.binaryType = "arraybuffer";
      ws = sock;
      sock.onmessage = function (ev) {
        if (sock !== ws) return;
        if (typeof ev.data !== "string") { term.write(new Uint8Array(ev.data)); return; }
        var msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.type === "ready") {
          attempt = 0;
          term.write("", function () { term.reset(); }); // the screen is sent next
          setStatus("connected", "watching live");
        } else if (msg.type === "resize") {
          // The owner resized: same columns and rows as the shell, then refit the font.
          var c = msg.cols | 0, r = msg.rows | 0;
          if (c >= 1 && c <= 1000 && r >= 1 && r <= 1000 && (c !== term.cols || r !== term.rows)) {
            term.write("", function () { term.resize(c, r); scale(); });
          }
        } else if (msg.type === "exit" || msg.type === "error") {
          ended = true;
          setStatus("closed", "closed: " + (msg.message || msg.reason || "the session ended"));
        }
      };
      sock.onclose = function () {
        if (sock !== ws) return;
        ws = null;
        if (ended) return;
        attempt += 1;
        if (attempt > MAX_ATTEMPTS) { setStatus("closed", "closed: connection lost"); return; }
        setStatus("reconnecting", "reconnecting (attempt " + attempt + ")…");
        timer = setTimeout(connect, Math.min(500 * Math.pow(2, attempt - 1), BACKOFF_MAX));
      };
    }
    function wake() { if (!ended && !ws) { attempt = Math.max(attempt, 1); connect(); } }
    document.addEventListener("visibilitychange", function () { if (document.visibilityState === "visible") wake(); });
    window.addEventListener("online", wake);
    setInterval(function () { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" })); }, 25000);
    connect();

    window.portalWatch = {
      term: term,
      text: function () {
        var buf = term.buffer.active, lines = [];
        for (var i = 0; i < buf.length; i++) { var l = buf.getLine(i); if (l) lines.push(l.translateToString(true)); }
        return lines.join("\n");
      }
    };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
