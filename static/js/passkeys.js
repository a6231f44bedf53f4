// Passkey ceremonies (WebAuthn) on the sign-in, second-step, step-up and two-step sign-in
// pages, and for the step-up dialog of every page (window.PortalPasskeys), with the vendored
// @simplewebauthn/browser (window.SimpleWebAuthnBrowser). The server makes and checks every
// challenge (portal/accounts/passkeys.py); this file only carries the
// options to the browser's authenticator and its answer back. No inline script (CSP).
(function () {
  "use strict";
  if (window.PortalPasskeys) return;  // loaded already (the step-up dialog loads it on demand)
  var lib = window.SimpleWebAuthnBrowser;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function postJSON(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body || {})
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        return { ok: resp.ok, status: resp.status, data: data };
      });
    });
  }

  function show(el, message) {
    if (!el) return;
    el.textContent = message;
    el.hidden = !message;
  }

  // A readable sentence for what the browser's WebAuthn call threw.
  function ceremonyError(err) {
    var name = err && err.name;
    if (name === "NotAllowedError" || name === "AbortError")
      return "The passkey prompt was cancelled or timed out. Try again.";
    if (name === "InvalidStateError") return "This passkey is registered already.";
    if (name === "SecurityError") return "Passkeys do not work at this address (check the portal's WebAuthn settings).";
    return (err && err.message) || "The passkey did not work.";
  }

  function goStepUp(back) {
    window.location.assign("/step-up?next=" + encodeURIComponent(back));
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  // options -> browser -> answer; `done(answer)` gets the assertion. Errors land in `errEl`.
  function authenticate(purpose, button, errEl, done) {
    show(errEl, "");
    busy(button, true);
    postJSON("/api/auth/passkey/options", { purpose: purpose })
      .then(function (res) {
        if (!res.ok) throw { message: res.data.error || "The passkey check could not start." };
        return lib.startAuthentication({ optionsJSON: res.data.options });
      })
      .then(done)
      .catch(function (err) { busy(button, false); show(errEl, ceremonyError(err)); });
  }

  // Sign-in without a password, and the second step after it.
  function signIn(purpose, button, errEl) {
    authenticate(purpose, button, errEl, function (answer) {
      var next = new URLSearchParams(window.location.search).get("next") || "";
      return postJSON("/api/auth/passkey", { purpose: purpose, credential: answer, next: next })
        .then(function (res) {
          if (!res.ok) throw { message: res.data.error || "The passkey was refused." };
          window.location.assign(res.data.redirect || "/");
        });
    });
  }

  // A form that takes the password, or a passkey instead (removing a factor, new codes, a
  // step-up prompt): the assertion goes into the form's hidden field and the form is sent.
  function confirmInForm(form, fieldName, purpose, button, errEl) {
    authenticate(purpose, button, errEl, function (answer) {
      form.querySelector("input[name=" + fieldName + "]").value = JSON.stringify(answer);
      form.submit();
    });
  }

  function addPasskey(form) {
    var errEl = form.querySelector("#e-passkey-add");
    var button = form.querySelector("button[type=submit]");
    var name = form.querySelector("input[name=name]").value;
    show(errEl, "");
    busy(button, true);
    postJSON("/api/profile/mfa/passkeys/options", {})
      .then(function (res) {
        if (res.status === 401 && res.data.step_up_required) { goStepUp(form.getAttribute("data-return") + "#passkeys"); return null; }
        if (!res.ok) throw { message: res.data.error || "The passkey could not be added." };
        return lib.startRegistration({ optionsJSON: res.data.options });
      })
      .then(function (answer) {
        if (!answer) return null;
        return postJSON("/api/profile/mfa/passkeys", { credential: answer, name: name }).then(function (res) {
          if (!res.ok) throw { message: res.data.error || "The passkey could not be added." };
          window.location.assign(form.getAttribute("data-return") + "?added=" + res.data.passkey.id + "#passkeys");
        });
      })
      .catch(function (err) { busy(button, false); show(errEl, ceremonyError(err)); });
  }

  function init() {
    var supported = !!(lib && lib.browserSupportsWebAuthn());
    var buttons = document.querySelectorAll("#passkey-login, #passkey-mfa, #passkey-step-up, [data-passkey-confirm], #passkey-add button");
    if (!supported) {
      buttons.forEach(function (b) { b.disabled = true; b.title = "This browser cannot use passkeys"; });
      return;
    }
    var login = document.getElementById("passkey-login");
    if (login) login.addEventListener("click", function () { signIn("login", login, document.getElementById("e-passkey")); });
    var mfa = document.getElementById("passkey-mfa");
    if (mfa) mfa.addEventListener("click", function () { signIn("mfa", mfa, document.getElementById("e-passkey")); });
    var stepUp = document.getElementById("passkey-step-up");
    if (stepUp) stepUp.addEventListener("click", function () {
      confirmInForm(stepUp.form, "mfa_passkey", "step-up", stepUp, document.getElementById("e-passkey"));
    });
    document.querySelectorAll("[data-passkey-confirm]").forEach(function (button) {
      button.addEventListener("click", function () {
        var form = button.form;
        var errEl = form.querySelector(".field-error[data-passkey-error]");
        if (!errEl) {
          errEl = document.createElement("p");
          errEl.className = "field-error";
          errEl.setAttribute("data-passkey-error", "");
          errEl.setAttribute("role", "alert");
          form.appendChild(errEl);
        }
        confirmInForm(form, "passkey_assertion", "reauth", button, errEl);
      });
    });
    var add = document.getElementById("passkey-add");
    if (add) add.addEventListener("submit", function (e) { e.preventDefault(); addPasskey(add); });
  }

  // For the step-up dialog of every page (static/js/stepup.js).
  window.PortalPasskeys = {
    supported: function () { return !!(lib && lib.browserSupportsWebAuthn()); },
    authenticate: authenticate
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
