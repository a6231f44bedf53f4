// /api/docs: render /api/openapi.json with the vendored Swagger UI (no inline script: strict CSP).
(function () {
  "use strict";
  var el = document.getElementById("swagger-ui");
  if (!el || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: el.getAttribute("data-spec-url"),
    domNode: el,
    deepLinking: true,
    // The spec is served by this portal; never ask a remote validator about it.
    validatorUrl: null,
  });
})();
