// Small page behaviours shared by every page. No inline script anywhere (CSP).
(function () {
  "use strict";
  // Flash messages fade after a while; errors stay until the next action.
  function settleFlashes(root) {
    (root || document).querySelectorAll(".flash.success").forEach(function (el) {
      setTimeout(function () { el.remove(); }, 6000);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { settleFlashes(); });
  document.addEventListener("htmx:afterSettle", function (e) { settleFlashes(e.target); });
  // Select-all on focus for one-time secrets and copyable commands.
  document.addEventListener("focusin", function (e) {
    if (e.target.matches && e.target.matches("input[readonly]")) e.target.select();
  });
  // [data-copy]: copy the text of the element named by the attribute.
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("[data-copy]");
    if (!btn) return;
    var src = document.querySelector(btn.getAttribute("data-copy"));
    if (!src) return;
    var text = src.value !== undefined ? src.value : src.textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).then(function () {
      var old = btn.textContent; btn.textContent = "Copied"; setTimeout(function () { btn.textContent = old; }, 1500);
    });
  });
  // issue 20: form[data-confirm] asks before it is sent (e.g. regenerating an API key).
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  // input[type=file][data-max-bytes]: too large a file is refused here, next to the field,
  // before any upload (the server checks again).
  function tooLarge(input) {
    var max = parseInt(input.getAttribute("data-max-bytes"), 10);
    var file = input.files && input.files[0];
    return file && max && file.size > max ? max : 0;
  }
  function showFileError(input) {
    var max = tooLarge(input);
    var slot = document.getElementById(input.getAttribute("aria-describedby") || "");
    if (slot) {
      slot.textContent = max ? "That file is " + (input.files[0].size / 1048576).toFixed(1) +
        " MB; the limit is " + Math.round(max / 1048576) + " MB. Choose a smaller image." : "";
      slot.hidden = !max;
    }
    input.setAttribute("aria-invalid", max ? "true" : "false");
    return max;
  }
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("input[type=file][data-max-bytes]")) showFileError(e.target);
  });
  document.addEventListener("submit", function (e) {
    var inputs = e.target.querySelectorAll ? e.target.querySelectorAll("input[type=file][data-max-bytes]") : [];
    Array.prototype.forEach.call(inputs, function (input) {
      if (showFileError(input)) e.preventDefault();
    });
  });
})();

/* Installable on a phone: the service worker (static shell and an offline page only). */
(function () {
  if ("serviceWorker" in navigator && window.isSecureContext) {
    window.addEventListener("load", function () {
      navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () {});
    });
  }
})();
