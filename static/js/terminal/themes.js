// Terminal colour themes, shared by the terminal, the watch page and the recording player.
import { store } from "./util.js";

export const STORE_THEME = "portal.term.theme";

export const THEMES = {
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

// The theme chosen with the toolbar button, else the system's preference.
export function isTheme(name) { return Object.prototype.hasOwnProperty.call(THEMES, name); }

export function initialTheme() {
  const stored = store("local", STORE_THEME);
  if (isTheme(stored)) return stored;
  return window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

export function saveTheme(name) { store("local", STORE_THEME, name); }
