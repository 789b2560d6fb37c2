import { RAW_FIELDS } from "../../core/features/index.js";

/** OpenAPI 3.1 description of the routes the old FastAPI service exposed, kept compatible. */
export function legacyOpenApi(maxBatchSize: number): Record<string, unknown> {
  const properties = Object.fromEntries(
    RAW_FIELDS.map((f) => [
      f.name,
      { type: f.kind, minimum: f.min, maximum: f.max, description: f.description },
    ]),
  );
  const input = {
    type: "object",
    additionalProperties: false,
    required: RAW_FIELDS.map((f) => f.name),
    properties,
  };
  const validationError = {
    description:
      "Validation error: one entry per bad field, as FastAPI answers; at most 20, then one entry of type " +
      "too_many_errors counting the rest. `input` echoes scalars only (strings cut at 100 characters). " +
      "A body nested deeper than 32 arrays/objects is one entry of type too_deep.",
    content: {
      "application/json": {
        schema: {
          type: "object",
          properties: {
            detail: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  type: { type: "string" },
                  loc: { type: "array", items: { oneOf: [{ type: "string" }, { type: "integer" }] } },
                  msg: { type: "string" },
                  input: {},
                },
              },
            },
          },
        },
      },
    },
  };
  const tooLarge = { description: "Request body larger than the route's limit, refused before parsing" };
  const json = (schema: unknown) => ({ content: { "application/json": { schema } } });
  return {
    openapi: "3.1.0",
    info: {
      title: "bikeshare legacy REST API",
      version: "1",
      description:
        "Routes of the former Python service, answered by bikeshare with the same JSON bodies. " +
        "New clients should prefer the Connect / gRPC API (bikeshare.v1.PredictService).",
    },
    paths: {
      "/predict": {
        post: {
          summary: "Forecast the rentals of one hour",
          requestBody: { required: true, ...json(input) },
          responses: {
            "200": {
              description: "The forecast",
              ...json({
                type: "object",
                properties: {
                  prediction: { type: "number" },
                  timestamp: { type: "string", format: "date-time" },
                  model_version: { type: "string" },
                },
              }),
            },
            "413": tooLarge,
            "422": validationError,
          },
        },
      },
      "/predict/batch": {
        post: {
          summary: `Forecast many hours at once (at most ${maxBatchSize} rows)`,
          requestBody: {
            required: true,
            ...json({
              type: "object",
              required: ["inputs"],
              properties: { inputs: { type: "array", items: input, maxItems: maxBatchSize } },
            }),
          },
          responses: {
            "200": {
              description: "One forecast per input, in order",
              ...json({
                type: "object",
                properties: {
                  predictions: { type: "array", items: { type: "number" } },
                  timestamp: { type: "string", format: "date-time" },
                  model_version: { type: "string" },
                },
              }),
            },
            "413": tooLarge,
            "422": validationError,
          },
        },
      },
      "/predict/confidence": {
        post: {
          summary:
            "Forecast one hour with its prediction interval, in the old API's shape (arrays of one element). " +
            "Query parameter confidence_level in [0.5, 1), default 0.95. The interval is split conformal, " +
            "calibrated on the validation window the model was not fitted on, by working day and hour band " +
            "(not the old random forest's ± 1.96 σ, which covered ~69% on Sep–Dec 2012). prediction_std is " +
            "derived from that interval under a normal assumption: (upper − lower) / (2 z), z the normal " +
            "quantile of the level; it is not a measured spread. A model version trained before intervals " +
            "existed answers 400 naming interval_level.",
          requestBody: { required: true, ...json(input) },
          responses: {
            "200": {
              description: "The forecast and its interval",
              ...json({
                type: "object",
                properties: {
                  predictions: { type: "array", items: { type: "number" } },
                  mean_prediction: { type: "number" },
                  confidence_intervals: {
                    type: "object",
                    properties: {
                      lower: { type: "array", items: { type: "number" } },
                      upper: { type: "array", items: { type: "number" } },
                    },
                  },
                  prediction_std: { type: "array", items: { type: "number" } },
                  timestamp: { type: "string", format: "date-time" },
                  model_version: { type: "string" },
                },
              }),
            },
            "400": { description: "The serving model version has no interval calibration" },
            "413": tooLarge,
            "422": validationError,
          },
        },
      },
      "/model/reload": {
        post: {
          summary:
            "Read the production alias again now and serve its version (loaded completely before it " +
            "replaces the current one: no request fails). Needs an admin bearer token when the server " +
            "requires tokens (BIKESHARE_PREDICT_AUTH=required).",
          responses: {
            "200": {
              description: "Reloaded: message, timestamp, model_name, model_stage",
              ...json({
                type: "object",
                properties: {
                  message: { type: "string" },
                  timestamp: { type: "string", format: "date-time" },
                  model_name: { type: "string" },
                  model_stage: { type: "string" },
                },
              }),
            },
            "401": { description: "No valid bearer token (when tokens are required)" },
            "403": { description: "The token's role is not admin" },
            "503": {
              description: "The alias could not be read or its version loaded; the previous one serves",
            },
          },
        },
      },
      "/": {
        get: {
          summary: "The API's name and version, and where its docs are",
          responses: { "200": { description: "{message, version, docs}" } },
        },
      },
      "/health": {
        get: {
          summary: "Liveness and whether a model is loaded",
          responses: { "200": { description: "Healthy" } },
        },
      },
      "/model/info": {
        get: {
          summary:
            "Serving model: name, version, metrics, feature importance (normalised total gain) and, for " +
            "versions trained since explanations exist, shap_importance: mean |SHAP| per input field on " +
            "the validation window (shap_feature_importance per model feature; shap_importance_space, " +
            "shap_importance_window say in which units and on which rows)",
          responses: { "200": { description: "Model info" } },
        },
      },
      "/predict/explain": {
        post: {
          summary:
            "Forecast one hour and explain it (not in the old API): XGBoost's TreeSHAP contributions " +
            "(weight × value for a linear model) of each input field, so that bias + the sum of " +
            "contributions = the forecast (space `prediction`), or its logarithm for Poisson and Tweedie " +
            "models (space `log`). A derived feature counts towards the field(s) it is computed from: " +
            "workingday_hr half to hr and half to workingday; days_to_holiday, days_since_holiday and " +
            "year_end_break to timestamp, also when it was not sent (not knowing the date moves the " +
            "forecast too). `derived` lists those features' own contributions. Costs milliseconds, " +
            "not microseconds.",
          requestBody: { required: true, ...json(input) },
          responses: {
            "200": {
              description: "The forecast and its explanation",
              ...json({
                type: "object",
                properties: {
                  prediction: { type: "number" },
                  bias: { type: "number" },
                  contributions: {
                    type: "object",
                    description: "One entry per input field (the 12 fields, then timestamp)",
                    additionalProperties: { type: "number" },
                  },
                  derived: {
                    type: "array",
                    items: {
                      type: "object",
                      properties: {
                        feature: { type: "string" },
                        value: { type: "number" },
                        from: { type: "array", items: { type: "string" } },
                      },
                    },
                  },
                  space: { type: "string", enum: ["prediction", "log"] },
                  timestamp: { type: "string", format: "date-time" },
                  model_version: { type: "string" },
                },
              }),
            },
            "400": { description: "The serving model version cannot be explained (no native model)" },
            "413": tooLarge,
            "422": validationError,
          },
        },
      },
      "/metrics": {
        get: {
          summary: "Prometheus metrics (text exposition format)",
          responses: { "200": { description: "Metrics" } },
        },
      },
      "/healthz": {
        get: { summary: "Liveness probe", responses: { "200": { description: "Process is up" } } },
      },
      "/readyz": {
        get: {
          summary: "Readiness probe",
          responses: { "200": { description: "Serving" }, "503": { description: "No model loaded" } },
        },
      },
    },
  };
}

