import { channel } from "node:diagnostics_channel";
import type http from "node:http";
import type http2 from "node:http2";
import { performance } from "node:perf_hooks";
import type {
  BinaryReadOptions,
  BinaryWriteOptions,
  DescMessage,
  DescService,
  JsonReadOptions,
  JsonWriteOptions,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import {
  type Compression,
  compressionNegotiate,
  createMethodSerializationLookup,
  type MethodSerializationLookup,
  validateReadWriteMaxBytes,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorToJsonBytes,
  parseTimeout,
  protocolVersion,
} from "@connectrpc/connect/protocol-connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { codeName } from "../observability/rpc-tracing.js";
import { type UnaryInvoker, type UnaryMethodSpec, unaryInvoker } from "../rpc/unary-invoke.js";

/**
 * Unary Connect calls (POST with a JSON or binary body, and Connect GET) served without connect-node:
 * its per-call AbortSignals, header copies and async iterables cost more than the RPC itself on a
 * single-row Predict. The wire behaviour is connect-es's own (status codes, error JSON, compression,
 * timeouts, trailers as `trailer-` headers), checked by the Connect conformance suite
 * (tests/conformance), and the call runs through the same interceptors with protocolName "connect".
 *
 * It takes only requests it answers exactly as connect-node would; everything else (streams, gRPC,
 * gRPC-Web, an unknown path, a content type or HTTP method connect-node refuses with 415 or 405) is
 * left to connect-node by returning false.
 */
export type ConnectUnaryHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => boolean;

/** A registered service and its implementation, as `router.service(service, impl)` takes them. */
export interface ServedService {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
}

/** What a call that fails before the interceptors run (they never see it) is counted with. */
export type Observe = (
  service: string,
  method: string,
  code: string,
  protocol: string,
  seconds: number,
) => void;

export interface ConnectUnaryOptions {
  readonly services: readonly ServedService[];
  readonly interceptors: readonly Interceptor[];
  readonly readMaxBytes?: number | undefined;
  readonly jsonOptions?: Partial<JsonReadOptions & JsonWriteOptions> | undefined;
  readonly binaryOptions?: Partial<BinaryReadOptions & BinaryWriteOptions> | undefined;
  /** connect-node's default: gzip and br. */
  readonly acceptCompression?: readonly Compression[] | undefined;
  readonly compressMinBytes?: number | undefined;
  readonly requireConnectProtocolHeader?: boolean | undefined;
  readonly observe?: Observe | undefined;
}

interface Route {
  readonly service: string;
  readonly method: string;
  readonly input: string;
  readonly allowGet: boolean;
  readonly serialization: MethodSerializationLookup<DescMessage, DescMessage>;
  readonly invoke: UnaryInvoker;
}

// POST bodies: connect-es's unary content types (contentTypeUnaryRegExp), split to tell proto from JSON.
const UNARY_JSON = /^application\/json(?:; ?charset=utf-?8)?$/i;
const UNARY_PROTO = /^application\/proto$/i;

// The errors services/rpc-input.ts (guardRpcInput) rewrites in connect-node's answers, rewritten alike here.
const BINARY_DECODE = /^parse binary: /;
const DECODE_FAILURE =
  /^(parse binary: |cannot decode |message size \d+ is larger than configured readMaxBytes)/;
const MAX_MESSAGE_CHARS = 1024;

/**
 * Publishes `{service, method}` for each call this handler takes, for whoever must know that the lean path
 * answered and connect-node did not (the tests; nothing is built when nobody subscribes).
 */
export const CONNECT_UNARY_CHANNEL = "bikeshare:connect-unary:answer";
const answers = channel(CONNECT_UNARY_CHANNEL);

/** The handlers' contexts by their request header, to read the headers an implementation set before it threw. */
type Contexts = WeakMap<Headers, HandlerContext>;

export function createConnectUnaryHandler(options: ConnectUnaryOptions): ConnectUnaryHandler {
  const limits = validateReadWriteMaxBytes(options.readMaxBytes, undefined, options.compressMinBytes);
  const accept = options.acceptCompression ?? [compressionGzip, compressionBrotli];
  const requireVersion = options.requireConnectProtocolHeader ?? false;
  const { jsonOptions, observe } = options;
  const contexts: Contexts = new WeakMap();
  const routes = new Map<string, Route>();
  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    for (const methodSpec of Object.values(spec.methods)) {
      if (methodSpec.kind !== "unary") continue;
      const { method } = methodSpec;
      const own = methodSpec.impl as (request: never, context: HandlerContext) => unknown;
      const lean: UnaryMethodSpec = {
        method,
        impl: (request, context) => {
          contexts.set(context.requestHeader, context);
          return own(request, context);
        },
      };
      routes.set(`/${service.typeName}/${method.name}`, {
        service: service.typeName,
        method: method.name,
        input: method.input.typeName,
        allowGet: method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
        serialization: createMethodSerializationLookup(method, options.binaryOptions, jsonOptions, limits),
        invoke: unaryInvoker(lean, options.interceptors),
      });
    }
  }

  return (req, res) => {
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const route = routes.get(q < 0 ? url : url.slice(0, q));
    if (route === undefined) return false;
    const contentType = req.headers["content-type"];
    let binary: boolean;
    let query: URLSearchParams | undefined;
    if (req.method === "POST") {
      if (contentType === undefined) return false;
      if (UNARY_JSON.test(contentType)) binary = false;
      else if (UNARY_PROTO.test(contentType)) binary = true;
      else return false;
    } else if (req.method === "GET" && route.allowGet) {
      // connect-es matches a GET's content type, when there is one, against the unary types too.
      if (
        contentType !== undefined &&
        contentType !== "" &&
        !UNARY_JSON.test(contentType) &&
        !UNARY_PROTO.test(contentType)
      )
        return false;
      query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
      const encoding = query.get("encoding");
      if (encoding === "proto") binary = true;
      else if (encoding === "json") binary = false;
      else return false;
    } else {
      return false;
    }
    if (answers.hasSubscribers) answers.publish({ service: route.service, method: route.method });
    serve(route, req, res, binary, query).catch((error: unknown) => {
      // Only writing the answer can fail here: the client is gone, nothing is left to tell it.
      if (!res.destroyed) res.destroy(error instanceof Error ? error : undefined);
    });
    return true;
  };

  async function serve(
    route: Route,
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
    binary: boolean,
    query: URLSearchParams | undefined,
  ): Promise<void> {
    const started = performance.now();
    const header = NodeHeaders.over(req.headers);
    const timeout = parseTimeout(header.get("connect-timeout-ms"), Number.MAX_SAFE_INTEGER);
    const compression = compressionNegotiate(
      accept as Compression[],
      query ? query.get("compression") : header.get("content-encoding"),
      header.get("accept-encoding"),
      "accept-encoding",
    );
    let status = 200;
    let body: Uint8Array;
    let out: Headers | undefined;
    let trailer: Headers | undefined;
    let failure: ConnectError | undefined;
    try {
      if (requireVersion) requireProtocolVersion(header, query);
      if (compression.error) throw compression.error;
      if (timeout.error) throw timeout.error;
      let bytes = query ? messageFromQuery(query) : await readBody(req, limits.readMaxBytes);
      if (compression.request) bytes = await compression.request.decompress(bytes, limits.readMaxBytes);
      const message = route.serialization.getI(binary).parse(bytes);
      const authority = "authority" in req ? req.authority : req.headers.host;
      const result = await route.invoke({
        message,
        header,
        url: `http://${authority}${req.url}`,
        protocolName: "connect",
        requestMethod: req.method ?? "POST",
        deadline: timeout.timeoutMs === undefined ? undefined : Date.now() + timeout.timeoutMs,
        onCancel: (abort) =>
          res.once("close", () => {
            if (!res.writableFinished) abort();
          }),
      });
      out = result.header;
      trailer = result.trailer;
      body = route.serialization.getO(binary).serialize(result.message as never);
    } catch (error) {
      const context = contexts.get(header);
      out = context?.responseHeader;
      trailer = context?.responseTrailer;
      failure =
        error instanceof ConnectError
          ? error
          : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
      status = codeToHttpStatus(failure.code);
      body = errorToJsonBytes(failure, jsonOptions ?? {});
    }

    const fields: Record<string, string | string[]> = {};
    if (out) copy(out, fields, "");
    fields["content-type"] = failure
      ? contentTypeUnaryJson
      : binary
        ? contentTypeUnaryProto
        : contentTypeUnaryJson;
    if (failure) {
      failure.metadata.forEach((value, key) => {
        fields[key.toLowerCase()] = value;
      });
    }
    if (trailer) copy(trailer, fields, "trailer-");
    const fixed =
      failure && DECODE_FAILURE.test(failure.rawMessage) ? decodeFailure(route, failure) : undefined;
    if (fixed) {
      observe?.(
        route.service,
        route.method,
        codeName(fixed.code),
        "connect",
        (performance.now() - started) / 1000,
      );
      status = codeToHttpStatus(fixed.code);
      body = new TextEncoder().encode(JSON.stringify({ code: codeName(fixed.code), message: fixed.message }));
    } else if (compression.response && body.byteLength >= limits.compressMinBytes) {
      body = await compression.response.compress(body);
      fields["content-encoding"] = compression.response.name;
    }
    fields["content-length"] = String(body.byteLength);
    // A browser must not read an answer that can echo client text as HTML or script.
    fields["x-content-type-options"] = "nosniff";
    if (res.destroyed) return;
    res.writeHead(status, fields);
    res.end(body);
  }
}

