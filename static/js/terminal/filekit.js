// Shared by the files drawer and the editor: JSON calls to the files API, dialogs (no
// window.prompt: errors show next to the field), formatting, lazy script loading.
// Names from the machine are always set with textContent, never parsed as HTML.
import { csrfToken, el } from "./util.js";

export function apiBase(agentId) {
  return "/api/machines/" + encodeURIComponent(agentId) + "/files";
}

export function qs(params) {
  return Object.keys(params).filter(function (k) { return params[k] !== undefined && params[k] !== null && params[k] !== ""; })
    .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]); }).join("&");
}

// fetch + JSON; never throws for an HTTP status: {ok, status, data, error}.
export async function api(method, url, body, extra) {
  const headers = { "Accept": "application/json", "X-CSRFToken": csrfToken() };
  const init = { method: method, credentials: "same-origin", headers: headers };
  if (body !== undefined && body !== null) {
    if (typeof body === "string" || body instanceof Blob) {
      init.body = body;
      headers["Content-Type"] = "application/octet-stream";
    } else {
      init.body = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
  }
  Object.assign(init, extra || {});
  let resp;
  try { resp = await fetch(url, init); } catch (e) {
    return { ok: false, status: 0, data: null, error: "the portal could not be reached (" + e.message + ")" };
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  const error = resp.ok ? null : ((data && data.error) || ("the server answered " + resp.status));
  return { ok: resp.ok, status: resp.status, data: data, error: error };
}

export function joinPath(folder, name) {
  if (!folder || folder === ".") return name;
  return folder.endsWith("/") ? folder + name : folder + "/" + name;
}

export function parentOf(path) {
  if (!path || path === "/") return "/";
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

// Control characters (and DEL) made visible: a name never moves the cursor or rings a bell.
export function shownName(name) {
  return String(name).replace(/[\u0000-\u001f\u007f]/g, function (c) {
    return "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
  });
}

export function formatSize(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

export function formatTime(epoch) {
  if (!epoch) return "";
  const d = new Date(epoch * 1000), now = new Date();
  const pad = function (x) { return String(x).padStart(2, "0"); };
  const day = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  return (d.getFullYear() === now.getFullYear() ? day.slice(5) : day) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
}

// A vendored UMD script, loaded once on first use (script-src 'self': no inline code).
const loading = {};
export function loadScript(src, global) {
  if (window[global]) return Promise.resolve(window[global]);
  if (!loading[src]) {
    loading[src] = new Promise(function (resolve, reject) {
      const s = document.createElement("script");
      s.src = src;
      s.onload = function () { window[global] ? resolve(window[global]) : reject(new Error(src + " defined no " + global)); };
      s.onerror = function () { delete loading[src]; reject(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
  }
  return loading[src];
}

export function loadStyle(href) {
  if (document.querySelector('link[href="' + href + '"]')) return;
  const l = document.createElement("link");
  l.rel = "stylesheet";
  l.href = href;
  document.head.appendChild(l);
}

// A modal dialog inside `host` (so the terminal's theme applies).
//   opts: {title, body: [nodes or strings], fields: [{name, label, value, hint}],
//          choices: [[value, label, primary?]], submit(values, choice) -> error string | null}
// Resolves {choice, values} (choice "cancel" on Esc). `submit` may keep the dialog open by
// returning an error, shown next to the first field (or under the text).
export function ask(host, opts) {
  return new Promise(function (resolve) {
    const dlg = el("dialog", "files-dialog" + (opts.wide ? " wide" : ""));
    dlg.setAttribute("aria-label", opts.title);
    const form = el("form");
    form.method = "dialog";
    form.appendChild(el("h2", "files-dialog-title", opts.title));
    (opts.body || []).forEach(function (part) {
      form.appendChild(typeof part === "string" ? el("p", null, part) : part);
    });
    const inputs = {};
    (opts.fields || []).forEach(function (f, i) {
      const label = el("label", "files-field");
      label.appendChild(el("span", null, f.label));
      const input = el("input");
      input.type = "text";
      input.name = f.name;
      input.value = f.value || "";
      input.autocomplete = "off";
      input.spellcheck = false;
      input.setAttribute("data-field", f.name);
      label.appendChild(input);
      if (f.hint) label.appendChild(el("small", "files-hint", f.hint));
      form.appendChild(label);
      inputs[f.name] = input;
      if (i === 0) dlg.firstInput = input;
    });
    const err = el("p", "files-error");
    err.setAttribute("role", "alert");
    err.setAttribute("data-role", "dialog-error");
    err.hidden = true;
    form.appendChild(err);
    if (opts.extra) form.appendChild(opts.extra);
    const row = el("div", "files-dialog-choices");
    let clicked = null;
    (opts.choices || [["ok", "OK", true], ["cancel", "Cancel"]]).forEach(function (c) {
      const b = el("button", "term-btn" + (c[2] ? " primary" : ""), c[1]);
      b.type = c[0] === "cancel" ? "button" : "submit";
      b.value = c[0];
      b.setAttribute("data-choice", c[0]);
      b.addEventListener("click", function () {
        clicked = c[0];
        if (c[0] === "cancel") dlg.close("cancel");
      });
      row.appendChild(b);
    });
    form.appendChild(row);
    dlg.appendChild(form);
    const values = function () {
      const out = {};
      Object.keys(inputs).forEach(function (k) { out[k] = inputs[k].value; });
      return out;
    };
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      const choice = clicked || (opts.choices ? opts.choices.find(function (c) { return c[2]; })[0] : "ok");
      clicked = null;
      if (opts.submit) {
        row.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        let problem = null;
        try { problem = await opts.submit(values(), choice); } catch (ex) { problem = ex.message; }
        row.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
        if (problem) {
          err.textContent = problem;
          err.hidden = false;
          if (dlg.firstInput) { dlg.firstInput.setAttribute("aria-invalid", "true"); dlg.firstInput.focus(); }
          return;
        }
      }
      dlg.close(choice);
    });
    dlg.addEventListener("close", function () {
      const v = dlg.returnValue || "cancel";
      const out = values();
      dlg.remove();
      resolve({ choice: v, values: out });
    });
    host.appendChild(dlg);
    dlg.showModal();
    if (dlg.firstInput) {
      dlg.firstInput.focus();
      const v = dlg.firstInput.value, dot = v.lastIndexOf(".");
      dlg.firstInput.setSelectionRange(0, opts.selectStem && dot > 0 ? dot : v.length);
    }
  });
}

export function copyText(text) {
  if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
    return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return legacyCopy(text); });
  }
  return Promise.resolve(legacyCopy(text));
}

function legacyCopy(text) {
  const ta = el("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.className = "files-offscreen";
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  ta.remove();
  return ok;
}

// POSIX shell quoting: one argument, nothing expands.
export function shellQuote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}
