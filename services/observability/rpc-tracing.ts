import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import { recordError, tracer, tracingEnabled } from "./tracing.js";

/**
 * A server span for every RPC, whatever the protocol: OpenTelemetry's HTTP instrumentation sees
 * only HTTP/1.1, and gRPC runs over HTTP/2. The span continues the caller's trace when the request
 * carries a W3C `traceparent` header (gRPC metadata is an HTTP/2 header too), and the handler runs
 * with it active, so its log lines and the spans it starts (registry writes) belong to it.
 *
 * Attribute names follow the RPC semantic conventions (incubating there, hence written out here).
 */

const HEADERS: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
};

/** connect, grpc or grpc-web, from the request's content type. */
export function protocolOf(contentType: string | null): string {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/** A Connect code as Connect writes it on the wire: invalid_argument, data_loss, … */
export function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** gRPC codes that mean the server failed, not the caller (the RPC conventions for server spans). */
const SERVER_FAULTS = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

function end(span: Span, protocol: string, error?: unknown): void {
  if (error === undefined) {
    if (protocol !== "connect") span.setAttribute("rpc.grpc.status_code", 0);
  } else {
    const { code } = ConnectError.from(error);
    if (protocol === "connect") {
      span.setAttribute("rpc.connect_rpc.error_code", codeName(code));
    } else {
      span.setAttribute("rpc.grpc.status_code", code);
    }
    if (SERVER_FAULTS.has(code)) recordError(span, error);
  }
  span.end();
}

/** Ends the span when the response stream ends; the handler's code runs with the span active. */
function traced<T>(messages: AsyncIterable<T>, span: Span, ctx: Context, protocol: string): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = context.with(ctx, () => messages[Symbol.asyncIterator]());
      let open = true;
      const finish = (error?: unknown) => {
        if (!open) return;
        open = false;
        end(span, protocol, error);
      };
      return {
        async next() {
          try {
            const result = await context.with(ctx, () => it.next());
            if (result.done) finish();
            return result;
          } catch (error) {
            finish(error);
            throw error;
          }
        },
        async return(value?: unknown) {
          // The client went away or the server stopped reading early.
          finish(new ConnectError("stream closed early", Code.Canceled));
          return (await it.return?.(value)) ?? { done: true, value: undefined };
        },
      } as AsyncIterator<T>;
    },
  };
}

/** The interceptor; with tracing off it passes calls through untouched. Register it first (outermost). */
export function tracingInterceptor(): Interceptor {
  if (!tracingEnabled()) return (next) => next;
  return (next) => async (req) => {
    const parent = propagation.extract(ROOT_CONTEXT, req.header, HEADERS);
    const protocol = protocolOf(req.header.get("content-type"));
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "rpc.system": protocol === "connect" ? "connect_rpc" : "grpc",
          "rpc.service": req.service.typeName,
          "rpc.method": req.method.name,
          "bikeshare.protocol": protocol,
        },
      },
      parent,
    );
    const ctx = trace.setSpan(parent, span);
    try {
      const res = await context.with(ctx, () => next(req));
      if (!res.stream) {
        end(span, protocol);
        return res;
      }
      return { ...res, message: traced(res.message, span, ctx, protocol) };
    } catch (error) {
      end(span, protocol, error);
      throw error;
    }
  };
}
