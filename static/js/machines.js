// Machines pages: auth-method panes, command history, broadcast results as they arrive.
(function () {
  "use strict";

  // Add / edit a machine: show only the fields of the chosen auth method.
  function syncAuth(form) {
    var checked = form.querySelector("input[name=auth_method]:checked");
    var method = checked ? checked.value : "key";
    form.querySelectorAll(".auth-pane").forEach(function (pane) {
      pane.hidden = pane.getAttribute("data-auth") !== method;
    });
  }
  document.addEventListener("change", function (e) {
    if (e.target.name === "auth_method") syncAuth(e.target.form);
  });

  // Recent commands: click one to put it back in the command box.
  document.addEventListener("click", function (e) {
    var fill = e.target.closest && e.target.closest("[data-fill-command]");
    if (fill) {
      var box = document.querySelector(".command-form input[name=command]");
      if (box) { box.value = fill.getAttribute("data-fill-command"); box.focus(); }
      return;
    }
    var all = e.target.closest && e.target.closest("[data-select-all]");
    if (all) {
      var boxes = document.querySelectorAll("input[name=" + all.getAttribute("data-select-all") + "]");
      var any = Array.prototype.some.call(boxes, function (b) { return !b.checked; });
      boxes.forEach(function (b) { b.checked = any; });
    }
  });

  // Broadcast: POST the form, read the NDJSON stream, fill each machine's row as it lands.
  function runBroadcast(form) {
    var out = document.getElementById("broadcast-results");
    var err = document.getElementById("broadcast-error");
    var button = form.querySelector("button[type=submit]");
    err.hidden = true;
    button.disabled = true;
    out.innerHTML = "";
    var done = 0;
    var buffer = "";
    function handle(line) {
      if (!line.trim()) return;
      var msg = JSON.parse(line);
      if (msg.error) { err.textContent = msg.error; err.hidden = false; return; }
      if (msg.table) { out.innerHTML = msg.table; return; }
      if (msg.row) {
        var row = document.getElementById("bc-" + msg.agent_id);
        if (row) row.outerHTML = msg.row;
        done += 1;
        var progress = out.querySelector("[data-progress]");
        if (progress) progress.textContent = done + " done";
      }
    }
    var again = false;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      // a needed step-up comes back as a 401 for the dialog of base.html (static/js/stepup.js)
      headers: { "X-CSRFToken": form.querySelector("input[name=csrf_token]").value, "X-Step-Up-Prompt": "inline" },
      credentials: "same-origin"
    }).then(function (resp) {
      if (window.PortalStepUp && window.PortalStepUp.needed(resp)) {
        return resp.text().then(window.PortalStepUp.ask).then(function (ok) { again = ok; });
      }
      var reader = resp.body.getReader();
      var decoder = new TextDecoder();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { handle(buffer); buffer = ""; return; }
          buffer += decoder.decode(chunk.value, { stream: true });
          var lines = buffer.split("\n");
          buffer = lines.pop();
          lines.forEach(handle);
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      err.textContent = "The connection to the portal was lost.";
      err.hidden = false;
    }).then(function () {
      button.disabled = false;
      if (again) runBroadcast(form);  // confirmed: the same broadcast, as asked
    });
  }

  // Broadcast: the button says what it will do, and asks before doing it (issue 20).
  function broadcastPlan(form) {
    var tag = form.querySelector("select[name=tag]").value;
    if (tag) return "Run on tag " + tag;
    var n = form.querySelectorAll("input[name=agent_ids]:checked").length;
    if (!n) return "";
    return "Run on " + n + (n === 1 ? " machine" : " machines");
  }
  function syncBroadcastButton(form) {
    var button = form.querySelector("[data-bc-run]");
    if (button) button.textContent = broadcastPlan(form) || "Pick machines or a tag";
  }
  document.addEventListener("change", function (e) {
    var form = e.target.form;
    if (form && form.id === "broadcast-form") syncBroadcastButton(form);
  });
  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("[data-select-all]")) {
      var form = document.getElementById("broadcast-form");
      if (form) syncBroadcastButton(form);
    }
  });

  document.addEventListener("submit", function (e) {
    if (e.target.id !== "broadcast-form") return;
    var form = e.target;
    var plan = broadcastPlan(form);
    var err = document.getElementById("broadcast-error");
    var command = form.querySelector("input[name=command]").value.trim();
    if (!command || !plan) {
      e.preventDefault();
      err.textContent = !command ? "Type the command to run." : "Pick at least one machine or a tag.";
      err.hidden = false;
      return;
    }
    if (!window.confirm(plan.replace(/^Run/, "Run “" + command + "”") + "?")) {
      e.preventDefault();
      return;
    }
    if (window.fetch && window.ReadableStream) {
      e.preventDefault();
      runBroadcast(form);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    ["add-machine", "edit-machine"].forEach(function (id) {
      var form = document.getElementById(id);
      if (form) syncAuth(form);
    });
    var bc = document.getElementById("broadcast-form");
    if (bc) syncBroadcastButton(bc);
  });
  // A successful command clears the box for the next one.
  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.detail.elt;
    if (form && form.classList && form.classList.contains("command-form") && e.detail.successful) {
      var box = form.querySelector("input[name=command]");
      if (box) box.select();
    }
  });
})();
