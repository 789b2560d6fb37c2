import type { connectNodeAdapter } from "@connectrpc/connect-node";
import { BikeshareError, type ErrorCode } from "../../core/errors.js";
import type { Principal, Role } from "../auth/principal.js";
import { formatPath, jsonTooDeep, MAX_JSON_DEPTH } from "../request-limits.js";

// connect-node does not export its request/response types; take them from its fallback signature.
type Fallback = NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>;
export type Request = Parameters<Fallback>[0];
export type Response = Parameters<Fallback>[1];

/** MLflow's error codes (databricks_pb2.ErrorCode) in use here, with the HTTP status MLflow's server gives each. */
export const MLFLOW_STATUS_OF = {
  INVALID_PARAMETER_VALUE: 400,
  RESOURCE_ALREADY_EXISTS: 400,
  INVALID_STATE: 500,
  BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  RESOURCE_DOES_NOT_EXIST: 404,
  ENDPOINT_NOT_FOUND: 404,
  REQUEST_LIMIT_EXCEEDED: 429,
  INTERNAL_ERROR: 500,
  TEMPORARILY_UNAVAILABLE: 503,
} as const;

export type MlflowErrorCode = keyof typeof MLFLOW_STATUS_OF;

/** An answer in MLflow's error shape: `{"error_code": "...", "message": "..."}`. */
export class MlflowError extends Error {
  constructor(
    readonly errorCode: MlflowErrorCode,
    message: string,
    /** An HTTP status other than MLflow's for the code (a body too large is 413, not 429). */
    readonly status: number = MLFLOW_STATUS_OF[errorCode],
  ) {
    super(message);
    this.name = "MlflowError";
  }
}

const FROM_BIKESHARE: Record<ErrorCode, MlflowErrorCode> = {
  cancelled: "INTERNAL_ERROR",
  invalid_argument: "INVALID_PARAMETER_VALUE",
  not_found: "RESOURCE_DOES_NOT_EXIST",
  already_exists: "RESOURCE_ALREADY_EXISTS",
  permission_denied: "PERMISSION_DENIED",
  unauthenticated: "UNAUTHENTICATED",
  resource_exhausted: "REQUEST_LIMIT_EXCEEDED",
  failed_precondition: "INVALID_STATE",
  unavailable: "TEMPORARILY_UNAVAILABLE",
  data_loss: "INTERNAL_ERROR",
  internal: "INTERNAL_ERROR",
};

/** The MLflow error for anything a handler threw; undefined for a bug (answered as INTERNAL_ERROR and logged). */
export function toMlflowError(error: unknown): MlflowError | undefined {
  if (error instanceof MlflowError) return error;
  if (error instanceof BikeshareError) return new MlflowError(FROM_BIKESHARE[error.code], error.message);
  return undefined;
}

export function sendJson(res: Response, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
    "x-content-type-options": "nosniff",
  });
  res.end(payload, "utf8");
}

export function sendError(res: Response, error: MlflowError): void {
  sendJson(res, error.status, { error_code: error.errorCode, message: error.message });
}

/** What one MLflow endpoint gets: the merged query and JSON body, the caller, the raw request. */
export interface Call {
  readonly params: Record<string, unknown>;
  readonly principal: Principal;
  readonly req: Request;
  readonly res: Response;
  /** The path after the route's prefix (artifact paths). */
  readonly rest: string;
}

export interface Route {
  readonly method: "GET" | "POST" | "PATCH" | "DELETE" | "PUT";
  /** Least role, as the matching RegistryService method in services/auth/interceptor.ts. */
  readonly role: Role;
  /** Handlers that read the body themselves (artifact uploads) get no parsed JSON. */
  readonly rawBody?: boolean;
  readonly handle: (call: Call) => Promise<unknown>;
}

/**
 * The request's JSON body with the limits of the legacy routes: a declared or actual length over
 * `maxBytes` and nesting deeper than MAX_JSON_DEPTH are refused before JSON.parse; an empty body is {}.
 */
