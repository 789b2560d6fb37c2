/**
 * gRPC through @grpc/grpc-js on the port connect-node serves (docs/design/grpc-js-transport.md, option b).
 *
 * front.ts hands each HTTP/2 connection to the http2 server of a grpc-js connection injector. That server
 * gets one 'stream' listener that picks, per stream: gRPC proper (`application/grpc`,
 * `application/grpc+proto`) goes to grpc-js; everything else (Connect over h2c, gRPC-Web, gRPC with JSON,
 * REST) to connect-node through Node's http2 compatibility layer, as before. grpc-js answers anything
 * starting with `application/grpc` itself, so without the split gRPC-Web over h2c would break and Connect
 * over h2c would get 415.
 *
 * This reaches into grpc-js internals (its private map of http2 servers, the order of 'stream' listeners),
 * which is why @grpc/grpc-js is pinned exactly; createGrpcTransport checks what it relies on and throws at
 * start-up if a new version moved it, and tests/services/grpc-transport.test.ts sends every protocol.
 */
import type http2 from "node:http2";
import { performance } from "node:perf_hooks";
import type { Code, Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { codeName } from "../observability/rpc-tracing.js";
import { grpcServiceOf, type Observe, type ServedService } from "./grpc-adapter.js";

export interface GrpcTransportOptions {
  services: readonly ServedService[];
  /** The interceptors connect-node runs, in the same order. */
  interceptors: readonly Interceptor[];
  /** Counts calls the interceptors never see: undecodable, too large, a bad grpc-timeout. */
  observe: Observe;
  maxReceiveMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS of every session, whatever it carries. */
  maxConcurrentStreams: number;
  /** Added to the response headers of every gRPC answer (a trailers-only error included). */
  responseHeaders: Readonly<Record<string, string>>;
}

type StreamListener = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  flags: number,
  rawHeaders: string[],
) => void;

type RequestListener = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

export interface GrpcTransport {
  /**
   * The HTTP/2 server to emit connections on (front.ts's `Http2Target`): gRPC streams to grpc-js, any
   * other stream to `onRequest`. Once per transport. Its `close` is for after the sessions have ended
   * (front.ts sends them GOAWAY and cuts what is left after its grace period).
   */
  http2Target(onRequest: RequestListener): { server: http2.Http2Server; close(): void };
}

/** gRPC proper, the one protocol grpc-js serves: protobuf messages, with or without parameters. */
export function isGrpcProper(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const type = contentType.split(";", 1)[0]?.trim().toLowerCase();
  return type === "application/grpc" || type === "application/grpc+proto";
}

/** One gRPC stream from the dispatch to its answer: what counting a call grpc-js refused needs. */
interface Dispatched {
  readonly started: number;
  /** Set by the interceptor: grpc-js runs one only for a path it has a handler for. */
  service?: string;
  method?: string;
  /** The handler got the message; from there the interceptor chain (or the adapter) counts the call. */
  delivered: boolean;
}

export function createGrpcTransport(options: GrpcTransportOptions): GrpcTransport {
  const { observe } = options;
  /** The stream grpc-js is setting a call up for: its interceptors run synchronously in the dispatch. */
  let dispatching: Dispatched | undefined;

  // grpc-js refuses some requests before any handler runs (too large: RESOURCE_EXHAUSTED, a bad
  // grpc-timeout, no message): no connect interceptor sees them, so the dispatch counts them from the
  // trailers-only answer grpc-js sends, as guardRpcInput counts connect-node's decode failures. This
  // interceptor tells it which method the stream is for and whether the handler took over.
  const trackDelivery: grpc.ServerInterceptor = (descriptor, call) => {
    const at = dispatching;
    if (at !== undefined) [, at.service = "", at.method = ""] = descriptor.path.split("/");
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMessage((message, next) => {
        if (at !== undefined) at.delivered = true;
        next(message);
      })
      .build();
    return new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder().withStart((next) => next(listener)).build(),
    );
  };

  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes,
    "grpc.max_concurrent_streams": options.maxConcurrentStreams,
    "grpc.enable_channelz": 0,
    // Node's default (MB): grpc-js lifts the limit, which would let one session hold unbounded memory.
    "grpc-node.max_session_memory": 10,
    interceptors: [trackDelivery],
  });
  for (const served of options.services) {
    const { definition, implementation } = grpcServiceOf(served, options.interceptors, observe);
    server.addService(definition, implementation);
  }
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  const h2 = servers ? [...servers.keys()].at(-1) : undefined;
  if (h2 === undefined || h2.listenerCount("stream") !== 1) {
    throw new Error(
      "@grpc/grpc-js no longer keeps its injector's http2 server where this version expects it: see services/rpc/grpc-transport.ts",
    );
  }
  const [toGrpc] = h2.listeners("stream") as StreamListener[];
  const extra = options.responseHeaders;
  let taken = false;

  return {
    http2Target(onRequest) {
      if (taken) throw new Error("one http2 server per gRPC transport");
      taken = true;
      // Node's compat layer adds its own 'stream' listener with the first 'request' listener.
      h2.on("request", onRequest);
      const compat = h2.listeners("stream").filter((l) => l !== toGrpc) as StreamListener[];
      const [toCompat] = compat;
      if (toGrpc === undefined || toCompat === undefined || compat.length !== 1) {
        throw new Error("Node's http2 compatibility layer did not add one 'stream' listener");
      }
      h2.removeAllListeners("stream");
      const dispatch: StreamListener = (stream, headers, flags, rawHeaders) => {
        if (!isGrpcProper(headers["content-type"])) {
          toCompat.call(h2, stream, headers, flags, rawHeaders);
          return;
        }
        const at: Dispatched = { started: performance.now(), delivered: false };
        const respond = stream.respond;
        stream.respond = (fields, opts) => {
          const status = fields?.["grpc-status"];
          if (status !== undefined && !at.delivered && at.service !== undefined && at.method !== undefined) {
            const seconds = (performance.now() - at.started) / 1000;
            observe(at.service, at.method, codeName(Number(status) as Code), "grpc", seconds);
          }
          respond.call(stream, { ...fields, ...extra }, opts);
        };
        dispatching = at;
        try {
          toGrpc.call(h2, stream, headers, flags, rawHeaders);
        } finally {
          dispatching = undefined;
        }
      };
      h2.on("stream", dispatch);
      return { server: h2, close: () => injector.destroy() };
    },
  };
}
