// The files drawer: browse a machine's files beside the terminal (a side panel; a full-screen
// sheet on phones), upload by drop or picker with tus (resumable across reloads), download,
// zip a folder, new folder, rename, delete, chmod, copy path, a terminal here, edit.
// Also the body of the standalone files page (/machines/<id>/files, viewers included).
// The server enforces roles; the page only hides what the role cannot do.
import { openEditor, EDIT_MAX } from "./editor.js";
import {
  api, apiBase, ask, copyText, formatSize, formatTime, joinPath, loadScript, parentOf, qs,
  shellQuote, shownName
} from "./filekit.js";
import { csrfToken, el, store } from "./util.js";

const PAGE = 200;
const STORE_STATE = "portal.files."; // + agent id, sessionStorage: {open, path, hidden}
const TUS_SRC = "/static/vendor/tus-js-client/tus.min.js";
const WRITE_ROLES = ["operator", "admin"];
const PARALLEL = 3; // uploads running at once; the rest wait their turn

function icon(kind) {
  const s = el("span", "files-icon files-icon-" + kind);
  s.setAttribute("aria-hidden", "true");
  return s;
}

// A picked or dropped file as {file, rel}: rel is its path inside the folder it came with
// ("top/a/b.txt", from the folder picker or a dropped folder), else its name.
function asItem(f) {
  return f && f.file ? f : { file: f, rel: f.webkitRelativePath || f.name };
}

// Every entry of a dropped folder: readEntries answers in batches until an empty one.
function readAll(reader) {
  return new Promise(function (resolve, reject) {
    const out = [];
    const next = function () {
      reader.readEntries(function (batch) {
        if (!batch.length) { resolve(out); return; }
        Array.prototype.push.apply(out, batch);
        next();
      }, reject);
    };
    next();
  });
}

// A dropped entry (file or folder, walked recursively) into found.items as {file, rel}; a
// folder with nothing in it into found.folders as its rel (no file carries it to the machine).
async function walkEntry(entry, prefix, found, failed) {
  const rel = prefix ? prefix + "/" + entry.name : entry.name;
  try {
    if (entry.isFile) {
      found.items.push({ file: await new Promise(function (res, rej) { entry.file(res, rej); }), rel: rel });
    } else if (entry.isDirectory) {
      const children = await readAll(entry.createReader());
      if (!children.length) found.folders.push(rel);
      for (let i = 0; i < children.length; i++) await walkEntry(children[i], rel, found, failed);
    }
  } catch (e) {
    failed.push(rel);
  }
}

function button(cls, text, action, title) {
  const b = el("button", cls, text);
  b.type = "button";
  if (action) b.setAttribute("data-action", action);
  if (title) { b.title = title; b.setAttribute("aria-label", title); }
  return b;
}

export class FilesDrawer {
  // app: the terminal page (tabs, OSC 7 folders) or null on the files page.
  constructor(app, root, opts) {
    this.app = app;
    this.root = root;
    this.page = !!(opts && opts.page);
    this.agentId = root.getAttribute("data-agent-id");
    this.machineName = root.getAttribute("data-machine-name") || this.agentId;
    this.base = apiBase(this.agentId);
    this.box = root.querySelector("[data-role=files]");
    this.toggleBtn = root.querySelector("[data-action=files]");
    this.path = null; // the folder shown (absolute, as the server resolved it)
    this.entries = [];
    this.total = 0;
    this.sort = { key: "name", dir: 1 };
    this.hidden = false;
    this.canWrite = false;
    this.uploads = []; // live and finished uploads of this page (tests read them)
    this.queue = [];
    this.running = 0;
    this.chunkSize = 16 * 1024 * 1024; // tus PATCH size: a proxy's body cap never bites
    // A file this small goes with its creation (tus creation-with-upload): one request, not
    // two, which is what a folder of many small files costs. A larger one is created first,
    // so that a cut connection resumes it from the machine's offset.
    this.withCreationMax = 1024 * 1024;
    this.loadSeq = 0;
    const saved = this.savedState();
    this.hidden = !!saved.hidden;
    this.build();
    this.bind();
    this.role = this.fetchRole();
    if (this.page || saved.open) this.toggle(true, saved.path || null);
  }

  // ---- remembered per browser tab (a reload comes back to the same folder)

  savedState() {
    try { return JSON.parse(store("session", STORE_STATE + this.agentId) || "{}") || {}; } catch (e) { return {}; }
  }

  saveState() {
    store("session", STORE_STATE + this.agentId, JSON.stringify({
      open: !this.box.hidden, path: this.path, hidden: this.hidden
    }));
  }

  // ---- role: viewers browse and download; operators and admins change things

  fetchRole() {
    const given = this.root.getAttribute("data-files-role");
    const done = (role) => {
      this.canWrite = WRITE_ROLES.indexOf(role) >= 0;
      this.box.setAttribute("data-can-write", this.canWrite ? "true" : "false");
      this.box.querySelectorAll("[data-write]").forEach((n) => { n.hidden = !this.canWrite; });
      this.readonlyNote.hidden = this.canWrite || !role;
      if (this.entries.length) this.renderRows();
      return role;
    };
    if (given) return Promise.resolve(done(given));
    return api("GET", "/api/machines/" + encodeURIComponent(this.agentId)).then(function (r) {
      return done(r.ok && r.data && r.data.machine ? r.data.machine.my_role : null);
    });
  }

  // ---- building