function escapeHtml(text: string): string {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** A self-contained page rendered from the OpenAPI document: readable without any script or CDN. */
export function renderDocs(spec: Record<string, unknown>): string {
  const info = spec.info as { title: string; description: string };
  const paths = spec.paths as Record<
    string,
    Record<
      string,
      { summary: string; requestBody?: unknown; responses: Record<string, { description: string }> }
    >
  >;
  const sections = Object.entries(paths)
    .flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => {
        const responses = Object.entries(op.responses)
          .map(([code, r]) => `<li><code>${code}</code> ${escapeHtml(r.description)}</li>`)
          .join("");
        const body = op.requestBody
          ? `<details><summary>Request body schema</summary><pre>${escapeHtml(JSON.stringify(op.requestBody, null, 2))}</pre></details>`
          : "";
        return `<section><h2><span class="m">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h2><p>${escapeHtml(op.summary)}</p>${body}<ul>${responses}</ul></section>`;
      }),
    )
    .join("\n");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(info.title)}</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em}section{border-top:1px solid #ddd;padding:.5em 0}.m{background:#234;color:#fff;padding:0 .4em;border-radius:3px;font-size:80%}pre{background:#f6f6f6;padding:.5em;overflow:auto}</style>
</head><body><h1>${escapeHtml(info.title)}</h1><p>${escapeHtml(info.description)}</p><p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>
${sections}</body></html>`;
}
