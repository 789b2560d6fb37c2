import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import { BikeshareError } from "../../core/errors.js";
import {
  describeValue,
  type FieldViolation,
  type RawRecord,
  recordsToColumns,
  shortKey,
  TIMESTAMP_FIELD,
  ViolationList,
  validateRecord,
} from "../../core/features/index.js";
import { principalFromHeader, roleAllows } from "../auth/interceptor.js";
import type { Role } from "../auth/principal.js";
import type { TokenBook } from "../auth/tokens.js";
import { httpStatus } from "../errors.js";
import type { Metrics } from "../observability/metrics.js";
import {
  explainRecords,
  type ModelSlot,
  type OnServed,
  predictWithInterval,
  requireModel,
} from "../predict/predict-service.js";
import { formatPath, jsonTooDeep, MAX_JSON_DEPTH } from "../request-limits.js";
import { legacyOpenApi, renderDocs } from "./openapi.js";

// connect-node does not export its request/response types; take them from its fallback signature.
type Fallback = NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>;
type Request = Parameters<Fallback>[0];
type Response = Parameters<Fallback>[1];

/** One entry of FastAPI's 422 answer. */
interface Detail {
  type: string;
  loc: (string | number)[];
  msg: string;
  input: unknown;
}

/**
 * An answer in FastAPI's own shape (413, and 422 with its `detail` list), which old clients parse. Every
 * other failure is a BikeshareError, answered with `httpStatus` of its code and `{detail: message}`.
 */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`);
  }
}

const unprocessable = (detail: Detail[]) => new HttpError(422, { detail });

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * A caller's (or its load balancer's) `X-Request-Id` when it is a plain token, so a prediction can be
 * found in the prediction log by the id the caller logged; otherwise a new one. Echoed in the answer.
 */
function requestIdOf(req: Request): string {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
}

// The pages are self-contained (inline styles and SVG, no script, no external resource): nothing else is
// allowed, so an injected tag could neither run nor load anything.
const HTML_POLICY =
  "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function send(res: Response, status: number, body: unknown, contentType = "application/json"): void {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(payload),
    // A browser must not read a JSON answer that echoes client text as HTML or script.
    "x-content-type-options": "nosniff",
    ...(contentType.startsWith("text/html") ? { "content-security-policy": HTML_POLICY } : {}),
  });
  res.end(payload, "utf8");
}

/**
 * What a 422 echoes of a client's value: scalars (strings cut short), and only a description of an
 * object or array, which can be megabytes or nested thousands deep.
 */
function echo(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value.length > 100 ? `${value.slice(0, 100)}…` : value;
  if (typeof value === "number" || typeof value === "boolean") return value;
  if (Array.isArray(value)) return describeValue(value);
  return `an object with ${Object.keys(value).length} keys`;
}

/**
 * The whole body, with plain listeners rather than `for await`: the stream's async iterator costs a
 * generator, an end-of-stream watcher and a promise per chunk, several µs of a single-row prediction.
 * Past `maxBytes` it stops reading and rejects with `tooLarge()`; the front server drains the rest after
 * the answer, so the kept-alive connection survives. A client that goes away rejects it too.
 */
function readBody(req: Request, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        done();
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      done();
      reject(error);
    };
    const onClose = () => {
      if (req.readableEnded) return;
      done();
      reject(new Error("the client closed the request before sending its body"));
    };
    const done = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

async function readJson(req: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () => new HttpError(413, { detail: `request body is larger than ${maxBytes} bytes` });
  // A declared length over the limit is refused before a byte of the body is read.
  if (Number(req.headers["content-length"] ?? 0) > maxBytes) throw tooLarge();
  const text = (await readBody(req, maxBytes, tooLarge)).toString("utf8");
  if (text.trim() === "")
    throw unprocessable([
      { type: "missing", loc: ["body"], msg: "Field required: the request body is empty", input: null },
    ]);
  // JSON.parse copes with deep nesting, but everything that walks the result afterwards may not: refuse it
  // first, with a scan far cheaper than the parse.
  const deep = jsonTooDeep(text);
  if (deep !== undefined) {
    throw unprocessable([
      {
        type: "too_deep",
        loc: ["body", ...deep],
        msg: `${formatPath(deep, "body")} nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects`,
        input: null,
      },
    ]);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw unprocessable([
      {
        type: "json_invalid",
        loc: ["body"],
        msg: `JSON decode error: ${(error as Error).message}`,
        input: {},
      },
    ]);
  }
}

function toDetail(v: FieldViolation, loc: (string | number)[], input: unknown): Detail {
  const last = loc.at(-1);
  const value =
    typeof last === "string" && typeof input === "object" && input !== null
      ? (input as Record<string, unknown>)[last]
      : input;
  return {
    type: v.type === "type" ? "number_type" : v.type,
    loc,
    msg: `${v.field} ${v.description}`,
    input: echo(value),
  };
}

function toDetails(
  violations: readonly FieldViolation[],
  input: unknown,
  locPrefix: (string | number)[],
  pathPrefix: string,
): Detail[] {
  return violations.map((v) => {
    if (v.type === "object") return toDetail(v, locPrefix, input);
    const field = v.field.slice(pathPrefix ? pathPrefix.length + 1 : 0);
    return toDetail(v, [...locPrefix, field], input);
  });
}

export interface LegacyOptions {
  slot: ModelSlot;
  metrics: Metrics;
  onServed: OnServed;
  maxBatchSize: number;
  /** The HTML of a stored drift report, served at /reports/<id>. */
  report?: (id: string) => Promise<string | undefined>;
  /** Reads the alias again now (POST /model/reload); absent where nothing follows an alias. */
  reload?: () => Promise<void>;
  /** The bearer tokens, checked as the same calls are checked over RPC (see `accessOf`). */
  tokens?: TokenBook;
  /** BIKESHARE_PREDICT_AUTH=required: predictions and what they show need a reader token or higher. */
  predictNeedsToken?: boolean;
  /** The name and alias POST /model/reload answers with. */
  modelName?: string;
  alias?: string;
}

/** The old API's default level of /predict/confidence. */
export const DEFAULT_CONFIDENCE_LEVEL = 0.95;

/** The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9): z of a two-sided level. */
export function normalQuantile(p: number): number {
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const [a0, a1, a2, a3, a4, a5] = a as [number, number, number, number, number, number];
  const [b0, b1, b2, b3, b4] = b as [number, number, number, number, number];
  const [c0, c1, c2, c3, c4, c5] = c as [number, number, number, number, number, number];
  const [d0, d1, d2, d3] = d as [number, number, number, number];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (
      (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) /
      ((((d0 * q + d1) * q + d2) * q + d3) * q + 1)
    );
  }
  if (p > 1 - low) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q) /
    (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1)
  );
}

/**
 * The `confidence_level` query parameter of /predict/confidence (the old API's name), in (0, 1);
 * absent: 95%.
 */
function confidenceLevelOf(req: Request): number {
  const query = (req.url ?? "").split("?")[1];
  const given = query === undefined ? null : new URLSearchParams(query).get("confidence_level");
  if (given === null) return DEFAULT_CONFIDENCE_LEVEL;
  const level = given.trim() === "" ? Number.NaN : Number(given);
  // prediction_std is read back from the band's width through z of the level, which vanishes towards 0.
  if (!(Number.isFinite(level) && level >= 0.5 && level < 1)) {
    throw unprocessable([
      {
        type: "less_than",
        loc: ["query", "confidence_level"],
        msg: "confidence_level must be at least 0.5 and below 1 (e.g. 0.9 for a 90% interval)",
        input: echo(given),
      },
    ]);
  }
  return level;
}

const HOUR_MS = 3_600_000;
/** `version` of GET /: the old API's major version, kept so clients that compare it still match. */
const API_VERSION = "1.0.0";

/** One record body (/predict, /predict/confidence), or FastAPI's 422 naming each bad field. */
function validOne(body: unknown): RawRecord {
  const result = validateRecord(body, "");
  if (result.ok) return result.record;
  // A body of 64 KiB can hold thousands of unknown keys: list 20, count the rest.
  const violations = new ViolationList();
  violations.add(result.violations);
  const details = toDetails(violations.listed, body, ["body"], "");
  const rest = violations.summary();
  if (rest) details.push({ type: "too_many_errors", loc: ["body"], msg: rest, input: null });
  throw unprocessable(details);
}

/** The optional `timestamp` of a validated body, as the start of its hour (epoch ms). */
function hourStartOf(body: unknown): number | undefined {
  const timestamp = (body as { timestamp?: unknown }).timestamp;
  return typeof timestamp === "string" ? Math.floor(Date.parse(timestamp) / HOUR_MS) * HOUR_MS : undefined;
}

/**
 * The former Python API's routes with their exact JSON shapes (clients keep working),
 * plus /metrics, /docs and the Kubernetes probes. Returns false when the path is not one of them.
 */
export function createLegacyHandler(options: LegacyOptions): (req: Request, res: Response) => Promise<void> {
  const { slot, metrics, onServed, maxBatchSize } = options;
  const spec = legacyOpenApi(maxBatchSize);
  const docsPage = renderDocs(spec);
  const model = () => requireModel(slot);

  const routes: Record<string, (req: Request, requestId: string) => Promise<[number, unknown, string?]>> = {
    "GET /": async () => [
      200,
      {
        message: "Bike Sharing Demand Prediction API",
        version: API_VERSION,
        docs: "/docs",
      },
    ],
    "POST /model/reload": async () => {
      if (!options.reload) {
        throw new BikeshareError("failed_precondition", "this process does not follow a model alias");
      }
      // Serialised with the alias follower: a version is swapped in only once fully loaded, and the one
      // it replaces is released after its last request, so a reload under load fails no request.
      await options.reload();
      const serving = model();
      return [
        200,
        {
          message: `Model reloaded: ${serving.name} version ${serving.version}`,
          timestamp: new Date().toISOString(),
          model_name: serving.name,
          model_stage: options.alias ?? "production",
        },
      ];
    },
    "POST /predict/confidence": async (req, requestId) => {
      const level = confidenceLevelOf(req);
      const body = await readJson(req, 64 * 1024);
      const record = validOne(body);
      const serving = model();
      const { predictions, interval } = await predictWithInterval(serving, [record], level).catch(
        (error: unknown) => {
          // A level the model's calibration is too small for: the query's fault, said in this API's shape.
          if (!(error instanceof BikeshareError && error.code === "invalid_argument")) throw error;
          throw unprocessable([
            {
              type: "value_error",
              loc: ["query", "confidence_level"],
              msg: error.message.replace(/^interval_level /, "confidence_level "),
              input: level,
            },
          ]);
        },
      );
      if (!interval) throw new Error("predictWithInterval returned no interval for a level");
      await onServed({
        requestId,
        model: serving,
        records: [record],
        hourStarts: [hourStartOf(body)],
        predictions,
        interval,
      });
      const lower = interval.lower[0] as number;
      const upper = interval.upper[0] as number;
      // The old API reported the trees' σ; this is the calibrated band read back as a normal σ.
      const z = normalQuantile(0.5 + level / 2);
      return [
        200,
        {
          predictions: [predictions[0]],
          mean_prediction: predictions[0],
          confidence_intervals: { lower: [lower], upper: [upper] },
          prediction_std: [(upper - lower) / (2 * z)],
          timestamp: new Date().toISOString(),
          model_version: serving.version,
        },
      ];
    },
    "POST /predict": async (req, requestId) => {
      const body = await readJson(req, 64 * 1024);
      const record = validOne(body);
      const serving = model();
      const predictions = await serving.predict(recordsToColumns([record]));
      await onServed({
        requestId,
        model: serving,
        records: [record],
        hourStarts: [hourStartOf(body)],
        predictions,
      });
      return [
        200,
        { prediction: predictions[0], timestamp: new Date().toISOString(), model_version: serving.version },
      ];
    },
    // Not in the old API: the forecast of one record with why (core/explain), named by the body's keys.
    "POST /predict/explain": async (req, requestId) => {
      const body = await readJson(req, 64 * 1024);
      const record = validOne(body);
      const serving = model();
      const predictions = await serving.predict(recordsToColumns([record]));
      const [explanation] = await explainRecords(serving, [record], TIMESTAMP_FIELD);
      if (!explanation) throw new Error("explainRecords returned no explanation for one record");
      await onServed({
        requestId,
        model: serving,
        records: [record],
        hourStarts: [hourStartOf(body)],
        predictions,
      });
      return [
        200,
        {
          prediction: predictions[0],
          bias: explanation.bias,
          contributions: Object.fromEntries(explanation.contributions.map((c) => [c.feature, c.value])),
          derived: explanation.derived,
          space: explanation.space,
          timestamp: new Date().toISOString(),
          model_version: serving.version,
        },
      ];
    },
    "POST /predict/batch": async (req, requestId) => {
      const body = await readJson(req, 1024 + maxBatchSize * 1024);
      const inputs = (body as { inputs?: unknown } | null)?.inputs;
      if (typeof body !== "object" || body === null || Array.isArray(body) || !Array.isArray(inputs)) {
        throw unprocessable([
          {
            type: "missing",
            loc: ["body", "inputs"],
            msg: "inputs is required: a list of records",
            input: echo(body),
          },
        ]);
      }
      // Only the first violations become detail entries; the rest are counted in a last entry.
      const violations = new ViolationList();
      const extra = Object.keys(body).filter((k) => k !== "inputs");
      violations.add(
        extra.map((k) => ({
          field: shortKey(k),
          type: "extra",
          description: "is not a known field; the only field is inputs",
        })),
      );
      const details: Detail[] = violations.listed.map((v, i) => ({
        type: "extra",
        loc: ["body", v.field],
        msg: `${v.field} ${v.description}`,
        input: echo((body as Record<string, unknown>)[extra[i] as string]),
      }));
      if (inputs.length > maxBatchSize) {
        details.push({
          type: "too_long",
          loc: ["body", "inputs"],
          msg: `inputs has ${inputs.length} rows; the limit is ${maxBatchSize} (BIKESHARE_MAX_BATCH)`,
          input: null,
        });
        throw unprocessable(details);
      }
      const records: RawRecord[] = [];
      inputs.forEach((input, i) => {
        const result = validateRecord(input, violations.full ? "" : `inputs[${i}]`);
        if (result.ok) {
          records.push(result.record);
          return;
        }
        const listed = violations.listed.length;
        violations.addRow(result.violations);
        const shown = result.violations.slice(0, violations.listed.length - listed);
        details.push(...toDetails(shown, input, ["body", "inputs", i], `inputs[${i}]`));
      });
      const rest = violations.summary("inputs");
      if (rest) details.push({ type: "too_many_errors", loc: ["body", "inputs"], msg: rest, input: null });
      if (violations.total > 0) throw unprocessable(details);
      const serving = model();
      const predictions = await serving.predict(recordsToColumns(records));
      await onServed({
        requestId,
        model: serving,
        records,
        hourStarts: inputs.map(hourStartOf),
        predictions,
      });
      return [
        200,
        {
          predictions: Array.from(predictions),
          timestamp: new Date().toISOString(),
          model_version: serving.version,
        },
      ];
    },
    "GET /health": async () => [
      200,
      { status: "healthy", timestamp: new Date().toISOString(), model_loaded: slot.current !== undefined },
    ],
    "GET /model/info": async () => {
      const serving = model();
      const card = serving.card;
      return [
        200,
        {
          model_name: serving.name,
          model_version: serving.version,
          model_type: `xgboost ${card.family} (${card.objective})`,
          runtime: "onnxruntime-node",
          features: card.featureNames,
          feature_importance: card.featureImportance,
          ...(card.shapImportance
            ? {
                shap_importance: card.shapImportance.fields,
                shap_feature_importance: card.shapImportance.features,
                shap_importance_space: card.shapImportance.space,
                shap_importance_window: card.shapImportance.window,
              }
            : {}),
          metrics: card.metrics,
          feature_schema_version: card.featureSchemaVersion,
          data_fingerprint: card.dataFingerprint,
        },
      ];
    },
    "GET /metrics": async () => [200, await metrics.render(), metrics.registry.contentType],
    "GET /docs": async () => [200, docsPage, "text/html; charset=utf-8"],
    "GET /openapi.json": async () => [200, spec],
    "GET /healthz": async () => [200, { status: "ok" }],
    "GET /readyz": async () =>
      slot.current
        ? [200, { status: "ready", model_version: slot.current.version }]
        : [503, { status: "not ready", reason: "no model loaded" }],
  };

  const reportRoute = async (req: Request): Promise<[number, unknown, string?]> => {
    const raw = ((req.url ?? "").split("?")[0] as string).slice("/reports/".length);
    let id: string;
    try {
      id = decodeURIComponent(raw);
    } catch (error) {
      if (!(error instanceof URIError)) throw error;
      throw new BikeshareError(
        "invalid_argument",
        `the report id in the path is not valid percent-encoding: ${JSON.stringify(raw.slice(0, 80))}`,
      );
    }
    const html = await options.report?.(id);
    if (html === undefined) {
      // The id comes from the URL, up to Node's 16 KiB header limit: name it, but not all of it.
      throw new BikeshareError(
        "not_found",
        `no drift report ${id.length > 100 ? `${id.slice(0, 100)}…` : id}`,
      );
    }
    return [200, html, "text/html; charset=utf-8"];
  };

  /**
   * What each route needs, as its RPC needs it: with BIKESHARE_PREDICT_AUTH=required, predictions, the
   * model's description and drift reports need a reader token, and a reload an admin one (it is open
   * otherwise, as the old API's was); the rest is open. A token that is sent must be valid either way.
   */
  const accessOf = (key: string): Role | "open" => {
    if (!options.predictNeedsToken) return "open";
    if (key === "POST /model/reload") return "admin";
    return key.startsWith("POST /predict") || key === "GET /model/info" || key === "GET /reports/:id"
      ? "reader"
      : "open";
  };
  const authorize = (req: Request, key: string) => {
    const needs = accessOf(key);
    const header = req.headers.authorization;
    if (header === undefined && needs === "open") return;
    const principal = options.tokens ? principalFromHeader(header ?? null, options.tokens) : undefined;
    if (principal === "malformed")
      throw new BikeshareError("unauthenticated", "the bearer token is not valid");
    if (needs === "open") return;
    if (principal === undefined) {
      throw new BikeshareError("unauthenticated", `${key} needs a bearer token with role ${needs} or higher`);
    }
    if (!roleAllows(principal.role, needs)) {
      throw new BikeshareError(
        "permission_denied",
        `${principal.name} has role ${principal.role}; ${key} needs ${needs}`,
      );
    }
  };

  return async (req, res) => {
    const requestId = requestIdOf(req);
    res.setHeader("x-request-id", requestId);
    const path = (req.url ?? "/").split("?")[0] as string;
    const isReport = req.method === "GET" && path.startsWith("/reports/") && options.report !== undefined;
    const key = isReport ? "GET /reports/:id" : `${req.method} ${path}`;
    const route = isReport ? reportRoute : routes[key];
    const started = performance.now();
    let status = 404;
    try {
      if (!route) {
        const allowed = Object.keys(routes).filter((k) => k.endsWith(` ${path}`));
        status = allowed.length > 0 ? 405 : 404;
        send(res, status, { detail: status === 405 ? "Method Not Allowed" : "Not Found" });
        return;
      }
      authorize(req, key);
      const [code, body, contentType] = await route(req, requestId);
      status = code;
      send(res, code, body, contentType);
    } catch (error) {
      if (error instanceof HttpError) {
        status = error.status;
        send(res, error.status, error.body);
      } else if (error instanceof BikeshareError && error.code !== "internal") {
        status = httpStatus(error.code);
        send(res, status, { detail: error.message });
      } else if (clientAborted(req)) {
        // nginx's "client closed request": nobody is left to answer, and it is not the server's fault.
        status = 499;
        throw error;
      } else {
        status = 500;
        send(res, 500, { detail: "internal server error" });
        throw error;
      }
    } finally {
      metrics.observe(
        "legacy",
        route ? key : "unmatched",
        String(status),
        "rest",
        (performance.now() - started) / 1000,
      );
    }
  };
}

/** The request stream broke because the client closed or reset its connection before sending it all. */
export function clientAborted(req: { readonly complete: boolean; readonly destroyed: boolean }): boolean {
  return req.destroyed && !req.complete;
}
