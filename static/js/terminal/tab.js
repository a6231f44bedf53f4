// One terminal tab: an xterm.js instance in its pane, fitted to it, bridged to one socket.
// xterm.js and its addons are the vendored UMD builds (globals), loaded by classic scripts.
import { Connection, wsUrl } from "./connection.js";
import { THEMES } from "./themes.js";
import { debounce, el, store } from "./util.js";

const RESIZE_DELAY = 100;
const FONT_FAMILY = '"DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace';

const encoder = new TextEncoder();

function loadAddons(term) {
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  let search = null;
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
  const pref = store("local", "portal.term.renderer");
  if (pref === "dom") return;
  if (pref !== "webgl" && (window.matchMedia("(pointer: coarse)").matches || window.innerWidth <= 640)) return;
  try {
    const webgl = new window.WebglAddon.WebglAddon();
    webgl.onContextLoss(function () { webgl.dispose(); });
    term.loadAddon(webgl);
  } catch (e) { /* no WebGL2: the DOM renderer stays */ }
}

let tabSeq = 0;

export class Tab {
  // app: the page (font size, theme, focus rules, key handling, status line, tab strip).
  constructor(app, spec) {
    this.app = app;
    this.uid = ++tabSeq;
    this.agentId = spec.agent;
    this.name = spec.name || spec.agent;
    this.wsPath = spec.ws;
    this.sessionId = spec.session || null;
    this.restored = !!spec.restored; // re-attaching from sessionStorage: fall back to a new shell if gone
    this.bytesIn = 0;
    this.sentSize = null;
    this.conn = new Connection({
      url: () => this.socketUrl(),
      state: () => this.renderState(),
      binary: (bytes, done) => { this.bytesIn += bytes.length; this.term.write(bytes, done); },
      control: (msg) => this.onControl(msg),
      closed: (reason) => this.onClosed(reason),
      retrying: () => this.onRetry()
    });
    this.build();
  }

  // What the page and the tests read.
  get state() { return this.conn.state; }
  get reason() { return this.conn.reason; }
  get attempt() { return this.conn.attempt; }
  get connects() { return this.conn.connects; }
  get ended() { return this.conn.ended; }
  get everReady() { return this.conn.everReady; }

  build() {
    const app = this.app;
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
    this.tabBtn.addEventListener("click", () => app.activate(this));
    this.closeBtn.addEventListener("click", () => app.closeTab(this));

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
    const card = el("div", "term-ended-card");
    this.overlayMsg = el("p", "term-ended-msg");
    const again = el("button", "btn primary", "New session");
    again.type = "button";
    again.setAttribute("data-action", "new-session");
    again.addEventListener("click", () => this.restart());
    card.appendChild(this.overlayMsg);
    card.appendChild(again);
    this.overlay.appendChild(card);
    this.pane.appendChild(this.overlay);

    const term = new window.Terminal({
      allowProposedApi: true,
      cursorBlink: true,
      fontFamily: FONT_FAMILY,
      fontSize: app.fontSize,
      lineHeight: 1.12,
      scrollback: 5000,
      macOptionIsMeta: true,
      rightClickSelectsWord: false,
      theme: THEMES[app.theme]
    });
    this.term = term;
    const addons = loadAddons(term);
    this.fitAddon = addons.fit;
    this.search = addons.search;

    term.onData((data) => { this.send(app.applyModifiers(data)); });
    term.onBinary((data) => {
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      this.sendBytes(bytes);
    });
    term.onResize(debounce(() => { this.sendResize(); }, RESIZE_DELAY));
    term.onTitleChange((title) => { if (title) this.tabBtn.title = title; });
    term.attachCustomKeyEventHandler((e) => app.keyHandler(this, e));
    this.host.addEventListener("contextmenu", (e) => app.contextMenu(this, e));
  }

  mount() {
    this.term.open(this.host);
    loadWebgl(this.term);
    const refit = debounce(() => { this.fit(); }, 60);
    if (window.ResizeObserver) {
      this.ro = new ResizeObserver(refit);
      this.ro.observe(this.pane);
    }
  }

  fit() {
    if (this.pane.hidden || !this.pane.offsetWidth || !this.pane.offsetHeight) return;
    try { this.fitAddon.fit(); } catch (e) { /* not measurable yet */ }
  }

