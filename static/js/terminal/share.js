// Read-only sharing from the terminal toolbar: the Share button toggles sharing of the active
// tab's session (POST /api/terminal/sessions/<id>/share), copies the watch link (and shows it,
// for browsers without clipboard access), and the badge on it counts the live watchers. The
// count and the shared state come from the socket's `watchers` control frame (docs/terminal.md).
// Hooks: tab.js dispatches "term:control" for every control frame, tabs.js "term:activate".
import { csrfToken } from "./util.js";

const NOBODY = { shared: false, count: 0 };

function audience(tab) {
  return (tab && tab.audience) || NOBODY;
}

export class Share {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.btn = root.querySelector("[data-action=share]");
    this.pop = root.querySelector("[data-role=share-pop]");
    if (!this.btn || !this.pop) return;
    this.label = this.btn.querySelector("[data-role=share-label]");
    this.badge = this.btn.querySelector("[data-role=watchers]");
    this.msg = this.pop.querySelector("[data-role=share-msg]");
    this.link = this.pop.querySelector("[data-role=share-link]");
    this.copyBtn = this.pop.querySelector("[data-action=share-copy]");
    this.busy = false;

    this.btn.addEventListener("click", () => this.toggle());
    this.copyBtn.addEventListener("click", () => this.copy(this.link.value));
    this.pop.querySelector("[data-action=share-dismiss]").addEventListener("click", () => this.hide());
    this.link.addEventListener("focus", () => this.link.select());
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !this.pop.hidden) this.hide(); });
    root.addEventListener("term:control", (e) => this.onControl(e.detail.tab, e.detail.msg));
    root.addEventListener("term:activate", () => { this.hide(); this.render(); });
    this.render();
  }

  onControl(tab, msg) {
    switch (msg.type) {
      // A new or re-attached socket starts from nobody; a `watchers` frame follows if anyone
      // watches or the session is shared.
      case "ready": tab.audience = NOBODY; break;
      case "watchers":
        tab.audience = { shared: !!msg.shared, count: Math.max(0, parseInt(msg.count, 10) || 0) };
        break;
      case "exit": case "error": tab.audience = NOBODY; break;
      default: return;
    }
    if (tab === this.app.active) this.render();
  }

  render() {
    const tab = this.app.active;
    const a = audience(tab);
    const usable = !!(tab && tab.sessionId && !tab.ended);
    this.btn.disabled = !usable || this.busy;
    this.btn.setAttribute("aria-pressed", a.shared ? "true" : "false");
    this.label.textContent = a.shared ? "Sharing" : "Share";
    const who = a.count === 1 ? "1 person is watching" : a.count + " people are watching";
    this.btn.title = a.shared
      ? "Shared read-only (" + who + "): click to stop sharing"
      : "Share this terminal read-only and copy the watch link" + (a.count ? " (" + who + ")" : "");
    this.badge.hidden = !(a.shared || a.count > 0);
    this.badge.textContent = String(a.count);
    this.badge.setAttribute("aria-label", who);
    this.btn.setAttribute("data-watchers", String(a.count));
    if (!a.shared && this.pop.getAttribute("data-kind") === "link") this.hide();
  }

  watchUrl(sid) {
    const path = this.btn.getAttribute("data-watch-url").replace("__SID__", encodeURIComponent(sid));
    return location.origin + path;
  }

  toggle() {
    const tab = this.app.active;
    if (!tab || !tab.sessionId || this.busy) return;
    const sid = tab.sessionId;
    const want = !audience(tab).shared;
    this.busy = true;
    this.render();
    const url = this.btn.getAttribute("data-share-url").replace("__SID__", encodeURIComponent(sid));
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ shared: want })
    }).then((resp) => resp.json().catch(() => ({})).then((body) => {
      if (!resp.ok) throw new Error(body.error || ("the server answered " + resp.status));
      const shared = !!(body.session && body.session.shared);
      if (tab.sessionId === sid) tab.audience = { shared: shared, count: audience(tab).count };
      if (shared) this.showLink(this.watchUrl(sid));
      else { this.say("Sharing stopped; anyone watching was disconnected.", "info"); this.refocus(); }
    })).catch((err) => {
      this.say("Could not change sharing: " + err.message, "error");
    }).then(() => {
      this.busy = false;
      this.render();
    });
  }

  showLink(link) {
    this.link.value = link;
    this.link.hidden = false;
    this.copyBtn.hidden = false;
    this.show("link", "Shared read-only. People who may view this machine can watch with this link.");
    this.copy(link);
  }

  // The clipboard API needs a secure context and the page's focus; without it the link stays
  // shown and selected, ready for Ctrl+C.
  copy(link) {
    const done = () => {
      this.msg.textContent = "Watch link copied to the clipboard.";
      this.pop.setAttribute("data-copied", "true");
      this.refocus();
    };
    const manual = () => {
      this.msg.textContent = "Copy the watch link below (the clipboard is not available here).";
      this.pop.setAttribute("data-copied", "false");
      this.link.focus();
      this.link.select();
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(link).then(done, manual);
    } else {
      manual();
    }
  }

  // Back to typing (not on phones: that would pop the keyboard up), so keys never land on
  // the Share button (Enter there would stop sharing).
  refocus() {
    const tab = this.app.active;
    if (tab && !this.app.touchLike && document.activeElement && this.pop.contains(document.activeElement) === false) tab.term.focus();
  }

  say(text, kind) {
    this.link.hidden = true;
    this.copyBtn.hidden = true;
    this.show(kind, text);
  }

  show(kind, text) {
    this.pop.setAttribute("data-kind", kind);
    this.pop.removeAttribute("data-copied");
    this.msg.textContent = text;
    this.pop.hidden = false;
  }

  hide() {
    this.pop.hidden = true;
    this.pop.removeAttribute("data-kind");
  }
}
