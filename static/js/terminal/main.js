// The terminal page: xterm.js tabs bridged to the portal's WebSocket (connection.js), the
// toolbar (font size, theme, search, key bar), the status line, copy and paste.
// No inline script anywhere (CSP): the page hands data over in data-* attributes.
import { FilesDrawer } from "./files.js";
import { Keybar } from "./keybar.js";
import { Share } from "./share.js";
import { onWake } from "./connection.js";
import { TabStrip } from "./tabs.js";
import { THEMES, initialTheme, isTheme, saveTheme } from "./themes.js";
import { COMPACT, bufferText, el, store, trackViewport } from "./util.js";

const STORE_FONT = "portal.term.fontSize";
const FONT_MIN = 8, FONT_MAX = 32;
const SEARCH_OPTIONS = {
  caseSensitive: false,
  decorations: { matchOverviewRuler: "#facc15", activeMatchColorOverviewRuler: "#f97316", matchBackground: "#854d0e", activeMatchBackground: "#f97316" }
};

class App {
  constructor(root) {
    this.root = root;
    this.touchLike = window.matchMedia("(pointer: coarse)").matches;
    const storedFont = parseInt(store("local", STORE_FONT), 10);
    const compact = window.matchMedia(COMPACT).matches;
    this.fontSize = storedFont >= FONT_MIN && storedFont <= FONT_MAX ? storedFont : (compact ? 13 : 15);
    this.theme = initialTheme();

    this.strip = new TabStrip(this, root);
    this.keys = new Keybar(this, root.querySelector("[data-role=keybar]"));
    this.statusEl = root.querySelector("[data-role=status]");
    this.statusText = root.querySelector("[data-role=status-text]");
    this.statusSize = root.querySelector("[data-role=status-size]");
    this.statusNew = root.querySelector("[data-action=status-new]");
    this.fontEl = root.querySelector("[data-role=font-size]");
    this.searchBox = root.querySelector("[data-role=search]");
    this.searchInput = root.querySelector("[data-role=search-input]");
    this.strip.bind();
    this.bindControls();
    this.applyTheme();
    this.renderFont();
    this.keys.init();
    this.share = new Share(this, root); // before the tabs: it hears their first frames
    this.files = new FilesDrawer(this, root); // before the tabs: it watches each for OSC 7
    this.strip.restoreTabs();
  }

  // What tabs, the key bar and the tests use.
  get tabs() { return this.strip.tabs; }
  get active() { return this.strip.active; }
  activate(tab) { this.strip.activate(tab); }
  closeTab(tab) { this.strip.closeTab(tab); }
  newTab(spec) { return this.strip.newTab(spec); }
  saveTabs() { this.strip.saveTabs(); }
  applyModifiers(data) { return this.keys.applyModifiers(data); }