  build() {
    const box = this.box;
    box.textContent = "";
    box.classList.add("files-drawer");
    box.setAttribute("aria-label", "Files on " + this.machineName);

    const head = el("header", "files-head");
    const title = el("h2", "files-title", "Files");
    this.readonlyNote = el("span", "files-readonly", "view only");
    this.readonlyNote.hidden = true;
    title.appendChild(this.readonlyNote);
    head.appendChild(title);
    const acts = el("div", "files-head-actions");
    this.uploadBtn = button("term-btn", "Upload", "files-upload", "Upload files to this folder");
    this.uploadBtn.setAttribute("data-write", "");
    this.uploadDirBtn = button("term-btn", "Upload folder", "files-upload-folder", "Upload a folder (and everything in it) to this folder");
    this.uploadDirBtn.setAttribute("data-write", "");
    // Browsers without a folder picker keep the button hidden (drop still works where it can).
    if (!("webkitdirectory" in document.createElement("input"))) this.uploadDirBtn.removeAttribute("data-write");
    this.mkdirBtn = button("term-btn", "New folder", "files-mkdir", "New folder here");
    this.mkdirBtn.setAttribute("data-write", "");
    this.uploadBtn.hidden = this.uploadDirBtn.hidden = this.mkdirBtn.hidden = true;
    acts.appendChild(this.uploadBtn);
    acts.appendChild(this.uploadDirBtn);
    acts.appendChild(this.mkdirBtn);
    acts.appendChild(button("term-btn", "\u27f3", "files-refresh", "Reload the listing"));
    if (!this.page) acts.appendChild(button("term-btn files-close", "\u00d7", "files-close", "Close the files panel"));
    head.appendChild(acts);
    box.appendChild(head);

    this.crumbs = el("nav", "files-crumbs");
    this.crumbs.setAttribute("aria-label", "Folder path");
    this.crumbs.setAttribute("data-role", "files-crumbs");
    box.appendChild(this.crumbs);

    this.pathForm = el("form", "files-pathform");
    this.pathInput = el("input");
    this.pathInput.type = "text";
    this.pathInput.spellcheck = false;
    this.pathInput.autocomplete = "off";
    this.pathInput.setAttribute("aria-label", "Folder path");
    this.pathInput.setAttribute("data-role", "files-path");
    this.pathForm.appendChild(this.pathInput);
    const go = el("button", "term-btn", "Go");
    go.type = "submit";
    this.pathForm.appendChild(go);
    box.appendChild(this.pathForm);
    this.pathError = el("p", "files-error");
    this.pathError.setAttribute("role", "alert");
    this.pathError.setAttribute("data-role", "files-path-error");
    this.pathError.hidden = true;
    box.appendChild(this.pathError);

    const opts = el("div", "files-options");
    const hid = el("label", "files-check");
    this.hiddenBox = el("input");
    this.hiddenBox.type = "checkbox";
    this.hiddenBox.checked = this.hidden;
    this.hiddenBox.setAttribute("data-role", "files-hidden");
    hid.appendChild(this.hiddenBox);
    hid.appendChild(document.createTextNode(" Hidden files"));
    opts.appendChild(hid);
    this.countEl = el("span", "files-count");
    opts.appendChild(this.countEl);
    this.zipLink = el("a", "files-zip", "Folder as zip");
    this.zipLink.setAttribute("data-role", "files-zip");
    opts.appendChild(this.zipLink);
    box.appendChild(opts);

    this.msg = el("p", "files-msg");
    this.msg.setAttribute("role", "status");
    this.msg.setAttribute("aria-live", "polite");
    this.msg.setAttribute("data-role", "files-msg");
    this.msg.hidden = true;
    box.appendChild(this.msg);

    this.unfinishedEl = el("section", "files-unfinished");
    this.unfinishedEl.setAttribute("data-role", "files-unfinished");
    this.unfinishedEl.hidden = true;
    box.appendChild(this.unfinishedEl);
    this.uploadsEl = el("section", "files-uploads");
    this.uploadsEl.setAttribute("data-role", "files-uploads");
    this.uploadsEl.setAttribute("aria-label", "Uploads");
    box.appendChild(this.uploadsEl);

    const wrap = el("div", "files-table-wrap");
    const table = el("table", "files-table");
    const thead = el("thead");
    const tr = el("tr");
    this.headCells = {};
    [["name", "Name"], ["size", "Size"], ["mtime", "Modified"], ["mode", "Mode"], ["owner", "Owner"]].forEach(([key, label]) => {
      const th = el("th", "files-col-" + key);
      th.scope = "col";
      const b = button("files-sort", label);
      b.setAttribute("data-sort", key);
      th.appendChild(b);
      tr.appendChild(th);
      this.headCells[key] = th;
    });
    const thAct = el("th", "files-col-act");
    thAct.appendChild(el("span", "files-offscreen", "Actions"));
    tr.appendChild(thAct);
    thead.appendChild(tr);
    table.appendChild(thead);
    this.tbody = el("tbody");
    this.tbody.setAttribute("data-role", "files-rows");
    table.appendChild(this.tbody);
    wrap.appendChild(table);
    this.emptyEl = el("p", "files-empty", "This folder is empty.");
    this.emptyEl.hidden = true;
    wrap.appendChild(this.emptyEl);
    this.moreBtn = button("term-btn files-more", "Show more", "files-more");
    this.moreBtn.hidden = true;
    wrap.appendChild(this.moreBtn);
    box.appendChild(wrap);
    this.tableWrap = wrap;

    this.menu = el("div", "files-menu");
    this.menu.setAttribute("role", "menu");
    this.menu.setAttribute("data-role", "files-menu");
    this.menu.hidden = true;
    box.appendChild(this.menu);

    this.dropHint = el("div", "files-drop");
    this.dropHint.setAttribute("data-role", "files-drop");
    this.dropHint.hidden = true;
    box.appendChild(this.dropHint);

    this.fileInput = el("input");
    this.fileInput.type = "file";
    this.fileInput.multiple = true;
    this.fileInput.hidden = true;
    this.fileInput.setAttribute("data-role", "files-input");
    box.appendChild(this.fileInput);
    this.folderInput = el("input");
    this.folderInput.type = "file";
    this.folderInput.multiple = true;
    this.folderInput.webkitdirectory = true;
    this.folderInput.hidden = true;
    this.folderInput.setAttribute("data-role", "files-folder-input");
    box.appendChild(this.folderInput);
  }

