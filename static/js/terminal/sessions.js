// Sessions list (HTMX page): after a close button's DELETE succeeds, refresh the polled
// table at once instead of at the next poll.
document.addEventListener("htmx:afterRequest", function (e) {
  const elt = e.detail && e.detail.elt;
  if (!elt || !elt.matches || !elt.matches("[data-refresh]") || !e.detail.successful) return;
  const target = document.querySelector(elt.getAttribute("data-refresh"));
  if (target && window.htmx) window.htmx.trigger(target, "refresh");
});
