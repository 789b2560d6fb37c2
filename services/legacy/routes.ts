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
  ViolationList,
  validateRecord,
} from "../../core/features/index.js";
import { httpStatus } from "../errors.js";
import type { Metrics } from "../observability/metrics.js";
import { type ModelSlot, type OnServed, requireModel } from "../predict/predict-service.js";
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

async function readJson(req: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () => new HttpError(413, { detail: `request body is larger than ${maxBytes} bytes` });
  // A declared length over the limit is refused before a byte of the body is read.
  if (Number(req.headers["content-length"] ?? 0) > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
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
}

const HOUR_MS = 3_600_000;

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
    "POST /predict": async (req, requestId) => {
      const body = await readJson(req, 64 * 1024);
      const result = validateRecord(body, "");
      if (!result.ok) {
        // A body of 64 KiB can hold thousands of unknown keys: list 20, count the rest.
        const violations = new ViolationList();
        violations.add(result.violations);
        const details = toDetails(violations.listed, body, ["body"], "");
        const rest = violations.summary();
        if (rest) details.push({ type: "too_many_errors", loc: ["body"], msg: rest, input: null });
        throw unprocessable(details);
      }
      const record = result.record;
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
