/**
 * The Connect conformance suite's server under test (connectrpc.com/conformance, `--mode server`): reads a
 * size-delimited ServerCompatRequest on stdin, serves connectrpc.conformance.v1.ConformanceService on the
 * production front server (HTTP/1.1 and h2c on one port) and writes a size-delimited ServerCompatResponse
 * with its port on stdout.
 *
 *   --lean      unary calls go to services/http/connect-unary.ts first, the rest to connect-node
 *   --baseline  connect-node serves everything (what the lean path must match)
 *
 * With CONFORMANCE_LEAN_LOG set, each call the lean path answers appends a line to that file, so the test
 * can tell that it served the cases and did not hand them all to connect-node.
 */
import { subscribe } from "node:diagnostics_channel";
import { appendFileSync } from "node:fs";
import { create, createRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, anyPack } from "@bufbuild/protobuf/wkt";
import { ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
// biome-ignore lint/style/noRestrictedImports: the conformance suite's own generated messages, by their own path (biome.json lists only the project's)
import * as wire from "../../gen/connectrpc/conformance/v1/server_compat_pb.js";
// biome-ignore lint/style/noRestrictedImports: the conformance suite's own generated messages, by their own path (biome.json lists only the project's)
import * as conformance from "../../gen/connectrpc/conformance/v1/service_pb.js";
import { errorInterceptor } from "../../services/errors.js";
import { CONNECT_UNARY_CHANNEL, createConnectUnaryHandler } from "../../services/http/connect-unary.js";
import { createFrontServer } from "../../services/http/front.js";
import { createLogger } from "../../services/observability/log.js";
import { tracingInterceptor } from "../../services/observability/rpc-tracing.js";
import { guardRpcInput, rpcInputOptions } from "../../services/rpc-input.js";

const mode = process.argv[2];
if (mode !== "--lean" && mode !== "--baseline") {
  process.stderr.write("usage: server.ts --lean|--baseline\n");
  process.exit(2);
}

async function readDelimited(): Promise<Uint8Array> {
  let buffered = Buffer.alloc(0);
  for await (const chunk of process.stdin) {
    buffered = Buffer.concat([buffered, chunk as Buffer]);
    if (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) break;
  }
  if (buffered.length < 4) throw new Error("stdin closed before a ServerCompatRequest arrived");
  return buffered.subarray(4, 4 + buffered.readUInt32BE(0));
}

function requestInfo(ctx: HandlerContext, requests: Any[], get: boolean) {
  const timeoutMs = ctx.timeoutMs();
  const headers: conformance.Header[] = [];
  ctx.requestHeader.forEach((value, name) => {
    headers.push(create(conformance.HeaderSchema, { name, value: [value] }));
  });
  const info = create(conformance.ConformancePayload_RequestInfoSchema, {
    requestHeaders: headers,
    requests,
    ...(timeoutMs !== undefined ? { timeoutMs: BigInt(timeoutMs) } : {}),
  });
  if (get) {
    const params = new URL(ctx.url).searchParams;
    const queryParams: conformance.Header[] = [];
    for (const name of new Set(params.keys())) {
      queryParams.push(create(conformance.HeaderSchema, { name, value: params.getAll(name) }));
    }
    info.connectGetInfo = create(conformance.ConformancePayload_ConnectGetInfoSchema, { queryParams });
  }
  return info;
}

function append(target: Headers, headers: readonly conformance.Header[]): void {
  for (const header of headers) for (const value of header.value) target.append(header.name, value);
}

function toConnectError(error: conformance.Error, info: ReturnType<typeof requestInfo>): ConnectError {
  const details = [
    ...error.details.map((any) => ({
      type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
      value: any.value,
    })),
    {
      type: conformance.ConformancePayload_RequestInfoSchema.typeName,
      value: toBinary(conformance.ConformancePayload_RequestInfoSchema, info),
    },
  ];
  // Raw Any details travel as connect-es's IncomingDetail shape, which its error JSON writes as they are.
  const connectError = new ConnectError(error.message ?? "", error.code as number);
  connectError.details.push(...details);
  return connectError;
}

async function unary(
  def: conformance.UnaryResponseDefinition | undefined,
  request: Any,
  ctx: HandlerContext,
  get: boolean,
) {
  append(ctx.responseHeader, def?.responseHeaders ?? []);
  append(ctx.responseTrailer, def?.responseTrailers ?? []);
  const info = requestInfo(ctx, [request], get);
  if (def?.response.case === "error") throw toConnectError(def.response.value, info);
  if (def?.responseDelayMs) await new Promise((resolve) => setTimeout(resolve, def.responseDelayMs));
  return {
    payload: create(conformance.ConformancePayloadSchema, {
      requestInfo: info,
      ...(def?.response.case === "responseData" ? { data: def.response.value } : {}),
    }),
  };
}

const impl: Partial<ServiceImpl<typeof conformance.ConformanceService>> = {
  unary: (req, ctx) =>
    unary(req.responseDefinition, anyPack(conformance.UnaryRequestSchema, req), ctx, false),
  idempotentUnary: (req, ctx) =>
    unary(
      req.responseDefinition,
      anyPack(conformance.IdempotentUnaryRequestSchema, req),
      ctx,
      ctx.requestMethod === "GET",
    ),
};

const compat = fromBinary(wire.ServerCompatRequestSchema, await readDelimited());
if (compat.useTls)
  throw new Error("TLS is not configured for this server under test (config.yaml: supports_tls false)");
const limits = rpcInputOptions(1000);
const readMaxBytes = compat.messageReceiveLimit > 0 ? compat.messageReceiveLimit : limits.readMaxBytes;
const jsonOptions = {
  ...limits.jsonOptions,
  registry: createRegistry(
    conformance.UnaryRequestSchema,
    conformance.IdempotentUnaryRequestSchema,
    conformance.ConformancePayload_RequestInfoSchema,
  ),
};
const interceptors = [tracingInterceptor(), errorInterceptor()];
const connectNode = connectNodeAdapter({
  routes: (router) => {
    router.service(conformance.ConformanceService, impl);
    guardRpcInput(router, () => {});
  },
  interceptors,
  readMaxBytes,
  jsonOptions,
});
const leanLog = process.env.CONFORMANCE_LEAN_LOG;
if (leanLog) subscribe(CONNECT_UNARY_CHANNEL, () => appendFileSync(leanLog, "answered\n"));
const lean =
  mode === "--lean"
    ? createConnectUnaryHandler({
        services: [{ service: conformance.ConformanceService, impl }],
        interceptors,
        readMaxBytes,
        jsonOptions,
      })
    : undefined;
const log = createLogger({}, "error", (line) => process.stderr.write(line));
const front = createFrontServer(
  (req, res) => {
    if (!lean?.(req, res)) connectNode(req, res);
  },
  {
    headersTimeoutMs: 30_000,
    requestTimeoutMs: 60_000,
    idleTimeoutMs: 30_000,
    maxConnections: 1000,
    http2MaxStreams: 1000,
  },
  log,
  () => {},
);
const port = await front.listen(0, "127.0.0.1");
const out = toBinary(
  wire.ServerCompatResponseSchema,
  create(wire.ServerCompatResponseSchema, { host: "127.0.0.1", port }),
);
const size = Buffer.alloc(4);
size.writeUInt32BE(out.byteLength);
process.stdout.write(Buffer.concat([size, out]));
process.on("SIGTERM", () => {
  front.close().then(() => process.exit(0));
});