/** A proto that cannot be decoded is the client's fault; every decode message is bounded (as rpc-input.ts). */
function decodeFailure(route: Route, error: ConnectError): { code: Code; message: string } {
  const raw = error.rawMessage;
  const binary = BINARY_DECODE.test(raw);
  const message = binary
    ? `the request is not a valid ${route.input} in the protobuf binary format (${raw.replace(BINARY_DECODE, "")})`
    : raw;
  return {
    code: binary ? Code.InvalidArgument : error.code,
    message: message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message,
  };
}

/** Headers as connect-node builds them from Node's (HTTP/2 pseudo-headers left out). */
function requestHeader(raw: http.IncomingHttpHeaders): Headers {
  const header = new Headers();
  for (const key in raw) {
    if (key.charCodeAt(0) === 0x3a /* : */) continue;
    const value = raw[key];
    if (value === undefined) continue;
    if (typeof value === "string") header.append(key, value);
    else for (const v of value) header.append(key, v);
  }
  return header;
}

/**
 * Node's request headers as the Headers the interceptors and handlers read (`get`, `has`…), without
 * building a Web Headers per call: each `append` validates and normalises its name and value, several µs
 * of a single-row Predict. A write or an iteration works on a full copy (`requestHeader`) made then, so the
 * view behaves as that copy would. Node has already joined repeated values with ", " as `get` does.
 */
