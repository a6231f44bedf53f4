// Small helpers shared by the terminal pages (no inline script anywhere: CSP).

export function store(kind, key, value) {
  try {
    const s = kind === "session" ? window.sessionStorage : window.localStorage;
    if (value === undefined) return s.getItem(key);
    if (value === null) s.removeItem(key); else s.setItem(key, value);
  } catch (e) { /* storage disabled (private mode): settings just do not persist */ }
  return null;
}

export function csrfToken() {
  try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
  catch (e) { return ""; }
}

export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function debounce(fn, ms) {
  let t = null;
  return function () { clearTimeout(t); t = setTimeout(fn, ms); };
}

// The text of a terminal's buffer (scrollback and screen), for tests and debugging.
export function bufferText(term) {
  const buf = term.buffer.active, lines = [];
  for (let i = 0; i < buf.length; i++) {
    const line = buf.getLine(i);
    if (line) lines.push(line.translateToString(true));
  }
  return lines.join("\n");
}

// Phones, portrait or landscape (and other short windows): the terminal page goes
// full-screen (terminal.css hides the site header behind a menu button) with smaller text.
// The same query is in terminal.css.
export const COMPACT = "(max-width: 640px), (max-height: 500px)";

// Phones: keep the terminal and the key bar above the on-screen keyboard. The keyboard
// shrinks the visual viewport, not the layout viewport (100dvh does not follow it), and iOS
// may pan the visual viewport down to the focused input: the page is sized to the visual
// viewport and moved to where it is; the terminal's ResizeObserver then refits xterm.
export function trackViewport() {
  const vv = window.visualViewport;
  const body = document.body;
  if (!vv || !body.classList.contains("term-body")) return;
  let frame = 0;
  const apply = function () {
    frame = 0;
    if (Math.abs(vv.scale - 1) > 0.01) { body.style.height = ""; body.style.transform = ""; return; } // pinch-zoomed
    body.style.height = Math.round(vv.height) + "px";
    if (window.scrollY) window.scrollTo(0, 0);
    const top = Math.max(0, Math.round(vv.offsetTop));
    body.style.transform = top ? "translateY(" + top + "px)" : "";
    body.setAttribute("data-vv", Math.round(vv.width) + "x" + Math.round(vv.height) + "+" + top);
  };
  const later = function () { if (!frame) frame = requestAnimationFrame(apply); };
  vv.addEventListener("resize", later);
  vv.addEventListener("scroll", later);
  apply();
}
