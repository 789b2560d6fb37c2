import { performance } from "node:perf_hooks";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import type { Code, ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
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
const MAX_MESSAGE_CHARS = 1024;

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
 * Covers Connect unary calls and gRPC; Connect streams and gRPC-Web keep connect-es's own answers.
 */
export function guardRpcInput(router: ConnectRouter, observe: Observe): void {
  router.handlers.forEach((handler, i) => {
    router.handlers[i] = guarded(handler, observe);
  });
}

function guarded(handler: UniversalHandler, observe: Observe): UniversalHandler {
  const service = handler.service.typeName;
  const method = handler.method.name;
  const input = handler.method.input.typeName;
  const describeBinary = (message: string) =>
    `the request is not a valid ${input} in the protobuf binary format (${message.replace(BINARY_DECODE, "")})`;
  const fn = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const started = performance.now();
    const res = nosniff(await handler(req));
    const protocol = protocolOf(req.header.get("content-type"));
    const count = (code: string) =>
      observe(service, method, code, protocol, (performance.now() - started) / 1000);
    if (protocol === "grpc") return grpcGuarded(res, describeBinary, count);
    if (res.status < 400 || !res.header?.get("content-type")?.startsWith("application/json")) return res;
    // A Connect unary error: one small JSON object.
    const bytes = await readAll(res.body);
    const error = parseError(bytes, res.header?.get("content-encoding"));
    if (error === undefined || !DECODE_FAILURE.test(error.message)) return withBody(res, bytes);
    let { code, message } = error;
    let status = res.status;
    if (BINARY_DECODE.test(message)) {
      code = "invalid_argument";
      status = 400;
      message = describeBinary(message);
    }
    count(code);
    const body = new TextEncoder().encode(JSON.stringify({ code, message: bounded(message) }));
    res.header?.set("content-length", String(body.byteLength));
    res.header?.delete("content-encoding");
    return { ...res, status, body: oneChunk(body) };
  };
  return Object.assign(fn, handler);
}

function grpcGuarded(
  res: UniversalServerResponse,
  describeBinary: (message: string) => string,
  count: (code: string) => void,
): UniversalServerResponse {
  const { body, trailer } = res;
  if (body === undefined || trailer === undefined || !(Symbol.asyncIterator in body)) return res;
  // connect-node writes the trailers after the last chunk of the body: fix them up then.
  async function* rewritten() {
    yield* body as AsyncIterable<Uint8Array>;
    const status = trailer?.get("grpc-status");
    const raw = trailer?.get("grpc-message");
    if (status === null || status === undefined || raw === null || raw === undefined) return;
    const message = safeDecode(raw);
    if (!DECODE_FAILURE.test(message)) return;
    if (BINARY_DECODE.test(message)) {
      trailer?.set("grpc-status", "3");
      trailer?.set("grpc-message", encodeURIComponent(bounded(describeBinary(message))));
      count("invalid_argument");
    } else {
      trailer?.set("grpc-message", encodeURIComponent(bounded(message)));
      count(codeName(Number(status) as Code));
    }
  }
  return { ...res, body: rewritten() };
}

/** A browser must not read an RPC answer, which can echo client text, as HTML or script. */
function nosniff(res: UniversalServerResponse): UniversalServerResponse {
  const header = new Headers(res.header);
  header.set("x-content-type-options", "nosniff");
  return { ...res, header };
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
  try {
    const value = JSON.parse(new TextDecoder().decode(plain)) as { code?: unknown; message?: unknown };
    return typeof value.code === "string" && typeof value.message === "string"
      ? { code: value.code, message: value.message }
      : undefined;
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

function withBody(res: UniversalServerResponse, bytes: Uint8Array): UniversalServerResponse {
  return { ...res, body: oneChunk(bytes) };
}

async function* oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}
