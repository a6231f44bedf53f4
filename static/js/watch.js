// Watch page: a read-only xterm on the session's watch socket. It shows the current screen,
// then live output; nothing typed here is sent. The terminal's connection (backoff,
// keep-alive, liveness probe) reconnects it after a drop, and the server redraws.
import { Connection, onWake, wsUrl } from "./terminal/connection.js";
import { THEMES, initialTheme } from "./terminal/themes.js";
import { bufferText, trackViewport } from "./terminal/util.js";

const MAX_ATTEMPTS = 12;

function boot(root) {
  const screen = root.querySelector("[data-role=screen]");
  const statusEl = root.querySelector("[data-role=status]");
  const statusText = root.querySelector("[data-role=status-text]");
  const path = root.getAttribute("data-ws-path");
  const cols = parseInt(root.getAttribute("data-cols"), 10) || 80;
  const rows = parseInt(root.getAttribute("data-rows"), 10) || 24;
  const theme = initialTheme();
  root.setAttribute("data-term-theme", theme);

  const term = new window.Terminal({
    allowProposedApi: true, disableStdin: true, cursorBlink: false, cols: cols, rows: rows,
    fontFamily: '"DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace',
    fontSize: 14, lineHeight: 1.12, scrollback: 2000, theme: THEMES[theme]
  });
  try { term.loadAddon(new window.Unicode11Addon.Unicode11Addon()); term.unicode.activeVersion = "11"; } catch (e) { /* optional */ }
  term.open(screen);

  // Same columns as the shell being watched; shrink the font until it fits the width.
  function scale() {
    const avail = screen.clientWidth - 16;
    let size = 14;
    term.options.fontSize = size;
    const el = screen.querySelector(".xterm-screen");
    while (el && el.offsetWidth > avail && size > 7) {
      size -= 1;
      term.options.fontSize = size;
    }
  }
  scale();
  let t = null;
  window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(scale, 100); });

  const conn = new Connection({
    url: function () { return wsUrl(path, {}); },
    state: function (state, reason) {
      statusEl.setAttribute("data-state", state);
      statusText.textContent = state === "connected" ? "watching live"
        : state === "reconnecting" ? "reconnecting (attempt " + conn.attempt + ")\u2026"
        : state === "closed" ? "closed: " + reason
        : "connecting\u2026";
    },
    binary: function (bytes) { term.write(bytes); },
    control: function (msg) {
      if (msg.type === "ready") {
        term.write("", function () { term.reset(); }); // the screen is sent next
      } else if (msg.type === "resize") {
        // The owner resized: same columns and rows as the shell, then refit the font.
        const c = msg.cols | 0, r = msg.rows | 0;
        if (c >= 1 && c <= 1000 && r >= 1 && r <= 1000 && (c !== term.cols || r !== term.rows)) {
          term.write("", function () { term.resize(c, r); scale(); });
        }
      } else if (msg.type === "exit" || msg.type === "error") {
        conn.end(msg.message || msg.reason || "the session ended");
      }
    },
    closed: function () { /* the status line says why */ }
  }, { maxAttempts: MAX_ATTEMPTS, acks: false }); // a watcher's output is not flow-controlled
  onWake(function () { conn.wake(); });
  conn.connect();

  window.portalWatch = { term: term, conn: conn, text: function () { return bufferText(term); } };
}

trackViewport(); // a full-height terminal page like the terminal's own
const root = document.getElementById("watch-app");
if (root && window.Terminal) boot(root);
