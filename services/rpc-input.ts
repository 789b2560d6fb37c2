import { performance } from "node:perf_hooks";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import { codeName, protocolOf } from "./observability/rpc-tracing.js";
import { rpcReadMaxBytes } from "./request-limits.js";

/**
 * Options of the Connect/gRPC handlers that bound what a request may be: the read limit follows
 * BIKESHARE_MAX_BATCH, and JSON fields the schema does not know are refused (protojson's default, which
 * connect-es turns off), as the legacy routes refuse them: a misspelt field is an error, not a silent 0.
 */
export function rpcInputOptions(maxBatchSize: number) {
  return { readMaxBytes: rpcReadMaxBytes(maxBatchSize), jsonOptions: { ignoreUnknownFields: false } };
}

/** Longest error message an RPC answers with: protobuf-es quotes a client's unknown JSON key in full. */
export const MAX_MESSAGE_CHARS = 1024;

// Errors connect-es raises while it reads and decodes a request, before any interceptor runs (so the
// metrics interceptor never sees them). connect-es reports an undecodable binary message as `internal`,
// as grpc-go does, but it is the client's fault: `invalid_argument`, as connect-go answers.
const BINARY_DECODE = /^parse binary: /;
const DECODE_FAILURE =
  /^(parse binary: |cannot decode |message size \d+ is larger than configured readMaxBytes)/;

type Observe = (service: string, method: string, code: string, protocol: string, seconds: number) => void;

/**
 * Wraps every handler of the router so that a request that cannot be decoded gets `invalid_argument`
 * (not `internal`) with a bounded message, and is counted through `observe` with its real code; every
 * answer gets `X-Content-Type-Options: nosniff`.
 * Covers every protocol connect-node serves: Connect unary and streams, gRPC and gRPC-Web.
 */
export function guardRpcInput(router: ConnectRouter, observe: Observe): void {
  router.handlers.forEach((handler, i) => {
    router.handlers[i] = guarded(handler, observe);
  });
}

/** A code as connect-es writes it in JSON ("invalid_argument") to the Code enum. */
const CODE_BY_NAME = new Map(
  Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map((c) => [codeName(c), c]),
);

/** The status to answer instead of connect-es's, or undefined to leave its answer as it is. */
type Fix = (code: Code, message: string) => { code: Code; message: string } | undefined;

function guarded(handler: UniversalHandler, observe: Observe): UniversalHandler {
  const service = handler.service.typeName;
  const method = handler.method.name;
  const input = handler.method.input.typeName;
  const fn = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const started = performance.now();
    const res = nosniff(await handler(req));
    const contentType = req.header.get("content-type") ?? "";
    const protocol = protocolOf(contentType);
    const fix: Fix = (code, message) => {
      if (!DECODE_FAILURE.test(message)) return undefined;
      const fixed = BINARY_DECODE.test(message)
        ? {
            code: Code.InvalidArgument,
            message: `the request is not a valid ${input} in the protobuf binary format (${message.replace(BINARY_DECODE, "")})`,
          }
        : { code, message };
      observe(service, method, codeName(fixed.code), protocol, (performance.now() - started) / 1000);
      return { code: fixed.code, message: bounded(fixed.message) };
    };
    if (protocol === "grpc") return grpcGuarded(res, fix);
    if (protocol === "grpc-web") return lastFrameGuarded(res, GRPC_WEB_TRAILER, grpcWebTrailerFixed, fix);
    if (contentType.startsWith("application/connect+")) {
      return lastFrameGuarded(res, CONNECT_END_STREAM, endStreamFixed, fix);
    }
    return connectUnaryGuarded(res, fix);
  };
  return Object.assign(fn, handler);
}

/** A Connect unary error is the whole body: one JSON object, compressed when it is long. */
async function connectUnaryGuarded(res: UniversalServerResponse, fix: Fix): Promise<UniversalServerResponse> {
  if (res.status < 400 || !res.header?.get("content-type")?.startsWith("application/json")) return res;
  const bytes = await readAll(res.body);
  const error = parseError(bytes, res.header?.get("content-encoding"));
  const code = error && CODE_BY_NAME.get(error.code);
  const fixed = error && code !== undefined ? fix(code, error.message) : undefined;
  if (fixed === undefined) return { ...res, body: oneChunk(bytes) };
  const body = new TextEncoder().encode(
    JSON.stringify({ code: codeName(fixed.code), message: fixed.message }),
  );
  res.header?.set("content-length", String(body.byteLength));
  res.header?.delete("content-encoding");
  return { ...res, status: codeToHttpStatus(fixed.code), body: oneChunk(body) };
}

