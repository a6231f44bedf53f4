// Edit a small text file (at most 1 MiB, UTF-8) in CodeMirror 5, loaded on first use.
// Saving sends what was seen at opening (size, mtime and, where the browser can hash,
// SHA-256): the server answers 409 if the file changed on the machine since, and the
// editor asks before overwriting.
import { api, ask, formatSize, loadScript, loadStyle, qs, shownName } from "./filekit.js";
import { el } from "./util.js";

export const EDIT_MAX = 1024 * 1024;
const CM_JS = "/static/vendor/codemirror/codemirror.js";
const CM_CSS = "/static/vendor/codemirror/codemirror.css";

async function sha256(buf) {
  if (!window.crypto || !crypto.subtle) return null; // not a secure context: size + mtime only
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  return Array.prototype.map.call(d, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
}

// Reads the file as the machine has it now: {text, expect} or {error}.
async function fetchFile(base, path) {
  const st = await api("GET", base + "/stat?" + qs({ path: path }));
  if (!st.ok) return { error: st.error };
  if (st.data.type !== "file") return { error: "not a regular file" };
  if (st.data.size > EDIT_MAX) return { error: "too large to edit here (" + formatSize(st.data.size) + "; the limit is 1 MiB): download it instead" };
  let resp;
  try { resp = await fetch(base + "/content?" + qs({ path: path }), { credentials: "same-origin" }); } catch (e) {
    return { error: "the portal could not be reached" };
  }
  if (!resp.ok) {
    let msg = "the server answered " + resp.status;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    return { error: msg };
  }
  const buf = await resp.arrayBuffer();
  if (buf.byteLength > EDIT_MAX) return { error: "the file grew past 1 MiB" };
  const bytes = new Uint8Array(buf);
  if (bytes.indexOf(0) >= 0) return { error: "this looks like a binary file (it holds NUL bytes): download it instead" };
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) {
    return { error: "this is not UTF-8 text: download it instead" };
  }
  // Size and hash of the bytes read; mtime from before the read (a change in between shows
  // up as a conflict at save, never as a silent overwrite).
  return { text: text, expect: { size: buf.byteLength, mtime: st.data.mtime, sha256: await sha256(buf) } };
}

export async function openEditor(drawer, path, entry, readOnly) {
  let CodeMirror;
  loadStyle(CM_CSS);
  try { CodeMirror = await loadScript(CM_JS, "CodeMirror"); } catch (e) { drawer.say(e.message, true); return; }
  const got = await fetchFile(drawer.base, path);
  if (got.error) { drawer.say("Cannot open " + shownName(path) + ": " + got.error, true); return; }
  let expect = got.expect;

  const dlg = el("dialog", "files-editor");
  dlg.setAttribute("aria-label", (readOnly ? "View " : "Edit ") + path);
  dlg.setAttribute("data-role", "files-editor");
  const head = el("header", "files-editor-head");
  const title = el("h2", "files-editor-title", shownName(path));
  title.title = shownName(path);
  head.appendChild(title);
  const state = el("span", "files-editor-state", readOnly ? "read only" : "");
  state.setAttribute("data-role", "editor-state");
  head.appendChild(state);
  const save = el("button", "term-btn primary", "Save");
  save.type = "button";
  save.setAttribute("data-action", "editor-save");
  save.hidden = !!readOnly;
  save.disabled = true;
  const close = el("button", "term-btn", "Close");
  close.type = "button";
  close.setAttribute("data-action", "editor-close");
  head.appendChild(save);
  head.appendChild(close);
  dlg.appendChild(head);
  const host = el("div", "files-editor-host");
  dlg.appendChild(host);
  const msg = el("p", "files-editor-msg");
  msg.setAttribute("role", "status");
  msg.setAttribute("data-role", "editor-msg");
  dlg.appendChild(msg);
  drawer.dialogHost().appendChild(dlg);
  dlg.showModal();

  const cm = CodeMirror(host, {
    value: got.text,
    lineNumbers: true,
    lineWrapping: false,
    readOnly: !!readOnly,
    indentUnit: 4,
    lineSeparator: got.text.indexOf("\r\n") >= 0 ? "\r\n" : null, // keep CRLF files CRLF
    extraKeys: {
      "Ctrl-S": function () { doSave(false); },
      "Cmd-S": function () { doSave(false); }
    }
  });
  let clean = cm.changeGeneration(true);
  const dirty = function () { return !cm.isClean(clean); };
  const refresh = function () {
    save.disabled = !dirty();
    if (!readOnly) state.textContent = dirty() ? "modified" : "saved";
  };
  cm.on("changes", refresh);
  refresh();
  state.textContent = readOnly ? "read only" : "";
  cm.refresh();
  cm.focus();
  drawer.editor = { cm: cm, path: path, dialog: dlg };

  let saving = false;
  async function doSave(force) {
    if (readOnly || saving) return;
    saving = true;
    save.disabled = true;
    msg.textContent = "saving\u2026";
    const gen = cm.changeGeneration(true);
    const text = cm.getValue();
    const params = { path: path, overwrite: 1 };
    if (!force && expect) {
      params.expect_size = expect.size;
      params.expect_mtime = expect.mtime;
      if (expect.sha256) params.expect_sha256 = expect.sha256;
    }
    const r = await api("PUT", drawer.base + "/content?" + qs(params), text);
    saving = false;
    if (r.ok) {
      clean = gen;
      const st = await api("GET", drawer.base + "/stat?" + qs({ path: path }));
      expect = { size: r.data.size, mtime: st.ok ? st.data.mtime : null, sha256: r.data.sha256 };
      msg.textContent = "Saved " + formatSize(r.data.size) + " at " + new Date().toLocaleTimeString();
      refresh();
      cm.focus();
      if (drawer.path) drawer.load(drawer.path);
      return;
    }
    refresh();
    if (r.status === 409 && r.data && r.data.changed) {
      msg.textContent = r.error;
      const a = await ask(dlg, {
        title: "Changed on the machine",
        body: [shownName(path) + ": " + r.error + ".", "Overwrite it with your version, or keep editing (copy your changes, then reopen the file to see theirs)?"],
        choices: [["overwrite", "Overwrite theirs"], ["cancel", "Keep editing", true]]
      });
      if (a.choice === "overwrite") { doSave(true); return; }
      msg.textContent = "Not saved: the file changed on the machine.";
      return;
    }
    msg.textContent = "Not saved: " + r.error;
  }

  save.addEventListener("click", function () { doSave(false); });
  async function tryClose() {
    if (!readOnly && dirty()) {
      const a = await ask(dlg, {
        title: "Discard your changes?",
        body: ["The changes to " + shownName(path) + " are not saved."],
        choices: [["discard", "Discard"], ["cancel", "Keep editing", true]]
      });
      if (a.choice !== "discard") { cm.focus(); return; }
    }
    dlg.close();
  }
  close.addEventListener("click", tryClose);
  dlg.addEventListener("cancel", function (e) { e.preventDefault(); tryClose(); }); // Esc
  dlg.addEventListener("close", function () {
    dlg.remove();
    if (drawer.editor && drawer.editor.dialog === dlg) drawer.editor = null;
  });
}
