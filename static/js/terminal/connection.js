// One terminal socket (DESIGN.md, "Terminal socket contract"): connect, re-attach with
// backoff, keep-alive pings and a liveness probe when the page comes back, acks for flow
// control. The owner (a terminal tab, the watch page) renders; this only talks.

const ACK_BYTES = 64 * 1024, ACK_DELAY = 50;
const PING_EVERY = 25000, PROBE_TIMEOUT = 4000;
const BACKOFF_MAX = 10000;
export const MAX_ATTEMPTS = 20; // 0.5+1+2+4+8+10*15 s: outlives the server's grace period

// Always this page's origin (the session cookie authenticates the socket); the server may
// hand over a path or a full ws:// URL (url_for of a WebSocket route).
export function wsUrl(path, params) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  if (/^wss?:\/\//i.test(path)) {
    try { const u = new URL(path); path = u.pathname + u.search; } catch (e) { /* keep as is */ }
  }
  if (path.indexOf("?") >= 0) {
    const extra = path.slice(path.indexOf("?") + 1);
    path = path.slice(0, path.indexOf("?"));
    extra.split("&").forEach(function (kv) {
      if (!kv) return;
      const i = kv.indexOf("=");
      const k = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
      if (!(k in params)) params[k] = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1));
    });
  }
  const q = Object.keys(params).filter(function (k) { return params[k] !== null && params[k] !== undefined && params[k] !== ""; })
    .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); }).join("&");
  return proto + "//" + location.host + path + (q ? "?" + q : "");
}

// Coming back from the background (phones drop sockets while locked), from the bfcache,
// or the network coming back: `wake` runs.
export function onWake(wake, offline) {
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "visible") wake(); });
  window.addEventListener("pageshow", function (e) { if (e.persisted) wake(); });
  window.addEventListener("online", wake);
  if (offline) window.addEventListener("offline", offline);
}

/**
 * hooks (all called with the connection's state already updated):
 *   url()                  the socket URL for the next attempt (called on every connect)
 *   state(state, reason)   "connecting" | "connected" | "reconnecting" | "closed"
 *   binary(bytes, done)    output; call done() once it is rendered (flow control acks)
 *   control(msg)           a JSON control frame other than pong; "ready" arrives as
 *                          state "connected" first
 *   closed(reason)         the connection gave up or the session ended (state "closed" follows)
 *   retrying()             a drop is about to be retried (may reset `attempt`)
 * options: maxAttempts (default MAX_ATTEMPTS), acks (default true).
 */
export class Connection {
  constructor(hooks, options) {
    options = options || {};
    this.hooks = hooks;
    this.maxAttempts = options.maxAttempts || MAX_ATTEMPTS;
    this.acks = options.acks !== false;
    this.ws = null;
    this.gen = 0;
    this.state = "idle";
    this.reason = "";
    this.attempt = 0;
    this.connects = 0;
    this.opened = false;
    this.everReady = false;
    this.ended = false; // the session ended (or we gave up): no reconnect until connect()
    this.closing = false; // the owner is gone: never again
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.probeTimer = null;
    this.ackTimer = null;
    this.unacked = 0;
    this.lastRx = 0;
    this.lastPing = 0;
  }

