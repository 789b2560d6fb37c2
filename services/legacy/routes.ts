import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  type FieldViolation,
  type RawRecord,
  recordsToColumns,
  validateRecord,
} from "../../core/features/index.js";
import type { Metrics } from "../observability/metrics.js";
import type { ModelSlot, OnServed } from "../predict/predict-service.js";
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

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`);
  }
}

const unprocessable = (detail: Detail[]) => new HttpError(422, { detail });

function send(res: Response, status: number, body: unknown, contentType = "application/json"): void {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(payload) });
  res.end(payload, "utf8");
}

async function readJson(req: Request, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes)
      throw new HttpError(413, { detail: `request body is larger than ${maxBytes} bytes` });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "")
    throw unprocessable([
      { type: "missing", loc: ["body"], msg: "Field required: the request body is empty", input: null },
    ]);
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
    input: value ?? null,
  };
}

function validateOne(
  input: unknown,
  locPrefix: (string | number)[],
  pathPrefix: string,
): RawRecord | Detail[] {
  const result = validateRecord(input, pathPrefix);
  if (result.ok) return result.record;
  return result.violations.map((v) => {
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
  const model = () => {
    const current = slot.current;
    if (!current)
      throw new HttpError(503, { detail: "no model is loaded yet; the server is still starting" });
    return current;
  };

  const routes: Record<string, (req: Request) => Promise<[number, unknown, string?]>> = {
    "POST /predict": async (req) => {
      const body = await readJson(req, 64 * 1024);
      const record = validateOne(body, ["body"], "");
      if (Array.isArray(record)) throw unprocessable(record);
      const serving = model();
      const predictions = await serving.predict(recordsToColumns([record]));
      await onServed({
        requestId: randomUUID(),
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
    "POST /predict/batch": async (req) => {
      const body = await readJson(req, 1024 + maxBatchSize * 1024);
      const inputs = (body as { inputs?: unknown } | null)?.inputs;
      if (typeof body !== "object" || body === null || Array.isArray(body) || !Array.isArray(inputs)) {
        throw unprocessable([
          {
            type: "missing",
            loc: ["body", "inputs"],
            msg: "inputs is required: a list of records",
            input: body,
          },
        ]);
      }
      const extra = Object.keys(body).filter((k) => k !== "inputs");
      const details: Detail[] = extra.map((k) => ({
        type: "extra",
        loc: ["body", k],
        msg: `${k} is not a known field; the only field is inputs`,
        input: (body as Record<string, unknown>)[k],
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
        const result = validateOne(input, ["body", "inputs", i], `inputs[${i}]`);
        if (Array.isArray(result)) details.push(...result);
        else records.push(result);
      });
      if (details.length > 0) throw unprocessable(details);
      const serving = model();
      const predictions = await serving.predict(recordsToColumns(records));
      await onServed({
        requestId: randomUUID(),
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
    "GET /metrics": async () => [200, await metrics.registry.metrics(), metrics.registry.contentType],
    "GET /docs": async () => [200, docsPage, "text/html; charset=utf-8"],
    "GET /openapi.json": async () => [200, spec],
    "GET /healthz": async () => [200, { status: "ok" }],
    "GET /readyz": async () =>
      slot.current
        ? [200, { status: "ready", model_version: slot.current.version }]
        : [503, { status: "not ready", reason: "no model loaded" }],
  };

  const reportRoute = async (req: Request): Promise<[number, unknown, string?]> => {
    const id = decodeURIComponent(((req.url ?? "").split("?")[0] as string).slice("/reports/".length));
    const html = await options.report?.(id);
    if (html === undefined) throw new HttpError(404, { detail: `no drift report ${id}` });
    return [200, html, "text/html; charset=utf-8"];
  };

  return async (req, res) => {
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
      const [code, body, contentType] = await route(req);
      status = code;
      send(res, code, body, contentType);
    } catch (error) {
      if (error instanceof HttpError) {
        status = error.status;
        send(res, error.status, error.body);
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
