// Swagger UI over the service's own OpenAPI document, every file from the service itself.
// When keys are on, the document is behind the key too: the key typed in the bar above goes
// with every request the page makes, and fills Swagger's own Authorize dialog.
"use strict";

const ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  validatorUrl: null, // the public validator is another host: never asked
  requestInterceptor: (request) => {
    const key = GensenKey.get();
    if (key && !request.headers.Authorization) {
      request.headers.Authorization = `Bearer ${key}`;
    }
    return request;
  },
  responseInterceptor: (response) => {
    if (response.status === 401 && response.url.endsWith("openapi.json")) {
      document.getElementById("key-hint").hidden = false;
    }
    return response;
  },
  onComplete: () => {
    const key = GensenKey.get();
    if (key) {
      ui.preauthorizeApiKey("bearer", key);
    }
  },
});

GensenKey.bind(document.getElementById("key"), () => window.location.reload());
