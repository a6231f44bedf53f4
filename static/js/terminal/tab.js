// One terminal tab: an xterm.js instance in its pane, fitted to it, bridged to one socket.
// xterm.js and its addons are the vendored UMD builds (globals), loaded by classic scripts.
import { Connection, wsUrl } from "./connection.js";
import { THEMES } from "./themes.js";
import { debounce, el, store } from "./util.js";

const RESIZE_DELAY = 100;
// Typed while the socket is down: held (whole keystrokes or pastes, up to this many bytes)
// and sent once the session is re-attached; past the limit nothing more is kept.
export const HOLD_MAX = 4096;
const NOTICE_MS = 6000;
const FONT_FAMILY = '"DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function chars(n) { return n + (n === 1 ? " character" : " characters"); }

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
    this.held = [];        // Uint8Array chunks typed while not connected
    this.heldBytes = 0;
    this.heldChars = 0;
    this.droppedChars = 0; // refused over HOLD_MAX (everything after the first refusal)
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
    this.buildReconnect();

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

  // Over the terminal while the socket is down (and, briefly, what became of the input
  // typed meanwhile): the status line alone is easy to miss, and hidden on phones.
  buildReconnect() {
    const box = el("div", "term-reconnect");
    box.hidden = true;
    box.setAttribute("data-role", "reconnect");
    const card = el("div", "term-reconnect-card");
    card.setAttribute("role", "status");
    card.setAttribute("aria-live", "polite");
    this.rcTitle = el("p", "term-reconnect-title");
    this.rcHeld = el("p", "term-reconnect-held");
    this.rcHeld.setAttribute("data-role", "held");
    const actions = el("div", "term-reconnect-actions");
    this.rcRetry = el("button", "term-btn", "Retry now");
    this.rcRetry.type = "button";
    this.rcRetry.setAttribute("data-action", "retry-now");
    this.rcRetry.addEventListener("click", () => { this.conn.wake(); if (!this.app.touchLike) this.term.focus(); });
    this.rcOk = el("button", "term-btn", "OK");
    this.rcOk.type = "button";
    this.rcOk.setAttribute("data-action", "notice-ok");
    this.rcOk.addEventListener("click", () => { this.hideNotice(); if (!this.app.touchLike) this.term.focus(); });
    actions.appendChild(this.rcRetry);
    actions.appendChild(this.rcOk);
    card.appendChild(this.rcTitle);
    card.appendChild(this.rcHeld);
    card.appendChild(actions);
    // Tapping these must not take the focus (and the phone's keyboard) from the terminal.
    actions.addEventListener("pointerdown", function (e) { e.preventDefault(); });
    actions.addEventListener("mousedown", function (e) { e.preventDefault(); });
    box.appendChild(card);
    this.reconnectEl = box;
    this.pane.appendChild(box);
  }

  renderReconnect() {
    const box = this.reconnectEl;
    if (this.state === "reconnecting") {
      clearTimeout(this.noticeTimer);
      this.noticeText = "";
      box.hidden = false;
      box.setAttribute("data-mode", "reconnecting");
      this.rcTitle.textContent = "Reconnecting\u2026 (attempt " + this.attempt + ")" +
        (navigator.onLine === false ? " \u00b7 offline" : "");
      this.rcHeld.textContent = this.heldText();
      this.rcRetry.hidden = false;
      this.rcOk.hidden = true;
      return;
    }
    if (this.noticeText) {
      box.hidden = false;
      box.setAttribute("data-mode", this.noticeWarn ? "warning" : "notice");
      this.rcTitle.textContent = this.noticeText;
      this.rcHeld.textContent = "";
      this.rcRetry.hidden = true;
      this.rcOk.hidden = false;
      return;
    }
    box.hidden = true;
    box.removeAttribute("data-mode");
  }

  heldText() {
    if (this.droppedChars) {
      return "Input limit reached (" + (HOLD_MAX / 1024) + " KiB): " + chars(this.heldChars) +
        " will be sent when the terminal is back; " + chars(this.droppedChars) + " typed after that will not.";
    }
    if (this.heldChars) return chars(this.heldChars) + " typed: sent when the terminal is back.";
    return "What you type now is sent when the terminal is back.";
  }

  // A message in the same box once connected again; a warning stays until OK.
  notice(text, warn) {
    this.noticeText = text;
    this.noticeWarn = !!warn;
    clearTimeout(this.noticeTimer);
    if (!warn) this.noticeTimer = setTimeout(() => this.hideNotice(), NOTICE_MS);
    this.renderReconnect();
  }

  hideNotice() {
    clearTimeout(this.noticeTimer);
    this.noticeText = "";
    this.renderReconnect();
  }

  // ---- input typed while the socket is down

  hold(bytes) {
    if (this.conn.ended || this.conn.closing) return; // a closed terminal says so already
    const n = decoder.decode(bytes).length;
    // Whole chunks only, and nothing after a refused one: half a paste, or the Enter typed
    // after a dropped command, must not run on its own.
    if (this.droppedChars || this.heldBytes + bytes.length > HOLD_MAX) this.droppedChars += n;
    else {
      this.held.push(bytes);
      this.heldBytes += bytes.length;
      this.heldChars += n;
    }
    this.renderReconnect();
  }

  // Re-attached (or a first shell ready): send what was typed meanwhile, in order.
  flushHeld() {
    if (!this.heldBytes && !this.droppedChars) return;
    const sentChars = this.heldChars, dropped = this.droppedChars;
    let ok = true;
    if (this.heldBytes) {
      const all = new Uint8Array(this.heldBytes);
      let at = 0;
      this.held.forEach(function (c) { all.set(c, at); at += c.length; });
      ok = this.conn.sendBytes(all);
    }
    if (!ok) return; // dropped again at once: still held, sent on the next ready
    this.clearHeld();
    if (dropped) {
      this.notice("Reconnected. Sent " + chars(sentChars) + " typed meanwhile; the " + chars(dropped) +
        " typed after the " + (HOLD_MAX / 1024) + " KiB limit were not sent.", true);
    } else {
      this.notice("Reconnected. Sent the " + chars(sentChars) + " typed meanwhile.", false);
    }
  }

  // The input cannot go anywhere (the session is gone): say so, return the sentence.
  discardHeld() {
    const n = this.heldChars + this.droppedChars;
    this.clearHeld();
    if (!n) return "";
    return "What you typed while reconnecting (" + chars(n) + ") was not sent.";
  }

  clearHeld() {
    this.held = [];
    this.heldBytes = 0;
    this.heldChars = 0;
    this.droppedChars = 0;
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
    this.renderReconnect();
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
    this.pane.dispatchEvent(new CustomEvent("term:control", { bubbles: true, detail: { tab: this, msg: msg } })); // share.js
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
    this.flushHeld();
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
      const lost = this.discardHeld(); // typed for the old shell: never into a new one
      this.term.write("\x1b[2m(previous session is gone: " + reason + "; starting a new one" +
        (lost ? ". " + lost : "") + ")\x1b[0m\r\n");
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
    const lost = this.discardHeld();
    this.hideNotice();
    this.overlayMsg.textContent = "Session closed: " + reason + (lost ? ". " + lost : "");
    this.overlay.setAttribute("data-lost", lost ? "true" : "false");
    this.overlay.hidden = false;
    this.app.saveTabs();
  }

  // Handshake refused for a remembered session a few times: it is not coming back.
  onRetry() {
    if (!this.everReady && this.restored && this.attempt >= 2) {
      this.restored = false;
      this.sessionId = null;
      this.conn.attempt = 0;
      const lost = this.discardHeld(); // typed for that session: never into a new shell
      if (lost) this.term.write("\x1b[2m(" + lost + ")\x1b[0m\r\n");
    }
  }

  wake() { this.conn.wake(); }

  sendBytes(bytes) {
    if (this.conn.sendBytes(bytes)) return true;
    this.hold(bytes);
    return false;
  }

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
    this.clearHeld();
    this.hideNotice();
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
