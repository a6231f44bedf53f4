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

// Phones: keep the terminal and the key bar above the on-screen keyboard (the visual
// viewport shrinks when it opens; 100dvh does not).
export function trackViewport() {
  const vv = window.visualViewport;
  if (!vv || !document.body.classList.contains("term-body")) return;
  const apply = function () {
    if (Math.abs(vv.scale - 1) > 0.01) { document.body.style.height = ""; return; } // pinch-zoomed
    document.body.style.height = Math.round(vv.height) + "px";
    if (window.scrollY) window.scrollTo(0, 0);
  };
  vv.addEventListener("resize", apply);
  apply();
}