export async function readJsonBody(req: Request, maxBytes: number): Promise<Record<string, unknown>> {
  const tooLarge = () =>
    new MlflowError("REQUEST_LIMIT_EXCEEDED", `the request body is larger than ${maxBytes} bytes`, 413);
  if (Number(req.headers["content-length"] ?? 0) > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  const deep = jsonTooDeep(text);
  if (deep !== undefined) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `${formatPath(deep, "body")} nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `the request body is not valid JSON: ${(error as Error).message}`,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new MlflowError("INVALID_PARAMETER_VALUE", "the request body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/** Query parameters as MLflow's client sends them for GET: repeated keys become lists. */
export function queryParams(url: URL): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    out[key] = values.length === 1 ? values[0] : values;
  }
  return out;
}

function bad(field: string, message: string): never {
  throw new MlflowError("INVALID_PARAMETER_VALUE", `${field}: ${message}`);
}

/** The longest filter the in-memory search endpoints (experiments, models, versions) accept. */
export const MAX_SIMPLE_FILTER_LENGTH = 1024;

export function checkFilterLength(filter: string): void {
  if (filter.length > MAX_SIMPLE_FILTER_LENGTH) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `filter is ${filter.length} characters long; the limit is ${MAX_SIMPLE_FILTER_LENGTH}`,
    );
  }
}

export function str(params: Record<string, unknown>, field: string): string | undefined {
  const v = params[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") bad(field, `must be a string, got ${typeof v}`);
  return v;
}

export function requireStr(params: Record<string, unknown>, field: string): string {
  const v = str(params, field);
  if (v === undefined || v === "") {
    throw new MlflowError("INVALID_PARAMETER_VALUE", `Missing value for required parameter '${field}'.`);
  }
  return v;
}

/** An int64 field: MLflow's client sends a number in JSON and a string in a query. */
export function int(params: Record<string, unknown>, field: string): number | undefined {
  const v = params[field];
  if (v === undefined || v === null || v === "") return undefined;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n))
    bad(field, `must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

export function num(params: Record<string, unknown>, field: string): number {
  const v = params[field];
  const n = typeof v === "string" && /^(NaN|-?Infinity)$/.test(v) ? Number(v) : v;
  if (typeof n !== "number") bad(field, `must be a number, got ${JSON.stringify(v)}`);
  return n;
}

export function strList(params: Record<string, unknown>, field: string): string[] {
  const v = params[field];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((item, i) => {
    if (typeof item !== "string") bad(`${field}[${i}]`, "must be a string");
    return item;
  });
}

/** `[{key, value}]` lists (tags, params) as MLflow sends them. */
export function keyValues(params: Record<string, unknown>, field: string): Record<string, string> {
  const v = params[field];
  if (v === undefined || v === null) return {};
  if (!Array.isArray(v)) bad(field, "must be a list of {key, value}");
  // No prototype: a key such as `__proto__` is an entry like any other, not a prototype change.
  const out: Record<string, string> = Object.create(null);
  v.forEach((item, i) => {
    const entry = item as { key?: unknown; value?: unknown } | null;
    if (typeof entry !== "object" || entry === null || typeof entry.key !== "string") {
      bad(`${field}[${i}].key`, "is required");
    }
    const value = entry.value ?? "";
    if (typeof value !== "string") bad(`${field}[${i}].value`, "must be a string");
    out[entry.key] = value;
  });
  return out;
}

/** An opaque offset token for endpoints paged in memory. */
export function offsetOf(token: string | undefined): number {
  if (token === undefined || token === "") return 0;
  const n = Number(
    Buffer.from(token, "base64url")
      .toString("utf8")
      .replace(/^offset:/, ""),
  );
  if (!Number.isSafeInteger(n) || n < 0) bad("page_token", "is not valid");
  return n;
}

export function pageOf<T>(
  items: readonly T[],
  params: Record<string, unknown>,
  defaultSize: number,
  maxSize: number,
): { items: T[]; next_page_token?: string } {
  const size = int(params, "max_results") ?? defaultSize;
  if (size < 1 || size > maxSize) bad("max_results", `must be between 1 and ${maxSize}, got ${size}`);
  const offset = offsetOf(str(params, "page_token"));
  const page = items.slice(offset, offset + size);
  const next = offset + size < items.length;
  return {
    items: page,
    ...(next ? { next_page_token: Buffer.from(`offset:${offset + size}`).toString("base64url") } : {}),
  };
}