/** gRPC: connect-node writes the trailers after the last chunk of the body, so they are fixed up then. */
function grpcGuarded(res: UniversalServerResponse, fix: Fix): UniversalServerResponse {
  const { body, trailer } = res;
  if (body === undefined || trailer === undefined || !(Symbol.asyncIterator in body)) return res;
  async function* rewritten() {
    yield* body as AsyncIterable<Uint8Array>;
    const fixed = fixStatusFields(trailer as Headers, fix);
    if (fixed) for (const [k, v] of fixed) trailer?.set(k, v);
  }
  return { ...res, body: rewritten() };
}

/** The gRPC status fields after `fix`, or undefined when they stay as they are. */
function fixStatusFields(fields: { get(name: string): string | null | undefined }, fix: Fix) {
  const status = fields.get("grpc-status");
  const raw = fields.get("grpc-message");
  if (status === null || status === undefined || raw === null || raw === undefined) return undefined;
  const fixed = fix(Number(status) as Code, safeDecode(raw));
  if (fixed === undefined) return undefined;
  return [
    ["grpc-status", String(fixed.code)],
    ["grpc-message", encodeURIComponent(fixed.message)],
  ] as const;
}

// Flags of the frame that ends a gRPC-Web response (its trailers) and a Connect stream (end-stream JSON).
const GRPC_WEB_TRAILER = 0x80;
const CONNECT_END_STREAM = 0x02;

/**
 * gRPC-Web and Connect streams carry the status in a last frame of the body: fixed up as it passes, so
 * nothing is held back. Each chunk is one frame; a compressed one (flag bit 1) is left as it is.
 */
function lastFrameGuarded(
  res: UniversalServerResponse,
  flag: number,
  rewrite: (payload: Uint8Array, fix: Fix) => Uint8Array | undefined,
  fix: Fix,
): UniversalServerResponse {
  const { body } = res;
  if (body === undefined || !(Symbol.asyncIterator in body)) return res;
  async function* frames() {
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      const payload = chunk.length >= 5 && chunk[0] === flag ? rewrite(chunk.subarray(5), fix) : undefined;
      yield payload === undefined ? chunk : frame(flag, payload);
    }
  }
  return { ...res, body: frames() };
}

function frame(flag: number, payload: Uint8Array): Uint8Array {
  const out = Buffer.alloc(5 + payload.byteLength);
  out[0] = flag;
  out.writeUInt32BE(payload.byteLength, 1);
  out.set(payload, 5);
  return out;
}

/** gRPC-Web trailers are HTTP/1-style header lines. */
function grpcWebTrailerFixed(payload: Uint8Array, fix: Fix): Uint8Array | undefined {
  const fields = new Map<string, string>();
  for (const line of Buffer.from(payload).toString("utf8").split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const fixed = fixStatusFields(fields, fix);
  if (fixed === undefined) return undefined;
  for (const [k, v] of fixed) fields.set(k, v);
  return Buffer.from([...fields].map(([k, v]) => `${k}: ${v}\r\n`).join(""), "utf8");
}

/** A Connect stream ends with `{"error": {"code", "message", …}, "metadata": …}`. */
function endStreamFixed(payload: Uint8Array, fix: Fix): Uint8Array | undefined {
  const end = parseJson(payload) as { error?: { code?: unknown; message?: unknown } } | undefined;
  const error = end?.error;
  if (typeof error?.code !== "string" || typeof error.message !== "string") return undefined;
  const code = CODE_BY_NAME.get(error.code);
  const fixed = code === undefined ? undefined : fix(code, error.message);
  if (fixed === undefined) return undefined;
  return Buffer.from(
    JSON.stringify({ ...end, error: { ...error, code: codeName(fixed.code), message: fixed.message } }),
  );
}

/** A browser must not read an RPC answer, which can echo client text, as HTML or script. */
function nosniff(res: UniversalServerResponse): UniversalServerResponse {
  // In place: the handler may still add headers to this object until the first chunk is written.
  if (res.header) {
    res.header.set("x-content-type-options", "nosniff");
    return res;
  }
  return { ...res, header: new Headers({ "x-content-type-options": "nosniff" }) };
}

function bounded(message: string): string {
  return message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch (error) {
    if (error instanceof URIError) return text;
    throw error;
  }
}

/** The code and message of a Connect error body, as connect-node wrote it (compressed when it was long). */
function parseError(
  bytes: Uint8Array,
  encoding: string | null | undefined,
): { code: string; message: string } | undefined {
  if (encoding && encoding !== "gzip" && encoding !== "br") return undefined;
  const plain =
    encoding === "gzip" ? gunzipSync(bytes) : encoding === "br" ? brotliDecompressSync(bytes) : bytes;
  const value = parseJson(plain) as { code?: unknown; message?: unknown } | undefined;
  return typeof value?.code === "string" && typeof value.message === "string"
    ? { code: value.code, message: value.message }
    : undefined;
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}

async function readAll(body: UniversalServerResponse["body"]): Promise<Uint8Array> {
  if (body === undefined) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function* oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}
