// Render the /rehab OpenAPI document with the vendored Swagger UI.
// A file of its own, not an inline script: the CSP allows scripts from 'self' only.
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    // No badge from validator.swagger.io: nothing leaves this origin (CSP img-src/connect-src 'self').
    validatorUrl: null,
  });
})();
