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
})();

/* Installable on a phone: the service worker (static shell and an offline page only). */
(function () {
  if ("serviceWorker" in navigator && window.isSecureContext) {
    window.addEventListener("load", function () {
      navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () {});
    });
  }
})();
