// Step-up in place (issue 18). An htmx request that needs a fresh second factor answers 401
// with `X-Step-Up: required`, `HX-Reswap: none` and the prompt as its body
// (portal/accounts/mfa_views.py): nothing is swapped, this file puts the prompt in the dialog
// of base.html (templates/_step_up_dialog.html), checks the code or passkey at /step-up, then
// sends the same request again from the same element (same verb, path, parameters, target
// and swap) so the action completes and its partial swaps in.
// Cancel closes the dialog and changes nothing. A page's own fetch (the broadcast) uses
// window.PortalStepUp.ask() the same way. No inline script (CSP).
(function () {
  "use strict";
  var HEADER = "X-Step-Up";
  var pending = null;   // {resolve} of the open dialog's ask()
  var replaying = null; // the element whose request is being sent again (skips its hx-confirm)

  function dialog() { return document.getElementById("step-up-dialog"); }
  function part(sel) { var d = dialog(); return d ? d.querySelector(sel) : null; }

  function csrfToken() {
    var input = part("input[name=csrf_token]");
    return input ? input.value : "";
  }

  function showCodeError(message) {
    var input = part("input[name=mfa_code]");
    var slot = part("#su-e-mfa_code");
    if (!input || !slot) return;
    slot.textContent = message || "";
    slot.hidden = !message;
    input.closest(".field").classList.toggle("has-error", !!message);
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", slot.id);
    } else {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  }

  function busy(on) {
    dialog().querySelectorAll("button").forEach(function (b) {
      if (!b.hasAttribute("data-step-up-cancel")) b.disabled = on;
    });
  }

  function reset() {
    var form = part("form");
    form.reset();
    showCodeError("");
    var pkErr = part("#su-e-passkey");
    if (pkErr) { pkErr.textContent = ""; pkErr.hidden = true; }
    busy(false);
  }

  // The passkey helpers are on the pages that have passkey buttons; elsewhere they are
  // loaded the first time the dialog opens (same origin: allowed by the CSP).
  var passkeyScripts = null;
  function loadPasskeys() {
    if (window.PortalPasskeys) return Promise.resolve();
    if (passkeyScripts) return passkeyScripts;
    var urls = (dialog().getAttribute("data-passkey-js") || "").split(" ").filter(Boolean);
    passkeyScripts = urls.reduce(function (chain, url) {
      return chain.then(function () {
        return new Promise(function (resolve, reject) {
          var s = document.createElement("script");
          s.src = url;
          s.onload = resolve;
          s.onerror = reject;
          document.head.appendChild(s);
        });
      });
    }, Promise.resolve());
    return passkeyScripts;
  }

  // Open the dialog with `html` (the prompt the 401 carried); resolves true once /step-up
  // accepted a code or passkey, false on cancel.
  function ask(html) {
    var d = dialog();
    if (!d || typeof d.showModal !== "function") return Promise.resolve(false);
    if (pending) return pending.promise;  // one prompt answers every request waiting on it
    if (html) d.innerHTML = html;  // our own template's markup, same origin; never scripts
    if (!part("form")) return Promise.resolve(false);
    var entry = {};
    entry.promise = new Promise(function (resolve) { entry.resolve = resolve; });
    pending = entry;
    reset();
    d.showModal();
    var pk = part("#su-passkey-step-up");
    if (pk) {
      pk.disabled = true;  // until the helpers are here
      loadPasskeys().then(function () {
        pk.disabled = !window.PortalPasskeys.supported();
        if (pk.disabled) pk.title = "This browser cannot use passkeys";
      }).catch(function () { pk.title = "Passkeys could not be loaded"; });
    }
    part("input[name=mfa_code]").focus();
    return entry.promise;
  }

  function finish(ok) {
    var entry = pending;
    pending = null;
    var d = dialog();
    if (d && d.open) d.close();
    if (entry) entry.resolve(ok);
  }

  // POST the dialog's form (code or passkey answer) to /step-up; JSON back.
  function check(data) {
    return fetch(part("form").action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() }
    }).then(function (resp) {
      if (resp.ok) return;
      return resp.json().catch(function () { return {}; }).then(function (body) {
        var message = body.error ||
          (resp.status === 429 ? "Too many tries: wait a moment and try again."
            : "The code could not be checked. Reload the page and try again.");
        throw { message: message };
      });
    });
  }

  document.addEventListener("submit", function (e) {
    if (e.target.id !== "su-step-up-form") return;
    e.preventDefault();
    var data = new FormData(e.target);
    data.delete("mfa_passkey");
    showCodeError("");
    busy(true);
    check(data).then(function () { finish(true); }, function (err) {
      busy(false);
      showCodeError(err.message || "The code could not be checked.");
      var input = part("input[name=mfa_code]");
      input.select();
      input.focus();
    });
  });

  document.addEventListener("click", function (e) {
    if (!e.target.closest) return;
    if (e.target.closest("#step-up-dialog [data-step-up-cancel]")) { finish(false); return; }
    var pk = e.target.closest("#su-passkey-step-up");
    if (!pk || !window.PortalPasskeys) return;
    showCodeError("");
    window.PortalPasskeys.authenticate("step-up", pk, part("#su-e-passkey"), function (answer) {
      var data = new FormData(part("form"));
      data.delete("mfa_code");
      data.set("mfa_passkey", JSON.stringify(answer));
      return check(data).then(function () { pk.disabled = false; finish(true); });
    });
  });

  // Esc closes the dialog: the same as Cancel.
  document.addEventListener("close", function (e) {
    if (e.target.id === "step-up-dialog" && pending) finish(false);
  }, true);

  // htmx: the 401 with the header opens the dialog; once confirmed, the request goes again.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var d = e.detail;
    if (!d.xhr || d.xhr.status !== 401 || d.xhr.getResponseHeader(HEADER) !== "required") return;
    d.shouldSwap = false;
    var cfg = d.requestConfig || {};
    var elt = cfg.elt || d.elt;
    var etc = d.etc || {};
    ask(d.xhr.response).then(function (ok) {
      if (!ok || !elt || !document.body.contains(elt) || !window.htmx) return;
      replaying = elt;
      var target = cfg.target && document.body.contains(cfg.target) ? cfg.target : undefined;
      window.htmx.ajax(cfg.verb, cfg.path, {
        source: elt,
        event: cfg.triggeringEvent,
        target: target,
        swap: etc.swapOverride,
        values: etc.values,
        headers: etc.headers,
        select: etc.select
      });
    });
  });

  // The replay was confirmed already (its hx-confirm was answered the first time).
  document.addEventListener("htmx:confirm", function (e) {
    if (!replaying || e.detail.elt !== replaying) return;
    replaying = null;
    e.preventDefault();
    e.detail.issueRequest(true);
  });

  window.PortalStepUp = {
    header: HEADER,
    // For a page's own fetch: send `X-Step-Up-Prompt: inline`; on a 401 with the header,
    // ask(its body) and send the request again when it resolves true.
    needed: function (resp) { return resp.status === 401 && resp.headers.get(HEADER) === "required"; },
    ask: ask
  };
})();