  bindControls() {
    this.root.addEventListener("click", (e) => {
      const btn = e.target.closest("[data-action]");
      if (!btn || !this.root.contains(btn)) return;
      switch (btn.getAttribute("data-action")) {
        case "font-dec": this.setFont(this.fontSize - 1); break;
        case "font-inc": this.setFont(this.fontSize + 1); break;
        case "theme": this.setTheme(this.theme === "dark" ? "light" : "dark"); break;
        case "keybar": this.keys.show(this.keys.hidden); break;
        case "search": this.toggleSearch(); break;
        case "files": this.files.toggle(); return;
        case "status-new": if (this.active) this.active.restart(); else this.newTab({}); break;
        case "empty-new": this.newTab({}); break;
        case "pick-machine": this.strip.toggleMenu(); return;
        case "site-nav": this.toggleSiteNav(); return;
        case "view": this.toggleView(); return;
        default: return;
      }
      // Back to typing after a toolbar click (not on phones: that would pop the keyboard up).
      const act = btn.getAttribute("data-action");
      if (act !== "search" && this.active && !this.touchLike) this.active.term.focus();
    });
    if (this.searchInput) {
      this.searchInput.addEventListener("keydown", (e) => {
        const tab = this.active;
        if (e.key === "Escape") { e.preventDefault(); this.toggleSearch(false); return; }
        if (e.key === "Enter" && tab && tab.search) {
          e.preventDefault();
          if (e.shiftKey) tab.search.findPrevious(this.searchInput.value, SEARCH_OPTIONS);
          else tab.search.findNext(this.searchInput.value, SEARCH_OPTIONS);
        }
      });
    }
    // The phone's "Aa" menu closes on a tap anywhere else, or Esc.
    document.addEventListener("pointerdown", (e) => {
      if (!this.viewOpen()) return;
      if (e.target.closest && e.target.closest("[data-role=view], [data-action=view]")) return;
      this.toggleView(false);
    }, true);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.viewOpen()) {
        this.toggleView(false);
        const btn = this.root.querySelector("[data-action=view]");
        if (btn) btn.focus();
        return;
      }
      if (e.key !== "Escape" || !document.body.classList.contains("term-nav-open")) return;
      if (!e.target.closest || !e.target.closest(".topbar")) return;
      this.toggleSiteNav(false);
      const btn = this.root.querySelector("[data-action=site-nav]");
      if (btn) btn.focus();
    });
    // Coming back from the background: phones drop sockets while locked.
    onWake(() => this.wakeAll(), () => { if (this.active) this.renderStatus(this.active); });
  }

  // Phones: the site header is hidden behind the toolbar's menu button (terminal.css).
  toggleSiteNav(open) {
    const body = document.body;
    if (open === undefined) open = !body.classList.contains("term-nav-open");
    body.classList.toggle("term-nav-open", open);
    const btn = this.root.querySelector("[data-action=site-nav]");
    if (btn) btn.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      const first = document.querySelector(".topbar .nav a");
      if (first && !this.touchLike) first.focus();
    }
  }

  // Phones: text size and theme fold into the toolbar's "Aa" menu (terminal.css), so the tab
  // strip keeps room for a whole tab and its close button beside "+".
  viewOpen() {
    const view = this.root.querySelector("[data-role=view]");
    return !!view && view.classList.contains("open");
  }

  toggleView(open) {
    const view = this.root.querySelector("[data-role=view]");
    const btn = this.root.querySelector("[data-action=view]");
    if (!view || !btn) return;
    if (open === undefined) open = !view.classList.contains("open");
    view.classList.toggle("open", open);
    btn.setAttribute("aria-expanded", open ? "true" : "false");
  }

  wakeAll() {
    this.tabs.forEach(function (t) { t.wake(); });
    if (this.active) this.active.fit();
  }

  // ---- status line

  renderStatus(tab) {
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
  }

  flashStatus(text) {
    if (!this.active) return;
    this.statusText.textContent = text;
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => { this.renderStatus(this.active); }, 1800);
  }

  // ---- font size and theme

  setFont(size) {
    size = Math.max(FONT_MIN, Math.min(FONT_MAX, size));
    if (size === this.fontSize) return;
    this.fontSize = size;
    store("local", STORE_FONT, String(size));
    this.tabs.forEach(function (t) { t.term.options.fontSize = size; t.fit(); });
    this.renderFont();
    if (this.active) this.renderStatus(this.active);
  }

  renderFont() {
    if (this.fontEl) this.fontEl.textContent = this.fontSize + "px";
    const dec = this.root.querySelector("[data-action=font-dec]");
    const inc = this.root.querySelector("[data-action=font-inc]");
    if (dec) dec.disabled = this.fontSize <= FONT_MIN;
    if (inc) inc.disabled = this.fontSize >= FONT_MAX;
  }

  setTheme(name) {
    if (!isTheme(name)) return;
    this.theme = name;
    saveTheme(name);
    this.applyTheme();
  }

  applyTheme() {
    const theme = THEMES[this.theme];
    this.root.setAttribute("data-term-theme", this.theme);
    this.tabs.forEach(function (t) { t.term.options.theme = theme; });
    const btn = this.root.querySelector("[data-action=theme]");
    if (btn) {
      const next = this.theme === "dark" ? "light" : "dark";
      btn.setAttribute("aria-label", "Switch to the " + next + " theme");
      btn.title = "Switch to the " + next + " theme";
      btn.setAttribute("aria-pressed", this.theme === "light" ? "true" : "false");
    }
  }

  toggleSearch(show) {
    if (!this.searchBox) return;
    if (show === undefined) show = this.searchBox.hidden;
    this.searchBox.hidden = !show;
    if (show) { this.searchInput.focus(); this.searchInput.select(); }
    else {
      if (this.active && this.active.search) this.active.search.clearDecorations();
      if (this.active) this.active.term.focus();
    }
  }

  // ---- keyboard: copy/paste shortcuts (the key bar is keybar.js)

  keyHandler(tab, e) {
    if (e.type !== "keydown") return true;
    const key = (e.key || "").toLowerCase();
    const accel = e.ctrlKey || e.metaKey;
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
  }

  copy(tab) {
    const text = tab.term.getSelection();
    if (!text) return;
    const done = () => { this.flashStatus("copied " + text.length + " characters"); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, () => { this.legacyCopy(text); done(); });
    } else {
      this.legacyCopy(text);
      done();
    }
  }

  legacyCopy(text) {
    const ta = el("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    ta.remove();
    if (this.active) this.active.term.focus();
  }

  // Right click: copy the selection if there is one, else paste (where the clipboard API allows).
  contextMenu(tab, e) {
    if (tab.term.hasSelection()) {
      e.preventDefault();
      this.copy(tab);
      tab.term.clearSelection();
      return;
    }
    if (!navigator.clipboard || !navigator.clipboard.readText) return; // native menu
    e.preventDefault();
    navigator.clipboard.readText().then(function (text) {
      if (text) tab.term.paste(text);
      tab.term.focus();
    }, () => {
      this.flashStatus("paste with Ctrl+Shift+V (clipboard access was refused)");
    });
  }
}

// Modules run once the document is parsed (after the classic vendor scripts).
trackViewport();
const root = document.getElementById("term-app");
if (root && window.Terminal) {
  const app = new App(root);
  window.portalFiles = app.files; // the files drawer (tests and debugging)
  // For tests and debugging: the live terminals of this page.
  window.portalTerminals = {
    app: app,
    get tabs() { return app.tabs; },
    active: function () { return app.active; },
    text: function (tab) {
      tab = tab || app.active;
      return tab ? bufferText(tab.term) : "";
    }
  };
}
