/**
 * One unary RPC through the connect-es interceptor chain and a ServiceImpl method, without any transport:
 * the gRPC (grpc-js) adapter and the lean Connect unary HTTP handler both call it, so tracing, metrics,
 * errors and auth are the same interceptors whatever carried the request.
 *
 * It is connect's `invokeUnaryImplementation` with the per-call garbage taken out: connect's
 * `createHandlerContext` makes three AbortControllers, a deadline timer and a DOMException per call, and
 * copies the request headers; here the AbortSignal (and its timer and cancellation listener) exists only
 * if an interceptor or the implementation reads `signal`, and the response header and trailer only if
 * someone touches them. Predict reads neither.
 */
import { create, type DescMethodUnary, isMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";

/** A unary method and its implementation: `createServiceImplSpec(service, impl).methods[name]` when unary. */
export interface UnaryMethodSpec {
  readonly method: DescMethodUnary;
  readonly impl: (request: never, context: HandlerContext) => unknown;
}

/** What a transport knows of one unary call. */
export interface UnaryCall {
  /** The decoded request message. */
  readonly message: unknown;
  /**
   * The request header as interceptors see it. Only read by them (`get`, `has`, `forEach`…), so a light
   * view over the transport's own header structure will do; its `content-type` decides the protocol label.
   */
  readonly header: Headers;
  readonly url: string;
  /** "grpc", "connect" or "grpc-web", as HandlerContext.protocolName. */
  readonly protocolName: string;
  /** "POST", or "GET" for a Connect GET. */
  readonly requestMethod: string;
  /** When the call times out, in epoch milliseconds; undefined: no deadline. */
  readonly deadline?: number | undefined;
  /**
   * Subscribes to the client going away. Called at most once, and only when something reads the
   * context's `signal`; `abort` may be called at any time after.
   */
  readonly onCancel?: ((abort: () => void) => void) | undefined;
}

/** The answer of one unary call. A header or trailer nobody touched is undefined, never an empty Headers. */
export interface UnaryResult {
  readonly message: unknown;
  readonly header: Headers | undefined;
  readonly trailer: Headers | undefined;
}

/** Runs one call; a failure rejects with what the chain threw (`ConnectError.from` it for the status). */
export type UnaryInvoker = (call: UnaryCall) => Promise<UnaryResult>;

/** The HandlerContext of one call; `finish` aborts the signal (if made) as connect does when a call ends. */
class LeanContext implements HandlerContext {
  readonly values: ContextValues = createContextValues();
  readonly requestHeader: Headers;
  readonly url: string;
  readonly protocolName: string;
  readonly requestMethod: string;
  ownHeader: Headers | undefined;
  ownTrailer: Headers | undefined;
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly method: DescMethodUnary,
    private readonly call: UnaryCall,
  ) {
    this.requestHeader = call.header;
    this.url = call.url;
    this.protocolName = call.protocolName;
    this.requestMethod = call.requestMethod;
  }
  get service() {
    return this.method.parent;
  }
  get responseHeader(): Headers {
    this.ownHeader ??= new Headers();
    return this.ownHeader;
  }
  get responseTrailer(): Headers {
    this.ownTrailer ??= new Headers();
    return this.ownTrailer;
  }
  readonly timeoutMs = (): number | undefined =>
    this.call.deadline === undefined ? undefined : this.call.deadline - Date.now();
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      this.call.onCancel?.(() => controller.abort(new ConnectError("the client cancelled", Code.Canceled)));
      const { deadline } = this.call;
      if (deadline !== undefined) {
        this.timer = setTimeout(
          () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)),
          Math.max(0, deadline - Date.now()),
        );
      }
    }
    return this.controller.signal;
  }
  finish(): void {
    clearTimeout(this.timer);
    if (this.controller && !this.controller.signal.aborted) {
      this.controller.abort(new ConnectError("the call is complete", Code.Canceled));
    }
  }
}

/**
 * The request object interceptors get; `signal` is the context's lazy one, a getter on the prototype, so an
 * interceptor that passes on a spread copy (`{ ...req, header }`) passes no signal: pass the object itself
 * or set `signal: req.signal` explicitly. The copy keeps `context`, which is how the innermost step finds it.
 */
class LeanRequest {
  readonly stream = false;
  readonly service;
  readonly method;
  readonly requestMethod: string;
  readonly url: string;
  readonly header: Headers;
  readonly contextValues: ContextValues;
  constructor(
    readonly context: LeanContext,
    readonly message: unknown,
  ) {
    this.method = context.method;
    this.service = context.method.parent;
    this.requestMethod = context.requestMethod;
    this.url = context.url;
    this.header = context.requestHeader;
    this.contextValues = context.values;
  }
  get signal(): AbortSignal {
    return this.context.signal;
  }
}

/** The response the innermost step returns; its header and trailer are the context's lazy ones. */
class LeanResponse {
  readonly stream = false;
  readonly service;
  readonly method;
  constructor(
    readonly context: LeanContext,
    readonly message: unknown,
  ) {
    this.method = context.method;
    this.service = context.method.parent;
  }
  get header(): Headers {
    return this.context.responseHeader;
  }
  get trailer(): Headers {
    return this.context.responseTrailer;
  }
}

/**
 * Builds the invoker of one unary method: the interceptor chain is composed once here, as connect does it
 * (`interceptors.reduceRight`, the first interceptor outermost), not per call.
 */
export function unaryInvoker(spec: UnaryMethodSpec, interceptors: readonly Interceptor[]): UnaryInvoker {
  const { method } = spec;
  const impl = spec.impl as (request: unknown, context: HandlerContext) => unknown;
  const innermost = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const lean = req as unknown as LeanRequest;
    const context = lean.context instanceof LeanContext ? lean.context : undefined;
    if (context === undefined)
      throw new ConnectError("an interceptor replaced the request object", Code.Internal);
    // An interceptor may pass on another header or values object: the implementation sees what it passed.
    const handlerContext =
      req.header === context.requestHeader && req.contextValues === context.values
        ? context
        : (Object.create(context, {
            requestHeader: { value: req.header },
            values: { value: req.contextValues },
          }) as HandlerContext);
    const out = await impl(req.message, handlerContext);
    const message = isMessage(out, method.output) ? out : create(method.output, out as never);
    return new LeanResponse(context, message) as unknown as UnaryResponse;
  };
  const chain = interceptors.reduceRight<(req: UnaryRequest) => Promise<UnaryResponse>>(
    (next, interceptor) => interceptor(next as never) as never,
    innermost,
  );
  return async (call) => {
    const context = new LeanContext(method, call);
    try {
      const res = await chain(new LeanRequest(context, call.message) as unknown as UnaryRequest);
      // Untouched lazy headers were never made; an interceptor may also return a response of its own.
      const ours = res instanceof LeanResponse && res.context === context;
      return {
        message: res.message,
        header: ours ? context.ownHeader : res.header,
        trailer: ours ? context.ownTrailer : res.trailer,
      };
    } finally {
      context.finish();
    }
  };
}
