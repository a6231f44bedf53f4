// Browser side of the terminal: xterm.js tabs bridged to the portal's WebSocket
// (DESIGN.md, "Terminal socket contract"), plus the small behaviours of the sessions list.
// No inline script anywhere (CSP): the page hands data over in data-* attributes.
(function () {
  "use strict";

  var STORE_FONT = "portal.term.fontSize";
  var STORE_THEME = "portal.term.theme";
  var STORE_KEYBAR = "portal.term.keybar";
  var STORE_TABS = "portal.term.tabs."; // + agent_id, in sessionStorage (per browser tab)
  var FONT_MIN = 8, FONT_MAX = 32;
  var ACK_BYTES = 64 * 1024, ACK_DELAY = 50;
  var PING_EVERY = 25000, PROBE_TIMEOUT = 4000;
  var BACKOFF_MAX = 10000, MAX_ATTEMPTS = 20; // 0.5+1+2+4+8+10*15 s: outlives the server's grace period
  var RESIZE_DELAY = 100;

  var THEMES = {
    dark: {
      background: "#0b1120", foreground: "#e2e8f0", cursor: "#22c55e", cursorAccent: "#0b1120",
      selectionBackground: "rgba(96,165,250,.35)",
      scrollbarSliderBackground: "rgba(148,163,184,.16)", scrollbarSliderHoverBackground: "rgba(148,163,184,.3)",
      scrollbarSliderActiveBackground: "rgba(148,163,184,.45)",
      black: "#1e293b", red: "#f87171", green: "#4ade80", yellow: "#facc15", blue: "#60a5fa",
      magenta: "#c084fc", cyan: "#22d3ee", white: "#cbd5e1",
      brightBlack: "#64748b", brightRed: "#fca5a5", brightGreen: "#86efac", brightYellow: "#fde047",
      brightBlue: "#93c5fd", brightMagenta: "#d8b4fe", brightCyan: "#67e8f9", brightWhite: "#f8fafc"
    },
    light: {
      background: "#fbfcfd", foreground: "#1e293b", cursor: "#2563eb", cursorAccent: "#fbfcfd",
      selectionBackground: "rgba(37,99,235,.22)",
      scrollbarSliderBackground: "rgba(71,85,105,.14)", scrollbarSliderHoverBackground: "rgba(71,85,105,.28)",
      scrollbarSliderActiveBackground: "rgba(71,85,105,.42)",
      black: "#1e293b", red: "#b91c1c", green: "#15803d", yellow: "#a16207", blue: "#1d4ed8",
      magenta: "#7e22ce", cyan: "#0e7490", white: "#94a3b8",
      brightBlack: "#475569", brightRed: "#dc2626", brightGreen: "#16a34a", brightYellow: "#ca8a04",
      brightBlue: "#2563eb", brightMagenta: "#9333ea", brightCyan: "#0891b2", brightWhite: "#cbd5e1"
    }
  };

  window.portalTermThemes = THEMES; // shared with the watch page and the recording player

  var encoder = new TextEncoder();

  // ------------------------------------------------------------------ small helpers

  function store(kind, key, value) {
    try {
      var s = kind === "session" ? window.sessionStorage : window.localStorage;
      if (value === undefined) return s.getItem(key);
      if (value === null) s.removeItem(key); else s.setItem(key, value);
    } catch (e) { /* storage disabled (private mode): settings just do not persist */ }
    return null;
  }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  // Control character for a key typed after the sticky Ctrl (xterm's conventions).
  function ctrlChar(ch) {
    if (ch.length !== 1) return ch;
    var c = ch.charCodeAt(0);
    if (c >= 97 && c <= 122) return String.fromCharCode(c - 96); // a-z
    if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);  // @ A-Z [ \ ] ^ _
    if (ch === "?" || ch === "8") return "\x7f";
    if (ch === " " || ch === "2") return "\x00";
    if (c >= 51 && c <= 55) return String.fromCharCode(c - 24);  // 3-7 -> ESC .. US
    if (ch === "/" || ch === "-") return "\x1f";
    return ch;
  }

  // Always this page's origin (the session cookie authenticates the socket); the server may
  // hand over a path or a full ws:// URL (url_for of a WebSocket route).
  function wsUrl(path, params) {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    if (/^wss?:\/\//i.test(path)) {
      try { var u = new URL(path); path = u.pathname + u.search; } catch (e) { /* keep as is */ }
    }
    if (path.indexOf("?") >= 0) {
      var extra = path.slice(path.indexOf("?") + 1);
      path = path.slice(0, path.indexOf("?"));
      extra.split("&").forEach(function (kv) {
        if (!kv) return;
        var i = kv.indexOf("=");
        var k = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
        if (!(k in params)) params[k] = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1));
      });
    }
    var q = Object.keys(params).filter(function (k) { return params[k] !== null && params[k] !== undefined && params[k] !== ""; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); }).join("&");
    return proto + "//" + location.host + path + (q ? "?" + q : "");
  }

  function loadAddons(term) {
    var fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    var search = null;
    try { term.loadAddon(new window.WebLinksAddon.WebLinksAddon()); } catch (e) { /* optional */ }
    try { search = new window.SearchAddon.SearchAddon(); term.loadAddon(search); } catch (e) { search = null; }
    try {
      term.loadAddon(new window.Unicode11Addon.Unicode11Addon());
      term.unicode.activeVersion = "11";
    } catch (e) { /* optional */ }
    return { fit: fit, search: search };
  }

  // WebGL helps under floods on desktops; phones keep the DOM renderer (mobile GPUs lose
  // contexts in the background and a small screen renders fast enough without it).
  function loadWebgl(term) {
    var pref = store("local", "portal.term.renderer");
    if (pref === "dom") return;
    if (pref !== "webgl" && (window.matchMedia("(pointer: coarse)").matches || window.innerWidth <= 640)) return;
    try {
      var webgl = new window.WebglAddon.WebglAddon();
      webgl.onContextLoss(function () { webgl.dispose(); });
      term.loadAddon(webgl);
    } catch (e) { /* no WebGL2: the DOM renderer stays */ }
  }

  // ------------------------------------------------------------------ one tab = one socket

  var tabSeq = 0;

  function Tab(app, spec) {
    this.app = app;
    this.uid = ++tabSeq;
    this.agentId = spec.agent;
    this.name = spec.name || spec.agent;
    this.wsPath = spec.ws;
    this.sessionId = spec.session || null;
    this.restored = !!spec.restored; // re-attaching from sessionStorage: fall back to a new shell if gone
    this.everReady = false;
    this.ws = null;
    this.gen = 0;
    this.state = "idle";
    this.reason = "";
    this.attempt = 0;
    this.ended = false;
    this.closing = false;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.probeTimer = null;
    this.ackTimer = null;
    this.unacked = 0;
    this.lastRx = 0;
    this.lastPing = 0;
    this.bytesIn = 0;
    this.connects = 0;
    this.sentSize = null;
    this.build();
  }

  Tab.prototype.build = function () {
    var self = this, app = this.app;
    // tab button
    this.tabEl = el("div", "term-tab");
    this.tabEl.setAttribute("data-tab", String(this.uid));
    this.tabBtn = el("button", "term-tab-main");
    this.tabBtn.type = "button";
    this.tabBtn.setAttribute("role", "tab");
    this.tabBtn.id = "term-tab-" + this.uid;
    this.tabBtn.setAttribute("aria-controls", "term-pane-" + this.uid);
    this.dotEl = el("span", "term-dot");
    this.dotEl.setAttribute("aria-hidden", "true");
    this.labelEl = el("span", "term-tab-label", this.name);
    this.tabBtn.appendChild(this.dotEl);
    this.tabBtn.appendChild(this.labelEl);
    this.closeBtn = el("button", "term-tab-close", "\u00d7");
    this.closeBtn.type = "button";
    this.closeBtn.title = "Close this terminal (ends its shell)";
    this.closeBtn.setAttribute("aria-label", "Close terminal " + this.name);
    this.tabEl.appendChild(this.tabBtn);
    this.tabEl.appendChild(this.closeBtn);
    this.tabBtn.addEventListener("click", function () { app.activate(self); });
    this.closeBtn.addEventListener("click", function () { app.closeTab(self); });

    // pane with the terminal and an overlay for ended sessions
    this.pane = el("div", "term-pane");
    this.pane.id = "term-pane-" + this.uid;
    this.pane.setAttribute("role", "tabpanel");
    this.pane.setAttribute("aria-labelledby", this.tabBtn.id);
    this.pane.hidden = true;
    this.host = el("div", "term-host");
    this.pane.appendChild(this.host);
    this.overlay = el("div", "term-ended");
    this.overlay.hidden = true;
    var card = el("div", "term-ended-card");
    this.overlayMsg = el("p", "term-ended-msg");
    var again = el("button", "btn primary", "New session");
    again.type = "button";
    again.setAttribute("data-action", "new-session");
    again.addEventListener("click", function () { self.restart(); });
    card.appendChild(this.overlayMsg);
    card.appendChild(again);
    this.overlay.appendChild(card);
    this.pane.appendChild(this.overlay);

    var term = new window.Terminal({
      allowProposedApi: true,
      cursorBlink: true,
      fontFamily: '"DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace',
      fontSize: app.fontSize,
      lineHeight: 1.12,
      scrollback: 5000,
      macOptionIsMeta: true,
      rightClickSelectsWord: false,
      theme: THEMES[app.theme]
    });
    this.term = term;
    var addons = loadAddons(term);
    this.fitAddon = addons.fit;
    this.search = addons.search;

    term.onData(function (data) { self.send(app.applyModifiers(data)); });
    term.onBinary(function (data) {
      var bytes = new Uint8Array(data.length);
      for (var i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      self.sendBytes(bytes);
    });
    term.onResize(debounce(function () { self.sendResize(); }, RESIZE_DELAY));
    term.onTitleChange(function (title) { if (title) self.tabBtn.title = title; });
    term.attachCustomKeyEventHandler(function (e) { return app.keyHandler(self, e); });
    this.host.addEventListener("contextmenu", function (e) { app.contextMenu(self, e); });
  };

  Tab.prototype.mount = function () {
    this.term.open(this.host);
    loadWebgl(this.term);
    var self = this;
    var refit = debounce(function () { self.fit(); }, 60);
    if (window.ResizeObserver) {
      this.ro = new ResizeObserver(refit);
      this.ro.observe(this.pane);
    }
  };

  Tab.prototype.fit = function () {
    if (this.pane.hidden || !this.pane.offsetWidth || !this.pane.offsetHeight) return;
    try { this.fitAddon.fit(); } catch (e) { /* not measurable yet */ }
  };

  Tab.prototype.setState = function (state, detail) {
    this.state = state;
    this.reason = detail || "";
    this.tabEl.setAttribute("data-state", state);
    this.pane.setAttribute("data-state", state);
    this.app.renderStatus(this);
  };

  Tab.prototype.statusText = function () {
    switch (this.state) {
      case "connecting": return "connecting\u2026";
      case "connected": return "connected";
      case "reconnecting":
        return "reconnecting (attempt " + this.attempt + ")" + (navigator.onLine === false ? " \u00b7 offline" : "") + "\u2026";
      case "closed": return "closed: " + (this.reason || "connection ended");
      default: return this.state;
    }
  };

  Tab.prototype.connect = function () {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.closing) return;
    if (this.ws) this.quietClose(); // never leave a socket behind
    this.ended = false;
    this.overlay.hidden = true;
    this.setState(this.attempt > 0 ? "reconnecting" : "connecting");
    this.fit();
    var dims = { cols: this.term.cols, rows: this.term.rows };
    var ws;
    try {
      ws = new WebSocket(wsUrl(this.wsPath, { cols: dims.cols, rows: dims.rows, session: this.sessionId }));
    } catch (e) {
      this.fail("cannot open a WebSocket: " + e.message);
      return;
    }
    ws.binaryType = "arraybuffer";
    var gen = ++this.gen;
    this.connects += 1;
    this.ws = ws;
    this.unacked = 0;
    this.sentSize = dims.cols + "x" + dims.rows;
    var self = this;
    this.opened = false;
    ws.onopen = function () { if (ws === self.ws) { self.opened = true; self.lastRx = Date.now(); } };
    ws.onmessage = function (ev) { if (ws === self.ws) self.onMessage(ev, gen); };
    ws.onclose = function (ev) { if (ws === self.ws) self.onDrop(ev); };
    ws.onerror = function () { /* onclose follows with the details */ };
  };

  Tab.prototype.onMessage = function (ev, gen) {
    this.lastRx = Date.now();
    if (typeof ev.data !== "string") {
      var bytes = new Uint8Array(ev.data);
      var n = bytes.length, self = this;
      this.bytesIn += n;
      this.term.write(bytes, function () { self.ack(n, gen); });
      return;
    }
    var msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "ready": this.onReady(msg); break;
      case "exit": this.onEnd("exit", msg.reason || ("exit code " + (msg.code === undefined || msg.code === null ? "?" : msg.code)), msg); break;
      case "error": this.onEnd("error", msg.message || msg.error || "error", msg); break;
      case "pong": break;
      default: break; // unknown control frames are ignored (forward compatible)
    }
  };

  Tab.prototype.onReady = function (msg) {
    var term = this.term, self = this;
    if (msg.session_id) this.sessionId = String(msg.session_id);
    if (msg.resumed) {
      // The server replays its ring buffer next: start from a clean screen, in stream order,
      // so output still queued from the old socket cannot land after the reset.
      term.write("", function () { term.reset(); });
    }
    this.everReady = true;
    this.restored = false;
    this.attempt = 0;
    this.setState("connected");
    this.app.saveTabs();
    this.sendResize(true);
    this.startPing();
    if (this === this.app.active && !this.app.touchLike) term.focus();
    void self;
  };

  Tab.prototype.onEnd = function (kind, reason, msg) {
    // A re-attach after a reload found its session gone: start a fresh shell instead.
    if (kind === "error" && this.restored && !this.everReady) {
      this.restored = false;
      this.sessionId = null;
      this.attempt = 0;
      this.quietClose();
      this.term.write("\x1b[2m(previous session is gone: " + reason + "; starting a new one)\x1b[0m\r\n");
      this.connect();
      return;
    }
    this.ended = true;
    this.endKind = kind;
    this.endInfo = msg;
    this.quietClose();
    this.fail(reason);
  };

  Tab.prototype.fail = function (reason) {
    this.stopTimers();
    this.sessionId = null;
    this.ended = true;
    this.term.write("\x1b[?25l"); // no blinking cursor in a dead terminal (a new session resets it)
    this.overlayMsg.textContent = "Session closed: " + reason;
    this.overlay.hidden = false;
    this.setState("closed", reason);
    this.app.saveTabs();
  };

  Tab.prototype.onDrop = function (ev) {
    this.ws = null;
    this.stopTimers();
    if (this.closing || this.ended) return;
    // Handshake refused for a remembered session a few times: it is not coming back.
    if (!this.everReady && this.restored && this.attempt >= 2) {
      this.restored = false;
      this.sessionId = null;
      this.attempt = 0;
    }
    // Refused before the upgrade three times running: a signed-out browser looks just like a
    // network problem from here, so ask the API once instead of retrying for minutes.
    if (!this.opened && this.attempt >= 2 && navigator.onLine !== false) {
      var self = this;
      fetch("/api/profile", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (resp) {
          if (self.closing || self.ended || self.ws) return;
          if (resp.status === 401) self.fail("you are signed out: reload the page to sign in again");
          else if (!self.reconnectTimer) self.scheduleReconnect();
        }, function () { if (!self.closing && !self.ended && !self.ws && !self.reconnectTimer) self.scheduleReconnect(); });
      this.setState("reconnecting");
      return;
    }
    this.scheduleReconnect(ev && ev.code);
  };

  Tab.prototype.scheduleReconnect = function () {
    this.attempt += 1;
    if (this.attempt > MAX_ATTEMPTS) {
      this.fail(this.everReady ? "connection lost" : "could not connect");
      return;
    }
    var delay = Math.min(500 * Math.pow(2, this.attempt - 1), BACKOFF_MAX);
    this.setState("reconnecting");
    var self = this;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(function () {
      if (navigator.onLine === false) { self.reconnectTimer = null; self.setState("reconnecting"); return; } // "online" resumes it
      self.connect();
    }, delay);
  };

  // The page came back (visible, restored from bfcache, network back): reconnect now, or
  // check that a socket which looks open is still alive (phones kill idle sockets silently).
  Tab.prototype.wake = function () {
    if (this.closing || this.ended) return;
    var ws = this.ws;
    if (!ws) { if (this.state === "reconnecting") this.connect(); return; } // waiting out a backoff
    if (ws.readyState !== WebSocket.OPEN) return; // an attempt is under way
    var sent = Date.now(), self = this;
    this.sendJSON({ type: "ping" });
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(function () {
      if (ws === self.ws && self.lastRx < sent) self.forceDrop();
    }, PROBE_TIMEOUT);
  };

  Tab.prototype.forceDrop = function () {
    var ws = this.ws;
    this.ws = null;
    if (ws) { try { ws.close(); } catch (e) { /* already gone */ } }
    this.onDrop({ code: 4000 });
  };

  Tab.prototype.startPing = function () {
    var self = this;
    clearInterval(this.pingTimer);
    this.lastPing = 0;
    this.pingTimer = setInterval(function () {
      if (!self.ws || self.ws.readyState !== WebSocket.OPEN) return;
      if (self.lastPing && self.lastRx < self.lastPing) { self.forceDrop(); return; } // no pong for a whole period
      self.lastPing = Date.now();
      self.sendJSON({ type: "ping" });
    }, PING_EVERY);
  };

  Tab.prototype.stopTimers = function () {
    clearInterval(this.pingTimer); this.pingTimer = null;
    clearTimeout(this.probeTimer); this.probeTimer = null;
    clearTimeout(this.ackTimer); this.ackTimer = null;
    clearTimeout(this.reconnectTimer); this.reconnectTimer = null;
  };

  Tab.prototype.quietClose = function () {
    var ws = this.ws;
    this.ws = null;
    this.gen++;
    if (ws) { try { ws.close(1000); } catch (e) { /* ignore */ } }
  };

  // Flow control: ack what xterm has actually rendered, batched.
  Tab.prototype.ack = function (n, gen) {
    if (gen !== this.gen) return; // rendered bytes of an old socket mean nothing to the new one
    this.unacked += n;
    if (this.unacked >= ACK_BYTES) { this.flushAck(); return; }
    if (!this.ackTimer) {
      var self = this;
      this.ackTimer = setTimeout(function () { self.flushAck(); }, ACK_DELAY);
    }
  };

  Tab.prototype.flushAck = function () {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.unacked > 0 && this.sendJSON({ type: "ack", bytes: this.unacked })) this.unacked = 0;
  };

  Tab.prototype.isOpen = function () { return !!this.ws && this.ws.readyState === WebSocket.OPEN; };

  Tab.prototype.sendJSON = function (obj) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  };

  Tab.prototype.sendBytes = function (bytes) {
    if (!this.isOpen() || this.state !== "connected") return false;
    this.ws.send(bytes);
    return true;
  };

  Tab.prototype.send = function (text) {
    if (!text) return false;
    return this.sendBytes(encoder.encode(text));
  };

  Tab.prototype.sendResize = function (force) {
    var size = this.term.cols + "x" + this.term.rows;
    if (!force && size === this.sentSize) return;
    if (this.sendJSON({ type: "resize", cols: this.term.cols, rows: this.term.rows })) this.sentSize = size;
    this.app.renderStatus(this);
  };

  Tab.prototype.restart = function () {
    this.quietClose();
    this.stopTimers();
    this.sessionId = null;
    this.restored = false;
    this.everReady = false;
    this.attempt = 0;
    this.term.reset();
    this.connect();
    this.term.focus();
  };

  Tab.prototype.destroy = function () {
    this.closing = true;
    this.stopTimers();
    this.quietClose();
    if (this.ro) this.ro.disconnect();
    this.term.dispose();
    this.tabEl.remove();
    this.pane.remove();
  };

  // ------------------------------------------------------------------ the page: tabs, controls, key bar

  function App(root) {
    this.root = root;
    this.agentId = root.getAttribute("data-agent-id");
    this.machineName = root.getAttribute("data-machine-name") || this.agentId;
    this.wsPath = root.getAttribute("data-ws-path");
    this.closeUrl = root.getAttribute("data-close-url") || "/api/terminal/sessions/";
    this.tabs = [];
    this.active = null;
    this.mods = { ctrl: false, alt: false };
    this.touchLike = window.matchMedia("(pointer: coarse)").matches;
    var storedFont = parseInt(store("local", STORE_FONT), 10);
    var narrow = window.matchMedia("(max-width: 640px)").matches;
    this.fontSize = storedFont >= FONT_MIN && storedFont <= FONT_MAX ? storedFont : (narrow ? 13 : 15);
    var storedTheme = store("local", STORE_THEME);
    this.theme = THEMES[storedTheme] ? storedTheme
      : (window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");

    this.tabList = root.querySelector("[data-role=tabs]");
    this.addBtn = root.querySelector("[data-action=new-tab]");
    this.panes = root.querySelector("[data-role=panes]");
    this.statusEl = root.querySelector("[data-role=status]");
    this.statusText = root.querySelector("[data-role=status-text]");
    this.statusSize = root.querySelector("[data-role=status-size]");
    this.statusNew = root.querySelector("[data-action=status-new]");
    this.fontEl = root.querySelector("[data-role=font-size]");
    this.keybar = root.querySelector("[data-role=keybar]");
    this.emptyEl = root.querySelector("[data-role=empty]");
    this.searchBox = root.querySelector("[data-role=search]");
    this.searchInput = root.querySelector("[data-role=search-input]");
    this.bindControls();
    this.applyTheme();
    this.renderFont();
    this.initKeybar();
    this.restoreTabs();
  }

  App.prototype.bindControls = function () {
    var self = this;
    this.addBtn.addEventListener("click", function () { self.newTab({}); });
    this.root.addEventListener("click", function (e) {
      var btn = e.target.closest("[data-action]");
      if (!btn || !self.root.contains(btn)) return;
      switch (btn.getAttribute("data-action")) {
        case "font-dec": self.setFont(self.fontSize - 1); break;
        case "font-inc": self.setFont(self.fontSize + 1); break;
        case "theme": self.setTheme(self.theme === "dark" ? "light" : "dark"); break;
        case "keybar": self.setKeybar(self.keybar.hidden); break;
        case "search": self.toggleSearch(); break;
        case "status-new": if (self.active) self.active.restart(); else self.newTab({}); break;
        case "empty-new": self.newTab({}); break;
        case "pick-machine": self.toggleMenu(); return;
        default: return;
      }
      // Back to typing after a toolbar click (not on phones: that would pop the keyboard up).
      var act = btn.getAttribute("data-action");
      if (act !== "search" && self.active && !self.touchLike) self.active.term.focus();
    });
    if (this.searchInput) {
      this.searchInput.addEventListener("keydown", function (e) {
        var tab = self.active;
        if (e.key === "Escape") { e.preventDefault(); self.toggleSearch(false); return; }
        if (e.key === "Enter" && tab && tab.search) {
          e.preventDefault();
          var opts = { caseSensitive: false, decorations: { matchOverviewRuler: "#facc15", activeMatchColorOverviewRuler: "#f97316", matchBackground: "#854d0e", activeMatchBackground: "#f97316" } };
          if (e.shiftKey) tab.search.findPrevious(self.searchInput.value, opts);
          else tab.search.findNext(self.searchInput.value, opts);
        }
      });
    }
    document.addEventListener("click", function (e) {
      var menu = self.root.querySelector("[data-role=machine-menu]");
      if (menu && !menu.hidden && !e.target.closest("[data-role=machine-menu], [data-action=pick-machine]")) self.toggleMenu(false);
    });
    this.root.addEventListener("keydown", function (e) {
      var menu = e.target.closest && e.target.closest("[data-role=machine-menu]");
      if (!menu) return;
      var items = Array.prototype.slice.call(menu.querySelectorAll("button"));
      var i = items.indexOf(e.target);
      if (e.key === "Escape") { e.preventDefault(); self.toggleMenu(false); self.root.querySelector("[data-action=pick-machine]").focus(); }
      else if (e.key === "ArrowDown" && items.length) { e.preventDefault(); items[(i + 1) % items.length].focus(); }
      else if (e.key === "ArrowUp" && items.length) { e.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
    });
    // Coming back from the background: phones drop sockets while locked.
    document.addEventListener("visibilitychange", function () { if (document.visibilityState === "visible") self.wakeAll(); });
    window.addEventListener("pageshow", function (e) { if (e.persisted) self.wakeAll(); });
    window.addEventListener("online", function () { self.wakeAll(); });
    window.addEventListener("offline", function () { if (self.active) self.renderStatus(self.active); });
  };

  App.prototype.wakeAll = function () {
    this.tabs.forEach(function (t) { t.wake(); });
    if (this.active) this.active.fit();
  };

  // ---- another machine in a new tab

  App.prototype.wsPathFor = function (agentId) {
    var mine = "/" + encodeURIComponent(this.agentId) + "/";
    return this.wsPath.replace(mine, "/" + encodeURIComponent(agentId) + "/");
  };

  App.prototype.toggleMenu = function (show) {
    var menu = this.root.querySelector("[data-role=machine-menu]");
    var btn = this.root.querySelector("[data-action=pick-machine]");
    if (!menu || !btn) return;
    if (show === undefined) show = menu.hidden;
    menu.hidden = !show;
    btn.setAttribute("aria-expanded", show ? "true" : "false");
    if (!show) return;
    var r = btn.getBoundingClientRect(), host = this.root.getBoundingClientRect();
    menu.style.left = Math.max(4, Math.min(r.left - host.left, host.width - 264)) + "px";
    menu.style.top = (r.bottom - host.top + 2) + "px";
    if (this.machinesLoaded) { this.focusMenu(menu); return; }
    var self = this;
    menu.textContent = "";
    menu.appendChild(el("p", "term-menu-note", "Loading machines\u2026"));
    fetch(this.root.getAttribute("data-machines-url") || "/api/machines?limit=200", {
      credentials: "same-origin", headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() }
    }).then(function (resp) {
      if (!resp.ok) throw new Error("the server answered " + resp.status);
      return resp.json();
    }).then(function (data) {
      self.machinesLoaded = true;
      self.renderMenu(menu, (data.machines || []).filter(function (m) {
        return m.my_role === "operator" || m.my_role === "admin";
      }));
      self.focusMenu(menu);
    }, function (err) {
      menu.textContent = "";
      menu.appendChild(el("p", "term-menu-note", "Could not list machines: " + err.message));
    });
  };

  App.prototype.renderMenu = function (menu, machines) {
    var self = this;
    menu.textContent = "";
    if (!machines.length) { menu.appendChild(el("p", "term-menu-note", "No machine you may open a terminal on.")); return; }
    menu.appendChild(el("p", "term-menu-title", "New terminal on"));
    machines.forEach(function (m) {
      var item = el("button", "term-menu-item");
      item.type = "button";
      item.setAttribute("role", "menuitem");
      item.setAttribute("data-agent-id", m.agent_id);
      item.appendChild(el("span", "term-menu-name", m.name));
      item.appendChild(el("span", "term-menu-host", (m.username ? m.username + "@" : "") + (m.host || "")));
      item.addEventListener("click", function () {
        self.toggleMenu(false);
        self.newTab({ agent: m.agent_id, name: m.name, ws: self.wsPathFor(m.agent_id) });
      });
      menu.appendChild(item);
    });
  };

  App.prototype.focusMenu = function (menu) {
    var first = menu.querySelector("button");
    if (first) first.focus();
  };

  // ---- tabs

  App.prototype.storageKey = function () { return STORE_TABS + this.agentId; };

  App.prototype.saveTabs = function () {
    var list = this.tabs.filter(function (t) { return t.sessionId && !t.ended; }).map(function (t) {
      return { agent: t.agentId, name: t.name, ws: t.wsPath, session: t.sessionId };
    });
    store("session", this.storageKey(), list.length ? JSON.stringify(list) : null);
  };

  App.prototype.restoreTabs = function () {
    var list = [];
    try { list = JSON.parse(store("session", this.storageKey()) || "[]") || []; } catch (e) { list = []; }
    list = list.filter(function (s) { return s && typeof s.session === "string" && typeof s.ws === "string"; });
    var wanted = this.root.getAttribute("data-session-id");
    var activeIndex = 0;
    if (wanted) {
      var at = list.findIndex(function (s) { return s.session === wanted; });
      if (at < 0) { list.unshift({ agent: this.agentId, name: this.machineName, ws: this.wsPath, session: wanted, explicit: true }); at = 0; }
      activeIndex = at;
      // The link did its job; a later reload re-attaches from sessionStorage instead.
      try {
        var url = new URL(location.href);
        url.searchParams.delete("session");
        history.replaceState(history.state, "", url.pathname + url.search + url.hash);
      } catch (e) { /* old browser */ }
    }
    if (!list.length) { this.newTab({}); return; }
    var self = this, tabs = [];
    list.forEach(function (s) {
      tabs.push(self.newTab({ agent: s.agent, name: s.name, ws: s.ws, session: s.session, restored: !s.explicit }, true));
    });
    this.activate(tabs[activeIndex] || tabs[0]);
  };

  App.prototype.newTab = function (spec, background) {
    var tab = new Tab(this, {
      agent: spec.agent || this.agentId,
      name: spec.name || this.machineName,
      ws: spec.ws || this.wsPath,
      session: spec.session || null,
      restored: spec.restored
    });
    this.tabs.push(tab);
    this.tabList.insertBefore(tab.tabEl, this.addBtn);
    tab.tabEl.title = tab.agentId === this.agentId ? "" : tab.name;
    this.panes.appendChild(tab.pane);
    this.renumber();
    // Open xterm on a laid-out (if invisible) pane: it measures its cells when it opens.
    tab.pane.hidden = false;
    tab.pane.style.visibility = "hidden";
    tab.mount();
    tab.fit();
    tab.pane.style.visibility = "";
    if (!background || !this.active) this.activate(tab);
    else tab.pane.hidden = true;
    tab.connect();
    this.emptyEl.hidden = true;
    return tab;
  };

  App.prototype.renumber = function () {
    var counts = {};
    this.tabs.forEach(function (t) { counts[t.name] = (counts[t.name] || 0) + 1; });
    var seen = {};
    this.tabs.forEach(function (t) {
      seen[t.name] = (seen[t.name] || 0) + 1;
      t.labelEl.textContent = counts[t.name] > 1 ? t.name + " " + seen[t.name] : t.name;
    });
  };

  App.prototype.activate = function (tab) {
    var self = this;
    this.active = tab;
    this.tabs.forEach(function (t) {
      var on = t === tab;
      t.pane.hidden = !on;
      t.tabEl.classList.toggle("active", on);
      t.tabBtn.setAttribute("aria-selected", on ? "true" : "false");
      t.tabBtn.tabIndex = on ? 0 : -1;
    });
    if (!tab) return;
    tab.fit();
    if (!this.touchLike) tab.term.focus();
    requestAnimationFrame(function () { if (self.active === tab) tab.fit(); });
    this.renderStatus(tab);
    tab.tabEl.scrollIntoView({ block: "nearest", inline: "nearest" });
  };

  App.prototype.closeTab = function (tab) {
    var i = this.tabs.indexOf(tab);
    if (i < 0) return;
    var sid = tab.ended ? null : tab.sessionId;
    tab.destroy();
    this.tabs.splice(i, 1);
    // Closing the tab ends its shell (a dropped socket would only detach it for the grace period).
    if (sid) {
      fetch(this.closeUrl + encodeURIComponent(sid), {
        method: "DELETE", credentials: "same-origin", keepalive: true,
        headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
      }).catch(function () { /* best effort: the grace period ends it anyway */ });
    }
    this.saveTabs();
    this.renumber();
    if (this.active === tab) this.activate(this.tabs[Math.min(i, this.tabs.length - 1)] || null);
    if (!this.tabs.length) {
      this.emptyEl.hidden = false;
      this.renderStatus(null);
    }
  };

  // ---- status line

  App.prototype.renderStatus = function (tab) {
    if (tab && tab !== this.active) return;
    if (!tab) {
      this.statusEl.setAttribute("data-state", "closed");
      this.statusText.textContent = "no terminal open";
      this.statusSize.textContent = "";
      this.statusNew.hidden = true;
      return;
    }
    this.statusEl.setAttribute("data-state", tab.state);
    this.statusText.textContent = tab.statusText();
    this.statusSize.textContent = tab.term.cols + "\u00d7" + tab.term.rows;
    this.statusNew.hidden = tab.state !== "closed";
  };

  // ---- font size and theme

  App.prototype.setFont = function (size) {
    size = Math.max(FONT_MIN, Math.min(FONT_MAX, size));
    if (size === this.fontSize) return;
    this.fontSize = size;
    store("local", STORE_FONT, String(size));
    this.tabs.forEach(function (t) { t.term.options.fontSize = size; t.fit(); });
    this.renderFont();
    if (this.active) this.renderStatus(this.active);
  };

  App.prototype.renderFont = function () {
    if (this.fontEl) this.fontEl.textContent = this.fontSize + "px";
    var dec = this.root.querySelector("[data-action=font-dec]");
    var inc = this.root.querySelector("[data-action=font-inc]");
    if (dec) dec.disabled = this.fontSize <= FONT_MIN;
    if (inc) inc.disabled = this.fontSize >= FONT_MAX;
  };

  App.prototype.setTheme = function (name) {
    if (!THEMES[name]) return;
    this.theme = name;
    store("local", STORE_THEME, name);
    this.applyTheme();
  };

  App.prototype.applyTheme = function () {
    var theme = THEMES[this.theme];
    this.root.setAttribute("data-term-theme", this.theme);
    this.tabs.forEach(function (t) { t.term.options.theme = theme; });
    var btn = this.root.querySelector("[data-action=theme]");
    if (btn) {
      var next = this.theme === "dark" ? "light" : "dark";
      btn.setAttribute("aria-label", "Switch to the " + next + " theme");
      btn.title = "Switch to the " + next + " theme";
      btn.setAttribute("aria-pressed", this.theme === "light" ? "true" : "false");
    }
  };

  App.prototype.toggleSearch = function (show) {
    if (!this.searchBox) return;
    if (show === undefined) show = this.searchBox.hidden;
    this.searchBox.hidden = !show;
    if (show) { this.searchInput.focus(); this.searchInput.select(); }
    else {
      if (this.active && this.active.search) this.active.search.clearDecorations();
      if (this.active) this.active.term.focus();
    }
  };

  // ---- keyboard: copy/paste shortcuts, sticky modifiers, key bar

  App.prototype.keyHandler = function (tab, e) {
    if (e.type !== "keydown") return true;
    var key = (e.key || "").toLowerCase();
    var accel = e.ctrlKey || e.metaKey;
    if (accel && e.shiftKey && key === "c") {
      e.preventDefault();
      this.copy(tab);
      return false;
    }
    if (e.metaKey && !e.ctrlKey && key === "c" && tab.term.hasSelection()) {
      this.copy(tab);
      return false;
    }
    // Ctrl+Shift+V / Cmd+V: let the browser fire its paste event; xterm pastes it (bracketed).
    if ((accel && e.shiftKey && key === "v") || (e.metaKey && !e.ctrlKey && key === "v")) return false;
    if (accel && e.shiftKey && key === "f") {
      e.preventDefault();
      this.toggleSearch(true);
      return false;
    }
    return true;
  };

  App.prototype.copy = function (tab) {
    var text = tab.term.getSelection();
    if (!text) return;
    var self = this;
    var done = function () { self.flashStatus("copied " + text.length + " characters"); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { self.legacyCopy(text); done(); });
    } else {
      this.legacyCopy(text);
      done();
    }
  };

  App.prototype.legacyCopy = function (text) {
    var ta = el("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    ta.remove();
    if (this.active) this.active.term.focus();
  };

  // Right click: copy the selection if there is one, else paste (where the clipboard API allows).
  App.prototype.contextMenu = function (tab, e) {
    if (tab.term.hasSelection()) {
      e.preventDefault();
      this.copy(tab);
      tab.term.clearSelection();
      return;
    }
    if (!navigator.clipboard || !navigator.clipboard.readText) return; // native menu
    e.preventDefault();
    var self = this;
    navigator.clipboard.readText().then(function (text) {
      if (text) tab.term.paste(text);
      tab.term.focus();
    }, function () {
      self.flashStatus("paste with Ctrl+Shift+V (clipboard access was refused)");
    });
  };

  App.prototype.flashStatus = function (text) {
    var tab = this.active, self = this;
    if (!tab) return;
    this.statusText.textContent = text;
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(function () { self.renderStatus(self.active); }, 1800);
  };

  App.prototype.applyModifiers = function (data) {
    if (!this.mods.ctrl && !this.mods.alt) return data;
    var out = data;
    if (this.mods.ctrl) out = ctrlChar(out);
    if (this.mods.alt) out = "\x1b" + out;
    this.setMods(false, false);
    return out;
  };

  App.prototype.setMods = function (ctrl, alt) {
    this.mods.ctrl = ctrl;
    this.mods.alt = alt;
    if (!this.keybar) return;
    this.keybar.querySelectorAll("[data-mod]").forEach(function (b) {
      var on = b.getAttribute("data-mod") === "ctrl" ? ctrl : alt;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  };

  App.prototype.keySequence = function (name) {
    var term = this.active && this.active.term;
    var appCursor = !!(term && term.modes && term.modes.applicationCursorKeysMode);
    var arrows = { up: "A", down: "B", right: "C", left: "D", home: "H", end: "F" };
    if (arrows[name]) {
      var mod = (this.mods.ctrl ? 4 : 0) + (this.mods.alt ? 2 : 0);
      this.setMods(false, false);
      if (mod) return "\x1b[1;" + (mod + 1) + arrows[name];
      return (appCursor ? "\x1bO" : "\x1b[") + arrows[name];
    }
    var fixed = { esc: "\x1b", tab: "\t", pgup: "\x1b[5~", pgdn: "\x1b[6~" };
    if (fixed[name] !== undefined) {
      var seq = fixed[name];
      if (this.mods.alt) seq = "\x1b" + seq;
      this.setMods(false, false);
      return seq;
    }
    return this.applyModifiers(name); // a literal character: | ~ / -
  };

  App.prototype.initKeybar = function () {
    if (!this.keybar) return;
    var self = this;
    var pref = store("local", STORE_KEYBAR);
    var auto = this.touchLike || window.matchMedia("(max-width: 640px)").matches;
    this.setKeybar(pref === "on" ? true : pref === "off" ? false : auto, true);
    // Keep the focus (and the phone's keyboard) in the terminal while tapping keys.
    this.keybar.addEventListener("pointerdown", function (e) { if (e.target.closest("button")) e.preventDefault(); });
    this.keybar.addEventListener("mousedown", function (e) { if (e.target.closest("button")) e.preventDefault(); });
    this.keybar.addEventListener("click", function (e) {
      var btn = e.target.closest("button");
      if (!btn) return;
      var tab = self.active;
      var mod = btn.getAttribute("data-mod");
      if (mod === "ctrl") self.setMods(!self.mods.ctrl, self.mods.alt);
      else if (mod === "alt") self.setMods(self.mods.ctrl, !self.mods.alt);
      else if (btn.hasAttribute("data-key") && tab) tab.send(self.keySequence(btn.getAttribute("data-key")));
      else if (btn.hasAttribute("data-char") && tab) tab.send(self.keySequence(btn.getAttribute("data-char")));
      if (tab) tab.term.focus();
    });
  };

  App.prototype.setKeybar = function (show, initial) {
    this.keybar.hidden = !show;
    this.root.classList.toggle("with-keybar", !!show);
    var btn = this.root.querySelector("[data-action=keybar]");
    if (btn) btn.setAttribute("aria-pressed", show ? "true" : "false");
    if (!initial) store("local", STORE_KEYBAR, show ? "on" : "off");
    if (this.active) this.active.fit();
  };

  // ------------------------------------------------------------------ sessions list (HTMX page)

  // After a close button's DELETE succeeds, refresh the polled table at once.
  document.addEventListener("htmx:afterRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    if (!elt || !elt.matches || !elt.matches("[data-refresh]") || !e.detail.successful) return;
    var target = document.querySelector(elt.getAttribute("data-refresh"));
    if (target && window.htmx) window.htmx.trigger(target, "refresh");
  });

  // ------------------------------------------------------------------ boot

  // Phones: keep the terminal and the key bar above the on-screen keyboard (the visual
  // viewport shrinks when it opens; 100dvh does not).
  function trackViewport() {
    var vv = window.visualViewport;
    if (!vv || !document.body.classList.contains("term-body")) return;
    var apply = function () {
      if (Math.abs(vv.scale - 1) > 0.01) { document.body.style.height = ""; return; } // pinch-zoomed
      document.body.style.height = Math.round(vv.height) + "px";
      if (window.scrollY) window.scrollTo(0, 0);
    };
    vv.addEventListener("resize", apply);
    apply();
  }

  function boot() {
    trackViewport();
    var root = document.getElementById("term-app");
    if (!root || !window.Terminal) return;
    var app = new App(root);
    // For tests and debugging: the live terminals of this page.
    window.portalTerminals = {
      app: app,
      get tabs() { return app.tabs; },
      active: function () { return app.active; },
      text: function (tab) {
        tab = tab || app.active;
        if (!tab) return "";
        var buf = tab.term.buffer.active, lines = [];
        for (var i = 0; i < buf.length; i++) {
          var line = buf.getLine(i);
          if (line) lines.push(line.translateToString(true));
        }
        return lines.join("\n");
      }
    };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
