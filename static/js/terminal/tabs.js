// The tab strip: open, switch, close and renumber tabs, remember them for a reload (per
// browser tab, in sessionStorage), and the menu that opens a tab on another machine.
import { Tab } from "./tab.js";
import { csrfToken, el, store } from "./util.js";

const STORE_TABS = "portal.term.tabs."; // + agent_id, in sessionStorage (per browser tab)

export class TabStrip {
  // app: the page (status line, focus rules); root: the #term-app element.
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.agentId = root.getAttribute("data-agent-id");
    this.machineName = root.getAttribute("data-machine-name") || this.agentId;
    this.wsPath = root.getAttribute("data-ws-path");
    this.closeUrl = root.getAttribute("data-close-url") || "/api/terminal/sessions/";
    this.tabs = [];
    this.active = null;
    this.tabList = root.querySelector("[data-role=tabs]");
    this.addBtn = root.querySelector("[data-action=new-tab]");
    this.panes = root.querySelector("[data-role=panes]");
    this.emptyEl = root.querySelector("[data-role=empty]");
  }

  bind() {
    this.addBtn.addEventListener("click", () => { this.newTab({}); });
    document.addEventListener("click", (e) => {
      const menu = this.root.querySelector("[data-role=machine-menu]");
      if (menu && !menu.hidden && !e.target.closest("[data-role=machine-menu], [data-action=pick-machine]")) this.toggleMenu(false);
    });
    this.root.addEventListener("keydown", (e) => {
      const menu = e.target.closest && e.target.closest("[data-role=machine-menu]");
      if (!menu) return;
      const items = Array.prototype.slice.call(menu.querySelectorAll("button"));
      const i = items.indexOf(e.target);
      if (e.key === "Escape") { e.preventDefault(); this.toggleMenu(false); this.root.querySelector("[data-action=pick-machine]").focus(); }
      else if (e.key === "ArrowDown" && items.length) { e.preventDefault(); items[(i + 1) % items.length].focus(); }
      else if (e.key === "ArrowUp" && items.length) { e.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
    });
  }

  // ---- remembered across a reload

  storageKey() { return STORE_TABS + this.agentId; }

  saveTabs() {
    const list = this.tabs.filter(function (t) { return t.sessionId && !t.ended; }).map(function (t) {
      return { agent: t.agentId, name: t.name, ws: t.wsPath, session: t.sessionId };
    });
    store("session", this.storageKey(), list.length ? JSON.stringify(list) : null);
  }

  restoreTabs() {
    let list = [];
    try { list = JSON.parse(store("session", this.storageKey()) || "[]") || []; } catch (e) { list = []; }
    list = list.filter(function (s) { return s && typeof s.session === "string" && typeof s.ws === "string"; });
    const wanted = this.root.getAttribute("data-session-id");
    let activeIndex = 0;
    if (wanted) {
      let at = list.findIndex(function (s) { return s.session === wanted; });
      if (at < 0) { list.unshift({ agent: this.agentId, name: this.machineName, ws: this.wsPath, session: wanted, explicit: true }); at = 0; }
      activeIndex = at;
      // The link did its job; a later reload re-attaches from sessionStorage instead.
      try {
        const url = new URL(location.href);
        url.searchParams.delete("session");
        history.replaceState(history.state, "", url.pathname + url.search + url.hash);
      } catch (e) { /* old browser */ }
    }
    if (!list.length) { this.newTab({}); return; }
    const tabs = list.map((s) => this.newTab({ agent: s.agent, name: s.name, ws: s.ws, session: s.session, restored: !s.explicit }, true));
    this.activate(tabs[activeIndex] || tabs[0]);
  }

  // ---- tabs

  newTab(spec, background) {
    const tab = new Tab(this.app, {
      agent: spec.agent || this.agentId,
      name: spec.name || this.machineName,
      ws: spec.ws || this.wsPath,
      session: spec.session || null,
      restored: spec.restored
    });
    if (this.app.files) this.app.files.watchTab(tab);
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
  }

  renumber() {
    const counts = {};
    this.tabs.forEach(function (t) { counts[t.name] = (counts[t.name] || 0) + 1; });
    const seen = {};
    this.tabs.forEach(function (t) {
      seen[t.name] = (seen[t.name] || 0) + 1;
      t.labelEl.textContent = counts[t.name] > 1 ? t.name + " " + seen[t.name] : t.name;
    });
  }

  activate(tab) {
    this.active = tab;
    this.tabs.forEach(function (t) {
      const on = t === tab;
      t.pane.hidden = !on;
      t.tabEl.classList.toggle("active", on);
      t.tabBtn.setAttribute("aria-selected", on ? "true" : "false");
      t.tabBtn.tabIndex = on ? 0 : -1;
    });
    this.root.dispatchEvent(new CustomEvent("term:activate", { detail: { tab: tab } })); // share.js
    if (!tab) return;
    tab.fit();
    if (!this.app.touchLike) tab.term.focus();
    requestAnimationFrame(() => { if (this.active === tab) tab.fit(); });
    this.app.renderStatus(tab);
    tab.tabEl.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  // The tab's ×: a live shell asks first whether to detach (it keeps running for the grace
  // period, re-attachable from the sessions page) or to end it.
  closeTab(tab) {
    if (this.tabs.indexOf(tab) < 0) return;
    if (tab.ended || !tab.sessionId) { this.removeTab(tab, true); return; }
    const dlg = document.createElement("dialog");
    dlg.className = "term-close-dialog";
    const label = tab.tabEl.querySelector(".term-tab-label");
    const name = label ? label.textContent : tab.name;
    dlg.setAttribute("aria-label", "Close " + name);
    const p = document.createElement("p");
    p.textContent = "Close " + name + "? Detach keeps the shell running for the grace period "
      + "(re-attach it from Sessions); End stops the shell.";
    dlg.appendChild(p);
    const row = document.createElement("div");
    row.className = "term-close-choices";
    [["detach", "Detach"], ["end", "End the shell"], ["cancel", "Cancel"]].forEach(([v, label]) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "term-btn";
      b.dataset.choice = v;
      b.textContent = label;
      b.addEventListener("click", () => dlg.close(v));
      row.appendChild(b);
    });
    dlg.appendChild(row);
    dlg.addEventListener("close", () => {
      const v = dlg.returnValue;
      dlg.remove();
      if (v === "detach") this.removeTab(tab, false);
      else if (v === "end") this.removeTab(tab, true);
    });
    this.root.appendChild(dlg);  // inside the app: the terminal's theme applies
    dlg.showModal();
    dlg.querySelector("[data-choice=detach]").focus();
  }

  removeTab(tab, end) {
    const i = this.tabs.indexOf(tab);
    if (i < 0) return;
    const sid = tab.ended || !end ? null : tab.sessionId;
    tab.destroy();
    this.tabs.splice(i, 1);
    // Ending closes the shell; detaching only drops the socket (the grace period ends it).
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
      this.app.renderStatus(null);
    }
  }

  // ---- another machine in a new tab

  wsPathFor(agentId) {
    const mine = "/" + encodeURIComponent(this.agentId) + "/";
    return this.wsPath.replace(mine, "/" + encodeURIComponent(agentId) + "/");
  }

  toggleMenu(show) {
    const menu = this.root.querySelector("[data-role=machine-menu]");
    const btn = this.root.querySelector("[data-action=pick-machine]");
    if (!menu || !btn) return;
    if (show === undefined) show = menu.hidden;
    menu.hidden = !show;
    btn.setAttribute("aria-expanded", show ? "true" : "false");
    if (!show) return;
    const r = btn.getBoundingClientRect(), host = this.root.getBoundingClientRect();
    menu.style.left = Math.max(4, Math.min(r.left - host.left, host.width - 264)) + "px";
    menu.style.top = (r.bottom - host.top + 2) + "px";
    if (this.machinesLoaded) { this.focusMenu(menu); return; }
    menu.textContent = "";
    menu.appendChild(el("p", "term-menu-note", "Loading machines\u2026"));
    fetch(this.root.getAttribute("data-machines-url") || "/api/machines?limit=200", {
      credentials: "same-origin", headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() }
    }).then(function (resp) {
      if (!resp.ok) throw new Error("the server answered " + resp.status);
      return resp.json();
    }).then((data) => {
      this.machinesLoaded = true;
      this.renderMenu(menu, (data.machines || []).filter(function (m) {
        return m.my_role === "operator" || m.my_role === "admin";
      }));
      this.focusMenu(menu);
    }, function (err) {
      menu.textContent = "";
      menu.appendChild(el("p", "term-menu-note", "Could not list machines: " + err.message));
    });
  }

  renderMenu(menu, machines) {
    menu.textContent = "";
    if (!machines.length) { menu.appendChild(el("p", "term-menu-note", "No machine you may open a terminal on.")); return; }
    menu.appendChild(el("p", "term-menu-title", "New terminal on"));
    machines.forEach((m) => {
      const item = el("button", "term-menu-item");
      item.type = "button";
      item.setAttribute("role", "menuitem");
      item.setAttribute("data-agent-id", m.agent_id);
      item.appendChild(el("span", "term-menu-name", m.name));
      item.appendChild(el("span", "term-menu-host", (m.username ? m.username + "@" : "") + (m.host || "")));
      item.addEventListener("click", () => {
        this.toggleMenu(false);
        this.newTab({ agent: m.agent_id, name: m.name, ws: this.wsPathFor(m.agent_id) });
      });
      menu.appendChild(item);
    });
  }

  focusMenu(menu) {
    const first = menu.querySelector("button");
    if (first) first.focus();
  }
}