  bind() {
    this.box.addEventListener("click", (e) => {
      const b = e.target.closest("[data-action], [data-sort]");
      if (!b || !this.box.contains(b)) return;
      const sortKey = b.getAttribute("data-sort");
      if (sortKey) { this.setSort(sortKey); return; }
      switch (b.getAttribute("data-action")) {
        case "files-close": this.toggle(false); break;
        case "files-refresh": this.load(this.path || "."); break;
        case "files-upload": this.pick(); break;
        case "files-upload-folder": this.folderInput.click(); break;
        case "files-mkdir": this.mkdir(); break;
        case "files-more": this.load(this.path, true); break;
        case "files-crumb": this.load(b.getAttribute("data-path")); break;
        case "files-open": this.load(joinPath(this.path, this.entryOf(b).name)); break;
        case "files-row-menu": this.openMenu(b, this.entryOf(b)); break;
        default: return;
      }
    });
    this.pathForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const p = this.pathInput.value.trim();
      if (p) this.load(p);
    });
    this.hiddenBox.addEventListener("change", () => {
      this.hidden = this.hiddenBox.checked;
      this.load(this.path || ".");
    });
    [this.fileInput, this.folderInput].forEach((input) => {
      input.addEventListener("change", () => {
        const files = Array.prototype.slice.call(input.files || []);
        input.value = "";
        if (files.length) this.uploadFiles(files, this.path);
      });
    });
    document.addEventListener("click", (e) => {
      if (!this.menu.hidden && !e.target.closest("[data-role=files-menu], [data-action=files-row-menu]")) this.closeMenu();
    });
    this.box.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !this.menu.hidden) { e.preventDefault(); this.closeMenu(); }
    });
    // Drop onto the drawer, or onto the terminal (then into the drawer's folder).
    const zones = [this.box];
    const panes = this.root.querySelector("[data-role=panes]");
    if (panes) zones.push(panes);
    zones.forEach((zone) => {
      zone.addEventListener("dragover", (e) => {
        if (!this.canWrite || !e.dataTransfer || Array.prototype.indexOf.call(e.dataTransfer.types || [], "Files") < 0) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        this.showDrop(true);
      });
      zone.addEventListener("dragleave", (e) => {
        if (!e.relatedTarget || !zone.contains(e.relatedTarget)) this.showDrop(false);
      });
      zone.addEventListener("drop", (e) => {
        if (!this.canWrite || !e.dataTransfer || !e.dataTransfer.files || !e.dataTransfer.files.length) return;
        e.preventDefault();
        this.showDrop(false);
        // The entries must be taken now: the drop's data is gone once the handler returns.
        const files = Array.prototype.slice.call(e.dataTransfer.files);
        const entries = Array.prototype.slice.call(e.dataTransfer.items || [])
          .filter(function (it) { return it.kind === "file"; })
          .map(function (it) { return it.webkitGetAsEntry ? it.webkitGetAsEntry() : null; });
        const start = this.box.hidden ? this.toggle(true) : Promise.resolve();
        start.then(() => this.droppedItems(files, entries)).then((found) => {
          const folder = this.path;
          const started = found.items.length ? this.uploadFiles(found.items, folder) : Promise.resolve();
          if (found.folders.length) started.then(() => this.makeFolders(found.folders, folder));
        });
      });
    });
  }

  // {items, folders}: the dropped files as they are; with a folder among them, every file
  // in it with its path, and its empty folders.
  async droppedItems(files, entries) {
    if (entries.length !== files.length || !entries.some(function (en) { return en && en.isDirectory; })) {
      return { items: files, folders: [] };
    }
    const found = { items: [], folders: [] }, failed = [];
    for (let i = 0; i < entries.length; i++) {
      if (entries[i]) await walkEntry(entries[i], "", found, failed);
      else found.items.push(asItem(files[i]));
    }
    if (failed.length) this.say("Could not read " + failed.map(shownName).join(", ") + ": not uploaded", true);
    return found;
  }

  showDrop(on) {
    this.dropHint.textContent = "Drop to upload to " + shownName(this.path || "your home folder");
    this.dropHint.hidden = !on;
    this.box.classList.toggle("dropping", on);
  }

  // ---- open / close

  toggle(show, path) {
    if (show === undefined) show = this.box.hidden;
    this.box.hidden = !show;
    this.root.classList.toggle("files-open", show);
    if (this.toggleBtn) this.toggleBtn.setAttribute("aria-pressed", show ? "true" : "false");
    this.closeMenu();
    if (this.app && this.app.active) requestAnimationFrame(() => this.app.active && this.app.active.fit());
    this.saveState();
    if (!show) {
      if (this.app && this.app.active && !this.app.touchLike) this.app.active.term.focus();
      return Promise.resolve();
    }
    this.showUnfinished();
    // Where to open: the asked folder, else the shell's folder (OSC 7), else home.
    const cwd = this.app && this.app.active ? this.app.active.cwd : null;
    const target = path || cwd || this.path || ".";
    if (target !== this.path || !this.entries.length) return this.load(target);
    return Promise.resolve();
  }

  // The shell reports its folder with OSC 7 (file://host/path): xterm's public parser hook.
  watchTab(tab) {
    tab.cwd = null;
    tab.term.parser.registerOscHandler(7, (data) => {
      const m = /^file:\/\/[^/]*(\/.*)$/.exec(data || "");
      if (m) {
        try { tab.cwd = decodeURIComponent(m[1]); } catch (e) { tab.cwd = null; }
      }
      return true;
    });
  }

  // ---- listing

  async load(path, append) {
    const seq = ++this.loadSeq;
    const offset = append ? this.entries.length : 0;
    this.moreBtn.disabled = true;
    this.box.setAttribute("aria-busy", "true");
    const r = await api("GET", this.base + "?" + qs({ path: path || ".", hidden: this.hidden ? 1 : "", limit: PAGE, offset: offset }));
    if (seq !== this.loadSeq) return;
    this.box.removeAttribute("aria-busy");
    this.moreBtn.disabled = false;
    if (!r.ok) {
      this.pathError.textContent = r.error;
      this.pathError.hidden = false;
      this.pathInput.setAttribute("aria-invalid", "true");
      if (!this.path) this.pathInput.value = path;
      return;
    }
    this.pathError.hidden = true;
    this.pathInput.removeAttribute("aria-invalid");
    this.path = r.data.path;
    this.entries = append ? this.entries.concat(r.data.entries) : r.data.entries;
    this.total = r.data.total;
    this.pathInput.value = this.path;
    this.renderCrumbs();
    this.renderRows();
    this.zipLink.href = this.base + "/zip?" + qs({ path: this.path });
    this.zipLink.setAttribute("download", "");
    this.saveState();
  }

  renderCrumbs() {
    this.crumbs.textContent = "";
    const parts = this.path.split("/").filter(Boolean);
    const root = button("files-crumb", "/", "files-crumb");
    root.setAttribute("data-path", "/");
    this.crumbs.appendChild(root);
    let acc = "";
    parts.forEach((p, i) => {
      acc += "/" + p;
      if (i) this.crumbs.appendChild(el("span", "files-crumb-sep", "/"));
      const b = button("files-crumb", shownName(p), "files-crumb");
      b.setAttribute("data-path", acc);
      if (i === parts.length - 1) b.setAttribute("aria-current", "location");
      this.crumbs.appendChild(b);
    });
    this.crumbs.scrollLeft = this.crumbs.scrollWidth;
  }

  setSort(key) {
    this.sort = { key: key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.renderRows();
  }

  sorted() {
    const key = this.sort.key, dir = this.sort.dir;
    const isDir = function (e) { return e.type === "dir" || e.link_to === "dir"; };
    const val = function (e) {
      if (key === "owner") return (e.uid || 0) * 1e6 + (e.gid || 0);
      if (key === "mode") return e.permissions;
      if (key === "name") return e.name;
      return e[key] || 0;
    };
    return this.entries.slice().sort(function (a, b) {
      if (isDir(a) !== isDir(b)) return isDir(a) ? -1 : 1; // folders first, whatever the order
      const x = val(a), y = val(b);
      if (typeof x === "string") return dir * (x < y ? -1 : x > y ? 1 : 0);
      return dir * (x - y) || (a.name < b.name ? -1 : 1);
    });
  }

  renderRows() {
    Object.keys(this.headCells).forEach((k) => {
      const on = this.sort.key === k;
      if (on) this.headCells[k].setAttribute("aria-sort", this.sort.dir > 0 ? "ascending" : "descending");
      else this.headCells[k].removeAttribute("aria-sort");
    });
    this.tbody.textContent = "";
    this.sorted().forEach((e) => { this.tbody.appendChild(this.row(e)); });
    this.emptyEl.hidden = this.entries.length > 0;
    this.countEl.textContent = this.total === this.entries.length
      ? this.total + (this.total === 1 ? " item" : " items")
      : this.entries.length + " of " + this.total + " items";
    this.moreBtn.hidden = this.entries.length >= this.total;
    this.moreBtn.textContent = "Show more (" + (this.total - this.entries.length) + " left)";
  }

  row(e) {
    const tr = el("tr");
    const isDir = e.type === "dir" || e.link_to === "dir";
    tr.setAttribute("data-name", e.name);
    tr.setAttribute("data-type", isDir ? "dir" : e.type);
    tr.entry = e;
    const name = el("td", "files-col-name");
    const label = shownName(e.name);
    if (isDir) {
      const b = button("files-name", "", "files-open");
      b.appendChild(icon(e.type === "link" ? "link" : "dir"));
      b.appendChild(el("span", null, label));
      name.appendChild(b);
    } else if (e.type === "file" || e.link_to === "file") {
      const a = el("a", "files-name");
      a.href = this.base + "/content?" + qs({ path: joinPath(this.path, e.name) });
      a.setAttribute("download", "");
      a.title = "Download " + label;
      a.appendChild(icon(e.type === "link" ? "link" : "file"));
      a.appendChild(el("span", null, label));
      name.appendChild(a);
    } else {
      const s = el("span", "files-name");
      s.appendChild(icon("other"));
      s.appendChild(el("span", null, label));
      name.appendChild(s);
    }
    tr.appendChild(name);
    tr.appendChild(el("td", "files-col-size", isDir ? "" : formatSize(e.size)));
    const mt = el("td", "files-col-mtime", formatTime(e.mtime));
    if (e.mtime) mt.title = new Date(e.mtime * 1000).toString();
    tr.appendChild(mt);
    tr.appendChild(el("td", "files-col-mode", e.permissions));
    tr.appendChild(el("td", "files-col-owner", e.uid + ":" + e.gid));
    const act = el("td", "files-col-act");
    const m = button("files-row-btn", "\u22ef", "files-row-menu", "Actions for " + label);
    m.setAttribute("aria-haspopup", "menu");
    act.appendChild(m);
    tr.appendChild(act);
    return tr;
  }

  entryOf(node) {
    const tr = node.closest("tr");
    return tr ? tr.entry : null;
  }

  // ---- the row's action menu

  openMenu(btn, e) {
    if (!e) return;
    if (!this.menu.hidden && this.menu.forName === e.name) { this.closeMenu(); return; }
    const full = joinPath(this.path, e.name);
    const isDir = e.type === "dir" || e.link_to === "dir";
    const isFile = e.type === "file" || e.link_to === "file";
    const items = [];
    if (isDir) items.push(["open", "Open"]);
    if (isFile) items.push(["download", "Download"]);
    if (isDir) items.push(["zip", "Download as zip"]);
    if (isFile && (e.size || 0) <= EDIT_MAX) items.push(["edit", this.canWrite ? "Edit" : "View"]);
    if (this.canWrite) items.push(["rename", "Rename or move\u2026"], ["chmod", "Permissions\u2026"]);
    items.push(["copy", "Copy path"]);
    if (isDir && this.canWrite && this.app) items.push(["terminal", "Open a terminal here"]);
    if (this.canWrite) items.push(["delete", "Delete\u2026"]);
    this.menu.textContent = "";
    this.menu.forName = e.name;
    items.forEach(([act, text]) => {
      let item;
      if (act === "download" || act === "zip") {
        item = el("a", "files-menu-item", text);
        item.href = this.base + (act === "zip" ? "/zip?" : "/content?") + qs({ path: full });
        item.setAttribute("download", "");
        item.addEventListener("click", () => this.closeMenu());
      } else {
        item = button("files-menu-item", text);
        item.addEventListener("click", () => { this.closeMenu(); this.act(act, e, full); });
      }
      item.setAttribute("role", "menuitem");
      item.setAttribute("data-menu", act);
      if (act === "delete") item.classList.add("danger");
      this.menu.appendChild(item);
    });
    this.menu.hidden = false;
    const r = btn.getBoundingClientRect(), host = this.box.getBoundingClientRect();
    const h = this.menu.offsetHeight, w = this.menu.offsetWidth;
    let top = r.bottom - host.top + 2;
    if (top + h > host.height) top = Math.max(4, r.top - host.top - h - 2);
    this.menu.style.top = top + "px";
    this.menu.style.left = Math.max(4, r.right - host.left - w) + "px";
    const first = this.menu.querySelector("[role=menuitem]");
    if (first) first.focus();
  }

  closeMenu() {
    this.menu.hidden = true;
    this.menu.forName = null;
  }

  act(action, e, full) {
    switch (action) {
      case "open": this.load(full); break;
      case "edit": openEditor(this, full, e, !this.canWrite); break;
      case "rename": this.rename(e, full); break;
      case "chmod": this.chmod(e, full); break;
      case "delete": this.remove(e, full); break;
      case "copy":
        copyText(full).then((ok) => this.say(ok ? "Copied " + shownName(full) : "Could not copy: select it in the path field", !ok));
        break;
      case "terminal": this.terminalHere(full); break;
      default: break;
    }
  }

  say(text, bad) {
    this.msg.textContent = text;
    this.msg.hidden = !text;
    this.msg.classList.toggle("bad", !!bad);
    clearTimeout(this.msgTimer);
    if (text && !bad) this.msgTimer = setTimeout(() => { this.msg.hidden = true; }, 4000);
  }

  dialogHost() { return this.root; }

  // The empty folders of a dropped folder (mkdir -p: the folders on the way may not be
  // there when no file made them). Sent once the folder's uploads have started, so their
  // "is the folder new?" check still sees it missing.
  async makeFolders(rels, folder) {
    const failed = [];
    for (let i = 0; i < rels.length; i++) {
      const res = await api("POST", this.base + "/mkdir", { path: joinPath(folder, rels[i]), parents: true });
      if (!res.ok) failed.push(shownName(rels[i]) + " (" + res.error + ")");
    }
    if (failed.length) this.say("Could not make the folder " + failed.join(", "), true);
    if (this.path === folder) this.load(this.path);
  }

  async mkdir() {
    const r = await ask(this.dialogHost(), {
      title: "New folder in " + shownName(this.path),
      fields: [{ name: "name", label: "Name", value: "" }],
      choices: [["create", "Create", true], ["cancel", "Cancel"]],
      submit: async (v) => {
        if (!v.name.trim()) return "Give the folder a name.";
        const res = await api("POST", this.base + "/mkdir", { path: joinPath(this.path, v.name) });
        return res.ok ? null : res.error;
      }
    });
    if (r.choice === "create") { this.say("Created " + shownName(r.values.name)); this.load(this.path); }
  }

  async rename(e, full) {
    const r = await ask(this.dialogHost(), {
      title: "Rename " + shownName(e.name),
      fields: [{ name: "to", label: "New name (or a path to move it)", value: e.name }],
      choices: [["rename", "Rename", true], ["cancel", "Cancel"]],
      selectStem: true,
      submit: async (v) => {
        const to = v.to.trim();
        if (!to) return "Give it a name.";
        if (to === e.name) return null;
        const res = await api("POST", this.base + "/rename", { path: full, to: to.startsWith("/") ? to : joinPath(this.path, to) });
        return res.ok ? null : res.error;
      }
    });
    if (r.choice === "rename") { this.say("Renamed to " + shownName(r.values.to)); this.load(this.path); }
  }

  async chmod(e, full) {
    const r = await ask(this.dialogHost(), {
      title: "Permissions of " + shownName(e.name),
      body: ["Now " + e.permissions + " (" + e.mode + "). Enter an octal mode, e.g. 0644 or 0755."],
      fields: [{ name: "mode", label: "Mode", value: e.mode }],
      choices: [["chmod", "Apply", true], ["cancel", "Cancel"]],
      submit: async (v) => {
        const mode = v.mode.trim();
        if (!/^0?[0-7]{3,4}$/.test(mode)) return "An octal mode such as 0644.";
        const res = await api("POST", this.base + "/chmod", { path: full, mode: mode.length === 3 ? "0" + mode : mode });
        return res.ok ? null : res.error;
      }
    });
    if (r.choice === "chmod") { this.say("Permissions changed"); this.load(this.path); }
  }

  // Delete asks first and lists what goes (a folder's first entries, and how many in all).
  async remove(e, full) {
    const isDir = e.type === "dir";
    const list = el("ul", "files-goes");
    list.setAttribute("data-role", "files-goes");
    const first = el("li");
    first.appendChild(el("strong", null, shownName(full) + (isDir ? "/" : "")));
    if (!isDir) first.appendChild(document.createTextNode(" (" + formatSize(e.size) + ")"));
    list.appendChild(first);
    const body = [list];
    if (isDir) {
      const r = await api("GET", this.base + "?" + qs({ path: full, hidden: 1, limit: 20 }));
      if (r.ok) {
        r.data.entries.forEach(function (c) {
          list.appendChild(el("li", null, shownName(full + "/" + c.name) + (c.type === "dir" ? "/ (and everything in it)" : "")));
        });
        if (r.data.total > r.data.entries.length) list.appendChild(el("li", null, "\u2026 and " + (r.data.total - r.data.entries.length) + " more"));
        body.unshift(r.data.total ? "This folder and everything in it (" + r.data.total + " entries at its top level) will be deleted:" : "This empty folder will be deleted:");
      } else {
        body.unshift("This folder and everything in it will be deleted (its contents could not be listed: " + r.error + "):");
      }
    } else {
      body.unshift("This file will be deleted:");
    }
    body.push("This cannot be undone.");
    const res = await ask(this.dialogHost(), {
      title: "Delete " + shownName(e.name) + "?",
      body: body,
      choices: [["delete", "Delete", true], ["cancel", "Cancel"]],
      submit: async () => {
        const d = await api("POST", this.base + "/delete", { path: full });
        return d.ok ? null : d.error;
      }
    });
    if (res.choice === "delete") { this.say("Deleted " + shownName(e.name)); this.load(this.path); }
  }

  // A new terminal tab whose shell starts with `cd -- '<path>'` (typed after it is ready:
  // the terminal socket has no start-folder parameter).
  terminalHere(full) {
    if (!this.app) return;
    if (/[\u0000-\u001f\u007f]/.test(full)) { this.say("That path holds control characters: cd there by hand.", true); return; }
    const tab = this.app.newTab({});
    tab.initialInput = "cd -- " + shellQuote(full) + "\r";
    if (this.app.touchLike) this.toggle(false);
  }

  // ---- uploads (tus: resumable; the fingerprint names machine, folder and file)

  pick() { this.fileInput.click(); }

  tus() { return loadScript(TUS_SRC, "tus"); }

  // rel: the file's path inside an uploaded folder, else its name.
  fingerprint(folder, file, rel) {
    return ["portal-tus", this.agentId, folder, rel || file.name, file.size, file.lastModified].join("\u0000");
  }

  // files: Files, or {file, rel} for the files of a folder (the server makes its folders).
  async uploadFiles(files, folder) {
    folder = folder || this.path || ".";
    const items = files.map(asItem);
    let tus;
    try { tus = await this.tus(); } catch (e) { this.say(e.message, true); return; }
    let sameForAll = null;
    const groups = {}; // top folder -> its summary row (counted first: it ends when all did)
    const topOf = function (rel) { return rel.indexOf("/") > 0 ? rel.split("/")[0] : null; };
    items.forEach((it) => {
      const top = topOf(it.rel);
      if (top) (groups[top] = groups[top] || this.uploadGroup(top, folder)).add();
    });
    const freshTop = {}; // top folder -> true when it is not on the machine (nothing to clash with)
    for (let i = 0; i < items.length; i++) {
      const file = items[i].file, rel = items[i].rel;
      const top = topOf(rel);
      const group = top ? groups[top] : null;
      const target = joinPath(folder, rel);
      let conflict = "fail";
      const resuming = await this.previousUpload(tus, folder, file, rel);
      if (top && !resuming && freshTop[top] === undefined) {
        const t = await api("GET", this.base + "/stat?" + qs({ path: joinPath(folder, top) }));
        freshTop[top] = t.status === 404;
      }
      if (!resuming && !(top && freshTop[top])) {
        const st = await api("GET", this.base + "/stat?" + qs({ path: target }));
        if (st.ok) {
          if (st.data.type === "dir") {
            this.say(shownName(rel) + " is a folder here: not uploaded", true);
            if (group) group.end("failed");
            continue;
          }
          let choice = sameForAll;
          if (!choice) {
            const rest = items.length - i - 1;
            let all = null;
            if (rest > 0) {
              all = el("label", "files-check");
              const cb = el("input");
              cb.type = "checkbox";
              cb.setAttribute("data-role", "same-for-all");
              all.appendChild(cb);
              all.appendChild(document.createTextNode(" The same for the other " + rest + " file" + (rest > 1 ? "s" : "")));
            }
            const a = await ask(this.dialogHost(), {
              title: shownName(rel) + " already exists",
              body: ["A file named " + shownName(file.name) + " (" + formatSize(st.data.size) + ", " + formatTime(st.data.mtime) + ") is already in " + shownName(parentOf(target)) + "."],
              extra: all,
              choices: [["overwrite", "Overwrite"], ["keep", "Keep both", true], ["skip", "Skip"]]
            });
            choice = a.choice === "cancel" ? "skip" : a.choice;
            if (all && all.querySelector("input").checked) sameForAll = choice;
          }
          if (choice === "skip") {
            this.say("Skipped " + shownName(rel));
            if (group) group.end("skipped");
            continue;
          }
          conflict = choice;
        }
      }
      this.startUpload(tus, file, folder, conflict, resuming, rel, group);
    }
    this.showUnfinished(); // those now continuing leave the list
  }

  // One line per uploaded folder: how many of its files are done, skipped or failed.
  uploadGroup(top, folder) {
    const line = el("div", "files-upload-group");
    line.setAttribute("data-role", "upload-group");
    line.setAttribute("data-group-name", top);
    line.setAttribute("data-state", "uploading");
    this.uploadsEl.insertBefore(line, this.uploadsEl.firstChild);
    const n = { total: 0, done: 0, skipped: 0, failed: 0, cancelled: 0 };
    const show = () => {
      const settled = n.done + n.skipped + n.failed + n.cancelled;
      const finished = settled === n.total;
      line.setAttribute("data-state", !finished ? "uploading" : n.failed ? "failed" : "done");
      line.textContent = shownName(top) + "/ \u2192 " + shownName(folder) + ": " + n.done + " of " + n.total + " files uploaded" +
        (n.skipped ? " \u00b7 " + n.skipped + " skipped" : "") + (n.failed ? " \u00b7 " + n.failed + " failed" : "") +
        (n.cancelled ? " \u00b7 " + n.cancelled + " cancelled" : "");
      if (finished && !n.failed) setTimeout(function () { line.remove(); }, 15000);
    };
    return {
      add: function () { n.total++; show(); },
      end: function (how) { n[how]++; show(); },
      undo: function (how) { n[how]--; show(); }
    };
  }

  async previousUpload(tus, folder, file, rel) {
    try {
      const fp = this.fingerprint(folder, file, rel);
      const all = await tus.defaultOptions.urlStorage.findUploadsByFingerprint(fp);
      return all && all.length ? all[0] : null;
    } catch (e) { return null; }
  }

  startUpload(tus, file, folder, conflict, previous, rel, group) {
    rel = rel || file.name;
    const item = { file: file, folder: folder, name: rel, sent: 0, total: file.size, state: "starting" };
    this.uploads.push(item);
    const row = el("div", "files-upload");
    row.setAttribute("data-state", "starting");
    row.setAttribute("data-upload-name", rel);
    const top = el("div", "files-upload-top");
    top.appendChild(el("span", "files-upload-name", shownName(rel)));
    const cancel = button("files-row-btn", "\u00d7", null, "Cancel uploading " + shownName(rel));
    cancel.setAttribute("data-role", "upload-cancel");
    top.appendChild(cancel);
    row.appendChild(top);
    const bar = el("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    row.appendChild(bar);
    const info = el("span", "files-upload-info", "starting\u2026");
    info.setAttribute("data-role", "upload-info");
    row.appendChild(info);
    this.uploadsEl.appendChild(row);
    item.row = row;

    let lastT = performance.now(), lastB = 0, speed = 0;
    const setState = (s, text) => {
      item.state = s;
      row.setAttribute("data-state", s);
      info.textContent = text;
    };
    const settle = (how) => { if (group && !item.settled) { item.settled = how; group.end(how); } };
    const metadata = { filename: rel.split("/").pop(), folder: folder, conflict: conflict };
    if (rel.indexOf("/") >= 0) metadata.relativePath = rel; // the server makes the folders
    const upload = new tus.Upload(file, {
      endpoint: this.base + "/tus",
      chunkSize: this.chunkSize,
      uploadDataDuringCreation: file.size <= this.withCreationMax,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      metadata: metadata,
      headers: { "X-CSRFToken": csrfToken() },
      fingerprint: () => Promise.resolve(this.fingerprint(folder, file, rel)),
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onShouldRetry: function (err) {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        if (!status) {
          if (navigator.onLine === false) return false; // onError waits for the network
          setState("retrying", "connection lost: retrying\u2026");
          return true;
        }
        if (status >= 500 && status !== 507) {
          setState("retrying", "the server answered " + status + ": retrying\u2026");
          return true;
        }
        return status === 409 && err.originalRequest && err.originalRequest.getMethod() === "PATCH";
      },
      onUploadUrlAvailable: () => { item.url = upload.url; },
      onBeforeRequest: (req) => {
        // Where this page's upload began (0, or the offset a resume continued from).
        if (req.getMethod() === "PATCH" && item.firstOffset === undefined) item.firstOffset = parseInt(req.getHeader("Upload-Offset"), 10);
      },
      onProgress: (sent, total) => {
        const now = performance.now();
        if (now - lastT > 700) { speed = (sent - lastB) * 1000 / (now - lastT); lastT = now; lastB = sent; }
        item.sent = sent;
        bar.value = sent;
        const pct = total ? Math.floor(sent * 100 / total) : 100;
        setState("uploading", pct + "% \u00b7 " + formatSize(sent) + " of " + formatSize(total) + (speed ? " \u00b7 " + formatSize(speed) + "/s" : ""));
      },
      onSuccess: () => {
        bar.value = bar.max;
        item.sent = file.size;
        setState("done", "uploaded" + (folder !== this.path ? " to " + shownName(folder) : "") + (conflict === "keep" ? " (kept both)" : ""));
        cancel.remove();
        release();
        settle("done");
        setTimeout(function () { row.remove(); }, 15000);
        if (folder === this.path) this.reloadSoon();
        this.showUnfinished();
      },
      onError: (err) => {
        const resp = err.originalResponse;
        if (!resp && navigator.onLine === false && item.running) {
          // Offline: paused (keeping its turn) until the browser is online, then it asks
          // the machine's offset (HEAD) and continues from there.
          setState("paused", "offline: paused at " + formatSize(item.sent) + ", continues when the network is back");
          const again = () => {
            if (item.state !== "paused") return;
            setState("resuming", "resuming\u2026");
            upload.start();
          };
          window.addEventListener("online", again, { once: true });
          if (navigator.onLine !== false) again();
          return;
        }
        let text = err.message;
        if (resp) {
          try { text = JSON.parse(resp.getBody()).error || text; } catch (e) { /* not JSON */ }
        }
        setState("failed", "failed: " + text);
        release();
        settle("failed");
        if (!resp || resp.getStatus() >= 500) row.appendChild(retry);
      }
    });
    // After the retries ran out (a long outage): continue by hand, from the machine's offset.
    const retry = button("term-btn files-retry", "Retry", null, "Continue uploading " + shownName(rel));
    retry.addEventListener("click", () => {
      retry.remove();
      if (group && item.settled) { group.undo(item.settled); item.settled = null; }
      setState("queued", "waiting\u2026");
      this.enqueue(item);
    });
    item.upload = upload;
    const release = () => {
      if (!item.running) return;
      item.running = false;
      this.running--;
      this.pump();
    };
    item.begin = () => {
      item.running = true;
      this.running++;
      setState(item.resume ? "resuming" : "starting", item.resume ? "resuming\u2026" : "starting\u2026");
      upload.start();
    };
    cancel.addEventListener("click", () => {
      if (item.state === "failed") { row.remove(); return; } // dismiss
      const queued = this.queue.indexOf(item);
      if (queued >= 0) this.queue.splice(queued, 1);
      setState("cancelled", "cancelled");
      cancel.remove();
      release();
      settle("cancelled");
      upload.abort(true).catch(function () { /* the server forgets it when it expires */ });
      setTimeout(function () { row.remove(); }, 4000);
    });
    if (previous) {
      upload.resumeFromPreviousUpload(previous);
      item.resume = true;
      item.url = previous.uploadUrl;
    }
    setState("queued", "waiting\u2026");
    this.enqueue(item);
    return item;
  }

  // Refresh the listing once a burst of uploads (a folder's files) has landed.
  reloadSoon() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => { if (this.path) this.load(this.path); }, 300);
  }

  enqueue(item) {
    this.queue.push(item);
    this.pump();
  }

  pump() {
    while (this.running < PARALLEL && this.queue.length) this.queue.shift().begin();
  }

  // Uploads a reload interrupted (tus keeps them in localStorage): pick the file again to
  // continue from the last byte the machine has, or discard the partial upload.
  async showUnfinished() {
    const role = await this.role;
    if (WRITE_ROLES.indexOf(role) < 0) return;
    let tus;
    try { tus = await this.tus(); } catch (e) { return; }
    let list = [];
    try { list = await tus.defaultOptions.urlStorage.findAllUploads(); } catch (e) { list = []; }
    const live = this.uploads.filter(function (u) { return ["uploading", "starting", "resuming", "queued", "retrying", "paused"].indexOf(u.state) >= 0; })
      .map(function (u) { return u.url; });
    const mine = list.filter((u) => u.urlStorageKey && u.urlStorageKey.indexOf("portal-tus\u0000" + this.agentId + "\u0000") >= 0 && live.indexOf(u.uploadUrl) < 0);
    this.unfinishedEl.textContent = "";
    this.unfinishedEl.hidden = !mine.length;
    if (!mine.length) return;
    this.unfinishedEl.appendChild(el("h3", null, "Unfinished uploads"));
    mine.forEach((u) => {
      const meta = u.metadata || {};
      const line = el("div", "files-unfinished-row");
      const shown = meta.relativePath || meta.filename || "";
      line.setAttribute("data-upload-name", shown);
      line.appendChild(el("span", "files-upload-name", shownName(shown || "?") + " \u2192 " + shownName(meta.folder || "")));
      line.appendChild(el("small", "files-hint", formatSize(u.size) + " \u00b7 pick the same file again to continue where it stopped"));
      const again = button("term-btn", "Continue\u2026", null, "Pick " + shownName(meta.filename || "the file") + " again to continue");
      again.setAttribute("data-role", "unfinished-continue");
      again.addEventListener("click", () => {
        const go = meta.folder && meta.folder !== this.path ? this.load(meta.folder) : Promise.resolve();
        go.then(() => (meta.relativePath ? this.folderInput.click() : this.pick()));
      });
      const drop = button("term-btn", "Discard", null, "Discard the partial upload");
      drop.addEventListener("click", () => {
        tus.Upload.terminate(u.uploadUrl, { headers: { "X-CSRFToken": csrfToken() } }).catch(function () { /* gone already */ })
          .then(() => tus.defaultOptions.urlStorage.removeUpload(u.urlStorageKey))
          .then(() => this.showUnfinished());
      });
      const btns = el("span", "files-unfinished-btns");
      btns.appendChild(again);
      btns.appendChild(drop);
      line.appendChild(btns);
      this.unfinishedEl.appendChild(line);
    });
  }
}