class NodeHeaders {
  private copy: Headers | undefined;
  constructor(private readonly raw: http.IncomingHttpHeaders) {}
  private all(): Headers {
    this.copy ??= requestHeader(this.raw);
    return this.copy;
  }
  get(name: string): string | null {
    if (this.copy) return this.copy.get(name);
    const key = name.toLowerCase();
    // HTTP/2 pseudo-headers are not request headers (requestHeader leaves them out too).
    if (key.charCodeAt(0) === 0x3a) return null;
    const value = this.raw[key];
    if (value === undefined) return null;
    return typeof value === "string" ? value : value.join(", ");
  }
  has(name: string): boolean {
    return this.get(name) !== null;
  }
  set(name: string, value: string): void {
    this.all().set(name, value);
  }
  append(name: string, value: string): void {
    this.all().append(name, value);
  }
  delete(name: string): void {
    this.all().delete(name);
  }
  forEach(callback: (value: string, key: string, parent: Headers) => void): void {
    this.all().forEach(callback);
  }
  getSetCookie(): string[] {
    return this.all().getSetCookie();
  }
  keys() {
    return this.all().keys();
  }
  values() {
    return this.all().values();
  }
  entries() {
    return this.all().entries();
  }
  [Symbol.iterator]() {
    return this.all()[Symbol.iterator]();
  }
  /** A Headers-typed view: it has every method interceptors call on a request header. */
  static over(raw: http.IncomingHttpHeaders): Headers {
    return new NodeHeaders(raw) as unknown as Headers;
  }
}

/** Web headers into Node's, appending to a name already there (as connect-node's webHeaderToNodeHeaders). */
function copy(from: Headers, to: Record<string, string | string[]>, prefix: string): void {
  from.forEach((value, key) => {
    const name = prefix + key.toLowerCase();
    const existing = to[name];
    if (existing === undefined) to[name] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else to[name] = [existing, value];
  });
}

function requireProtocolVersion(header: Headers, query: URLSearchParams | undefined): void {
  if (query) {
    const v = query.get("connect");
    if (v === null)
      throw new ConnectError(
        `missing required parameter: set connect to "v${protocolVersion}"`,
        Code.InvalidArgument,
      );
    if (v !== `v${protocolVersion}`)
      throw new ConnectError(`connect must be "v${protocolVersion}": got "${v}"`, Code.InvalidArgument);
    return;
  }
  const v = header.get("connect-protocol-version");
  if (v === null)
    throw new ConnectError(
      `missing required header: set connect-protocol-version to "${protocolVersion}"`,
      Code.InvalidArgument,
    );
  if (v !== protocolVersion)
    throw new ConnectError(
      `connect-protocol-version must be "${protocolVersion}": got "${v}"`,
      Code.InvalidArgument,
    );
}

/** The message of a Connect GET: `message`, base64url when `base64=1`, else the text as it is. */
function messageFromQuery(query: URLSearchParams): Uint8Array {
  const message = query.get("message") ?? "";
  if (query.get("base64") !== "1") return new TextEncoder().encode(message);
  try {
    return base64Decode(message);
  } catch (error) {
    // The client's fault, not the server's: connect-node answers `internal` here.
    throw new ConnectError(
      `the message query parameter is not valid base64url (${(error as Error).message})`,
      Code.InvalidArgument,
    );
  }
}

/**
 * The whole body, refused with resource_exhausted past `readMaxBytes` (by its Content-Length before a
 * byte is read), with connect-es's messages. What is left unread is drained after the answer by the
 * front server.
 */
function readBody(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  readMaxBytes: number,
): Promise<Uint8Array> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && /^\d+$/.test(declared)) {
    const length = Number(declared);
    if (length > readMaxBytes) {
      return Promise.reject(
        new ConnectError(
          `message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`,
          Code.ResourceExhausted,
        ),
      );
    }
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > readMaxBytes) {
        done();
        req.pause();
        reject(
          new ConnectError(
            `message size is larger than configured readMaxBytes ${readMaxBytes}`,
            Code.ResourceExhausted,
          ),
        );
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
      reject(new ConnectError(error.message, Code.Aborted, undefined, undefined, error));
    };
    const onClose = () => {
      if (req.readableEnded) return;
      done();
      reject(new ConnectError("the client closed the request", Code.Canceled));
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
