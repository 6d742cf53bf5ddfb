// Start Swagger UI on /docs (a file of its own: the page allows no inline script).
"use strict";

const root = document.getElementById("openapi");
window.ui = SwaggerUIBundle({
  url: root.dataset.url,
  configUrl: root.dataset.config,
  dom_id: "#openapi",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  plugins: [SwaggerUIBundle.plugins.DownloadUrl],
  layout: "StandaloneLayout",
});