  renderState() {
    this.tabEl.setAttribute("data-state", this.state);
    this.pane.setAttribute("data-state", this.state);
    this.app.renderStatus(this);
  }

  statusText() {
    switch (this.state) {
      case "connecting": return "connecting\u2026";
      case "connected": return "connected";
      case "reconnecting":
        return "reconnecting (attempt " + this.attempt + ")" + (navigator.onLine === false ? " \u00b7 offline" : "") + "\u2026";
      case "closed": return "closed: " + (this.reason || "connection ended");
      default: return this.state;
    }
  }

  connect() { this.conn.connect(); }

  // Each attempt: the terminal's current size, and the session to re-attach to if any.
  socketUrl() {
    this.overlay.hidden = true;
    this.fit();
    const dims = { cols: this.term.cols, rows: this.term.rows };
    this.sentSize = dims.cols + "x" + dims.rows;
    return wsUrl(this.wsPath, { cols: dims.cols, rows: dims.rows, session: this.sessionId });
  }

  onControl(msg) {
    switch (msg.type) {
      case "ready": this.onReady(msg); break;
      case "exit": this.onEnd("exit", msg.reason || ("exit code " + (msg.code === undefined || msg.code === null ? "?" : msg.code)), msg); break;
      case "error": this.onEnd("error", msg.message || msg.error || "error", msg); break;
      default: break; // unknown control frames are ignored (forward compatible)
    }
  }

  onReady(msg) {
    const term = this.term;
    if (msg.session_id) this.sessionId = String(msg.session_id);
    if (msg.resumed) {
      // The server replays its ring buffer next: start from a clean screen, in stream order,
      // so output still queued from the old socket cannot land after the reset.
      term.write("", function () { term.reset(); });
    }
    this.restored = false;
    this.app.saveTabs();
    this.sendResize(true);
    // Typed once into a new shell (the files drawer's "open a terminal here": `cd -- '<path>'`).
    if (this.initialInput && !msg.resumed) { this.send(this.initialInput); this.initialInput = null; }
    if (this === this.app.active && !this.app.touchLike) term.focus();
  }

  onEnd(kind, reason, msg) {
    // A re-attach after a reload found its session gone: start a fresh shell instead.
    if (kind === "error" && this.restored && !this.everReady) {
      this.restored = false;
      this.sessionId = null;
      this.conn.attempt = 0;
      this.conn.quietClose();
      this.term.write("\x1b[2m(previous session is gone: " + reason + "; starting a new one)\x1b[0m\r\n");
      this.connect();
      return;
    }
    this.endKind = kind;
    this.endInfo = msg;
    this.conn.end(reason);
  }

  // The connection gave up or the session ended: show why, offer a new session.
  onClosed(reason) {
    this.sessionId = null;
    this.term.write("\x1b[?25l"); // no blinking cursor in a dead terminal (a new session resets it)
    this.overlayMsg.textContent = "Session closed: " + reason;
    this.overlay.hidden = false;
    this.app.saveTabs();
  }

  // Handshake refused for a remembered session a few times: it is not coming back.
  onRetry() {
    if (!this.everReady && this.restored && this.attempt >= 2) {
      this.restored = false;
      this.sessionId = null;
      this.conn.attempt = 0;
    }
  }

  wake() { this.conn.wake(); }

  sendBytes(bytes) { return this.conn.sendBytes(bytes); }

  send(text) {
    if (!text) return false;
    return this.sendBytes(encoder.encode(text));
  }

  sendResize(force) {
    const size = this.term.cols + "x" + this.term.rows;
    if (!force && size === this.sentSize) return;
    if (this.conn.sendJSON({ type: "resize", cols: this.term.cols, rows: this.term.rows })) this.sentSize = size;
    this.app.renderStatus(this);
  }

  restart() {
    this.conn.reset();
    this.sessionId = null;
    this.restored = false;
    this.term.reset();
    this.connect();
    this.term.focus();
  }

  destroy() {
    this.conn.close();
    if (this.ro) this.ro.disconnect();
    this.term.dispose();
    this.tabEl.remove();
    this.pane.remove();
  }
}
