// Community editor: Write/Preview tabs and image upload by paste, drag-and-drop or picker.
// Uploads go to /api/community/upload (session + CSRF header) and insert ![](url) at the caret.
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) { return ""; }
  }

  function editorOf(el) { return el.closest("[data-cm-editor]"); }

  function setTab(editor, which) {
    var write = editor.querySelector(".cm-write");
    var slot = editor.querySelector(".cm-preview-slot");
    editor.querySelectorAll("[data-cm-tab]").forEach(function (t) {
      var on = t.getAttribute("data-cm-tab") === which;
      t.classList.toggle("active", on);
      t.setAttribute("aria-selected", on ? "true" : "false");
    });
    write.hidden = which !== "write";
    slot.hidden = which !== "preview";
    if (which === "preview") slot.innerHTML = '<p class="muted">Rendering…</p>';
    if (which === "write") editor.querySelector("textarea").focus();
  }

  document.addEventListener("click", function (e) {
    var tab = e.target.closest && e.target.closest("[data-cm-tab]");
    if (!tab) return;
    setTab(editorOf(tab), tab.getAttribute("data-cm-tab"));
  });

  function insertAtCaret(textarea, text) {
    var start = textarea.selectionStart, end = textarea.selectionEnd, v = textarea.value;
    var before = v.slice(0, start), after = v.slice(end);
    var pad = before && !/\n$/.test(before) ? "\n" : "";
    var snippet = pad + text + "\n";
    textarea.value = before + snippet + after;
    var pos = (before + snippet).length;
    textarea.setSelectionRange(pos, pos);
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function status(editor, msg, isError) {
    var el = editor.querySelector(".cm-upload-status");
    if (!el) return;
    el.textContent = msg || "";
    el.classList.toggle("field-error", !!isError);
  }

  function upload(textarea, file) {
    var editor = editorOf(textarea);
    if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) {
      status(editor, "Only PNG, JPEG, GIF or WebP images can be attached.", true);
      return;
    }
    if (file.size > 5 * 1024 * 1024) {
      status(editor, "Images must be at most 5 MB.", true);
      return;
    }
    var form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    status(editor, "Uploading " + (file.name || "image") + "…");
    textarea.setAttribute("aria-busy", "true");
    fetch(textarea.getAttribute("data-cm-upload"), {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (!resp.ok || !data.url) throw new Error(data.error || ("upload failed (" + resp.status + ")"));
        var alt = (file.name || "image").replace(/\.[a-z0-9]+$/i, "").replace(/[\[\]\\]/g, "");
        insertAtCaret(textarea, "![" + alt + "](" + data.url + ")");
        status(editor, "Image added.");
      });
    }).catch(function (err) {
      status(editor, err.message || "upload failed", true);
    }).finally(function () { textarea.removeAttribute("aria-busy"); });
  }

  function imagesFrom(list) {
    var out = [];
    for (var i = 0; list && i < list.length; i++) {
      var item = list[i];
      var f = item.getAsFile ? (item.kind === "file" ? item.getAsFile() : null) : item;
      if (f && /^image\//.test(f.type)) out.push(f);
    }
    return out;
  }

  document.addEventListener("paste", function (e) {
    var ta = e.target;
    if (!ta.matches || !ta.matches("textarea[data-cm-upload]")) return;
    var files = imagesFrom(e.clipboardData && e.clipboardData.items);
    if (!files.length) return;
    e.preventDefault();
    files.forEach(function (f) { upload(ta, f); });
  });

  document.addEventListener("dragover", function (e) {
    var ta = e.target.closest && e.target.closest("textarea[data-cm-upload]");
    if (!ta) return;
    e.preventDefault();
    ta.classList.add("cm-drop");
  });
  document.addEventListener("dragleave", function (e) {
    if (e.target.classList) e.target.classList.remove("cm-drop");
  });
  document.addEventListener("drop", function (e) {
    var ta = e.target.closest && e.target.closest("textarea[data-cm-upload]");
    if (!ta) return;
    ta.classList.remove("cm-drop");
    var files = imagesFrom(e.dataTransfer && e.dataTransfer.files);
    if (!files.length) return;
    e.preventDefault();
    files.forEach(function (f) { upload(ta, f); });
  });

  document.addEventListener("change", function (e) {
    if (!e.target.matches || !e.target.matches("input[data-cm-file]")) return;
    var ta = editorOf(e.target).querySelector("textarea[data-cm-upload]");
    Array.prototype.forEach.call(e.target.files || [], function (f) { upload(ta, f); });
    e.target.value = "";
  });

  // An accepted fix's one-line code blocks get "Run on machines…": it only opens the
  // broadcast page with the command filled in; nothing runs until the person confirms there.
  function addRunLinks(root) {
    (root || document).querySelectorAll(".cm-fix[data-run-url] .markdown pre").forEach(function (pre) {
      if (pre.nextElementSibling && pre.nextElementSibling.classList.contains("cm-run")) return;
      var lines = pre.textContent.split("\n").filter(function (l) { return l.trim(); });
      if (lines.length !== 1) return;
      var command = lines[0].trim().replace(/^\$\s+/, "");
      var base = pre.closest(".cm-fix").getAttribute("data-run-url");
      var a = document.createElement("a");
      a.className = "btn sm cm-run";
      a.href = base + "&command=" + encodeURIComponent(command);
      a.textContent = "Run on machines…";
      pre.insertAdjacentElement("afterend", a);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { addRunLinks(); });
  document.addEventListener("htmx:afterSettle", function (e) { addRunLinks(e.target); });
})();