  setState(state, reason) {
    this.state = state;
    this.reason = reason || "";
    this.hooks.state(state, this.reason);
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.closing) return;
    if (this.ws) this.quietClose(); // never leave a socket behind
    this.ended = false;
    this.setState(this.attempt > 0 ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.hooks.url());
    } catch (e) {
      this.fail("cannot open a WebSocket: " + e.message);
      return;
    }
    ws.binaryType = "arraybuffer";
    const gen = ++this.gen;
    this.connects += 1;
    this.ws = ws;
    this.unacked = 0;
    this.opened = false;
    ws.onopen = () => { if (ws === this.ws) { this.opened = true; this.lastRx = Date.now(); } };
    ws.onmessage = (ev) => { if (ws === this.ws) this.onMessage(ev, gen); };
    ws.onclose = (ev) => { if (ws === this.ws) this.onDrop(ev); };
    ws.onerror = function () { /* onclose follows with the details */ };
  }

  onMessage(ev, gen) {
    this.lastRx = Date.now();
    if (typeof ev.data !== "string") {
      const bytes = new Uint8Array(ev.data);
      const n = bytes.length;
      this.hooks.binary(bytes, this.acks ? () => this.ack(n, gen) : undefined);
      return;
    }
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (!msg || typeof msg !== "object" || msg.type === "pong") return;
    if (msg.type === "ready") {
      this.everReady = true;
      this.attempt = 0;
      this.setState("connected");
      this.startPing();
    }
    this.hooks.control(msg); // unknown control frames are the owner's to ignore (forward compatible)
  }

  // The session ended (exit or error frame): close quietly and report why.
  end(reason) {
    this.ended = true;
    this.quietClose();
    this.fail(reason);
  }

  fail(reason) {
    this.stopTimers();
    this.ended = true;
    this.hooks.closed(reason);
    this.setState("closed", reason);
  }

  onDrop() {
    this.ws = null;
    this.stopTimers();
    if (this.closing || this.ended) return;
    if (this.hooks.retrying) this.hooks.retrying();
    // Refused before the upgrade three times running: a signed-out browser looks just like a
    // network problem from here, so ask the API once instead of retrying for minutes.
    if (!this.opened && this.attempt >= 2 && navigator.onLine !== false) {
      fetch("/api/profile", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then((resp) => {
          if (this.closing || this.ended || this.ws) return;
          if (resp.status === 401) this.fail("you are signed out: reload the page to sign in again");
          else if (!this.reconnectTimer) this.scheduleReconnect();
        }, () => { if (!this.closing && !this.ended && !this.ws && !this.reconnectTimer) this.scheduleReconnect(); });
      this.setState("reconnecting");
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    this.attempt += 1;
    if (this.attempt > this.maxAttempts) {
      this.fail(this.everReady ? "connection lost" : "could not connect");
      return;
    }
    const delay = Math.min(500 * Math.pow(2, this.attempt - 1), BACKOFF_MAX);
    this.setState("reconnecting");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (navigator.onLine === false) { this.reconnectTimer = null; this.setState("reconnecting"); return; } // "online" resumes it
      this.connect();
    }, delay);
  }

  // The page came back (visible, restored from bfcache, network back): reconnect now, or
  // check that a socket which looks open is still alive (phones kill idle sockets silently).
  wake() {
    if (this.closing || this.ended) return;
    const ws = this.ws;
    if (!ws) { if (this.state === "reconnecting") this.connect(); return; } // waiting out a backoff
    if (ws.readyState !== WebSocket.OPEN) return; // an attempt is under way
    const sent = Date.now();
    this.sendJSON({ type: "ping" });
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      if (ws === this.ws && this.lastRx < sent) this.forceDrop();
    }, PROBE_TIMEOUT);
  }

  forceDrop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) { try { ws.close(); } catch (e) { /* already gone */ } }
    this.onDrop({ code: 4000 });
  }

  startPing() {
    clearInterval(this.pingTimer);
    this.lastPing = 0;
    this.pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (this.lastPing && this.lastRx < this.lastPing) { this.forceDrop(); return; } // no pong for a whole period
      this.lastPing = Date.now();
      this.sendJSON({ type: "ping" });
    }, PING_EVERY);
  }

  stopTimers() {
    clearInterval(this.pingTimer); this.pingTimer = null;
    clearTimeout(this.probeTimer); this.probeTimer = null;
    clearTimeout(this.ackTimer); this.ackTimer = null;
    clearTimeout(this.reconnectTimer); this.reconnectTimer = null;
  }

  quietClose() {
    const ws = this.ws;
    this.ws = null;
    this.gen++;
    if (ws) { try { ws.close(1000); } catch (e) { /* ignore */ } }
  }

  // Start over on a new session: the next connect is a first attempt.
  reset() {
    this.quietClose();
    this.stopTimers();
    this.everReady = false;
    this.attempt = 0;
  }

  // The owner is going away: no socket, no timers, no reconnect.
  close() {
    this.closing = true;
    this.stopTimers();
    this.quietClose();
  }

  // Flow control: ack what the owner has actually rendered, batched.
  ack(n, gen) {
    if (gen !== this.gen) return; // rendered bytes of an old socket mean nothing to the new one
    this.unacked += n;
    if (this.unacked >= ACK_BYTES) { this.flushAck(); return; }
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), ACK_DELAY);
  }

  flushAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.unacked > 0 && this.sendJSON({ type: "ack", bytes: this.unacked })) this.unacked = 0;
  }

  isOpen() { return !!this.ws && this.ws.readyState === WebSocket.OPEN; }

  sendJSON(obj) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  sendBytes(bytes) {
    if (!this.isOpen() || this.state !== "connected") return false;
    this.ws.send(bytes);
    return true;
  }
}
