// The phone key bar: Esc, Tab, arrows, Home/End, PgUp/PgDn, a few symbols, and sticky
// Ctrl/Alt that apply to the next key (from the bar or the on-screen keyboard).
import { store } from "./util.js";

const STORE_KEYBAR = "portal.term.keybar";

// Control character for a key typed after the sticky Ctrl (xterm's conventions).
export function ctrlChar(ch) {
  if (ch.length !== 1) return ch;
  const c = ch.charCodeAt(0);
  if (c >= 97 && c <= 122) return String.fromCharCode(c - 96); // a-z
  if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);  // @ A-Z [ \ ] ^ _
  if (ch === "?" || ch === "8") return "\x7f";
  if (ch === " " || ch === "2") return "\x00";
  if (c >= 51 && c <= 55) return String.fromCharCode(c - 24);  // 3-7 -> ESC .. US
  if (ch === "/" || ch === "-") return "\x1f";
  return ch;
}

export class Keybar {
  // app: the page (its root, the active tab, touchLike).
  constructor(app, bar) {
    this.app = app;
    this.bar = bar;
    this.mods = { ctrl: false, alt: false };
  }

  get hidden() { return !this.bar || this.bar.hidden; }

  applyModifiers(data) {
    if (!this.mods.ctrl && !this.mods.alt) return data;
    let out = data;
    if (this.mods.ctrl) out = ctrlChar(out);
    if (this.mods.alt) out = "\x1b" + out;
    this.setMods(false, false);
    return out;
  }

  setMods(ctrl, alt) {
    this.mods.ctrl = ctrl;
    this.mods.alt = alt;
    if (!this.bar) return;
    this.bar.querySelectorAll("[data-mod]").forEach(function (b) {
      const on = b.getAttribute("data-mod") === "ctrl" ? ctrl : alt;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  }

  keySequence(name) {
    const term = this.app.active && this.app.active.term;
    const appCursor = !!(term && term.modes && term.modes.applicationCursorKeysMode);
    const arrows = { up: "A", down: "B", right: "C", left: "D", home: "H", end: "F" };
    if (arrows[name]) {
      const mod = (this.mods.ctrl ? 4 : 0) + (this.mods.alt ? 2 : 0);
      this.setMods(false, false);
      if (mod) return "\x1b[1;" + (mod + 1) + arrows[name];
      return (appCursor ? "\x1bO" : "\x1b[") + arrows[name];
    }
    const fixed = { esc: "\x1b", tab: "\t", pgup: "\x1b[5~", pgdn: "\x1b[6~" };
    if (fixed[name] !== undefined) {
      let seq = fixed[name];
      if (this.mods.alt) seq = "\x1b" + seq;
      this.setMods(false, false);
      return seq;
    }
    return this.applyModifiers(name); // a literal character: | ~ / -
  }

  init() {
    if (!this.bar) return;
    const app = this.app;
    const pref = store("local", STORE_KEYBAR);
    const auto = app.touchLike || window.matchMedia("(max-width: 640px)").matches;
    this.show(pref === "on" ? true : pref === "off" ? false : auto, true);
    // Keep the focus (and the phone's keyboard) in the terminal while tapping keys.
    this.bar.addEventListener("pointerdown", function (e) { if (e.target.closest("button")) e.preventDefault(); });
    this.bar.addEventListener("mousedown", function (e) { if (e.target.closest("button")) e.preventDefault(); });
    this.bar.addEventListener("click", (e) => {
      const btn = e.target.closest("button");
      if (!btn) return;
      const tab = app.active;
      const mod = btn.getAttribute("data-mod");
      if (mod === "ctrl") this.setMods(!this.mods.ctrl, this.mods.alt);
      else if (mod === "alt") this.setMods(this.mods.ctrl, !this.mods.alt);
      else if (btn.hasAttribute("data-key") && tab) tab.send(this.keySequence(btn.getAttribute("data-key")));
      else if (btn.hasAttribute("data-char") && tab) tab.send(this.keySequence(btn.getAttribute("data-char")));
      if (tab) tab.term.focus();
    });
  }

  show(visible, initial) {
    if (!this.bar) return;
    this.bar.hidden = !visible;
    this.app.root.classList.toggle("with-keybar", !!visible);
    const btn = this.app.root.querySelector("[data-action=keybar]");
    if (btn) btn.setAttribute("aria-pressed", visible ? "true" : "false");
    if (!initial) store("local", STORE_KEYBAR, visible ? "on" : "off");
    if (this.app.active) this.app.active.fit();
  }
}
