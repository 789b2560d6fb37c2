/**
 * Serves connect-es ServiceImpl objects through @grpc/grpc-js, with the connect Interceptors connect-node
 * uses, applied the same way: one implementation of each service, two transports.
 */
import { performance } from "node:perf_hooks";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  isMessage,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createHandlerContext,
  createServiceImplSpec,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import { transformInvokeImplementation } from "@connectrpc/connect/protocol";
import type * as grpc from "@grpc/grpc-js";
import { codeName } from "../observability/rpc-tracing.js";
import { MAX_MESSAGE_CHARS } from "../rpc-input.js";
import { headersToMetadata, MetadataHeaders, metadataToHeaders, toGrpcStatus } from "./grpc-status.js";
import { type UnaryMethodSpec, unaryInvoker } from "./unary-invoke.js";

/** A service and its implementation, served on every transport. */
export interface ServedService {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
}

/** A ServedService from a service and its typed implementation. */
export function served<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): ServedService {
  return { service, impl: impl as Partial<ServiceImpl<DescService>> };
}

/** Counts a call nothing in the interceptor chain saw (as guardRpcInput's `observe` does for connect-node). */
export type Observe = (
  service: string,
  method: string,
  code: string,
  protocol: string,
  seconds: number,
) => void;

/** What `protocolOf()` in the tracing and metrics interceptors reads: grpc-js serves only gRPC proper. */
const GRPC_CONTENT_TYPE = { "content-type": "application/grpc" } as const;

/**
 * A request grpc-js could not hand over as a message: answered `invalid_argument` by the handler with the
 * message connect-node gives (guardRpcInput), where grpc-js itself would answer INTERNAL.
 */
class Undecodable {
  constructor(
    readonly input: DescMessage,
    readonly error: unknown,
  ) {}
  toError(): ConnectError {
    const reason = this.error instanceof Error ? this.error.message : String(this.error);
    const message = `the request is not a valid ${this.input.typeName} in the protobuf binary format (${reason})`;
    // protobuf-es may quote what it could not parse: bounded as guardRpcInput bounds connect-node's answer
    const bounded = message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
    return new ConnectError(bounded, Code.InvalidArgument);
  }
}

function methodDefinition(method: DescMethod): grpc.MethodDefinition<unknown, unknown> {
  const decode = (schema: DescMessage) => (bytes: Buffer) => {
    try {
      return fromBinary(schema, bytes);
    } catch (error) {
      return new Undecodable(schema, error);
    }
  };
  const encode = (schema: DescMessage) => (message: unknown) =>
    Buffer.from(toBinary(schema, isMessage(message, schema) ? message : create(schema, message as never)));
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: encode(method.input),
    requestDeserialize: decode(method.input),
    responseSerialize: encode(method.output),
    responseDeserialize: decode(method.output),
  };
}

/** What every kind of grpc-js call has (grpc-js does not export its ServerSurfaceCall type). */
type SurfaceCall = Pick<
  grpc.ServerUnaryCall<unknown, unknown>,
  "getDeadline" | "getPath" | "metadata" | "once"
>;

/** Epoch milliseconds of a grpc-js deadline, or undefined for none. */
function deadlineOf(call: SurfaceCall): number | undefined {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at : undefined;
}

function unaryHandler(
  spec: Extract<MethodImplSpec, { kind: "unary" }>,
  interceptors: readonly Interceptor[],
  observe: Observe,
): grpc.handleUnaryCall<unknown, unknown> {
  const invoke = unaryInvoker(spec as unknown as UnaryMethodSpec, interceptors);
  const { method } = spec;
  const service = method.parent.typeName;
  return (call, callback) => {
    const started = performance.now();
    const message = call.request;
    if (message instanceof Undecodable) {
      // Decoding fails before the interceptors, as in connect-node: counted here instead.
      observe(
        service,
        method.name,
        codeName(Code.InvalidArgument),
        "grpc",
        (performance.now() - started) / 1000,
      );
      callback(toGrpcStatus(message.toError()));
      return;
    }
    invoke({
      message,
      header: MetadataHeaders.over(call.metadata, GRPC_CONTENT_TYPE),
      url: call.getPath(),
      protocolName: "grpc",
      requestMethod: "POST",
      deadline: deadlineOf(call),
      onCancel: (abort) => call.once("cancelled", abort),
    }).then(
      (res) => {
        if (res.header && !isEmpty(res.header)) call.sendMetadata(headersToMetadata(res.header));
        callback(null, res.message, res.trailer && headersToMetadata(res.trailer));
      },
      (error: unknown) => callback(toGrpcStatus(error)),
    );
  };
}

function isEmpty(headers: Headers): boolean {
  for (const _ of headers.keys()) return false;
  return true;
}

/** connect's own HandlerContext for a stream: streams are long, so its per-call cost does not matter. */
function streamContext(spec: MethodImplSpec, call: SurfaceCall) {
  const cancelled = new AbortController();
  call.once("cancelled", () => cancelled.abort(new ConnectError("the client cancelled", Code.Canceled)));
  const deadline = deadlineOf(call);
  return createHandlerContext({
    service: spec.method.parent,
    method: spec.method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: call.getPath(),
    ...(deadline === undefined ? {} : { timeoutMs: deadline - Date.now() }),
    requestSignal: cancelled.signal,
    requestHeader: metadataToHeaders(call.metadata, GRPC_CONTENT_TYPE),
  });
}

function streamHandler(
  spec: Exclude<MethodImplSpec, { kind: "unary" }>,
  interceptors: readonly Interceptor[],
  observe: Observe,
) {
  const { method } = spec;
  const service = method.parent.typeName;
  const checked = (message: unknown, started: number) => {
    if (!(message instanceof Undecodable)) return message;
    observe(
      service,
      method.name,
      codeName(Code.InvalidArgument),
      "grpc",
      (performance.now() - started) / 1000,
    );
    throw message.toError();
  };
  // Readable's default iterator destroys the call at the end of the input, which would end a bidi reply.
  async function* inputOf(call: grpc.ServerDuplexStream<unknown, unknown>, started: number) {
    for await (const message of call.iterator({ destroyOnReturn: false })) yield checked(message, started);
  }
  return async (
    call: grpc.ServerWritableStream<unknown, unknown> & grpc.ServerDuplexStream<unknown, unknown>,
    callback?: grpc.sendUnaryData<unknown>,
  ) => {
    const started = performance.now();
    const context = streamContext(spec, call);
    let headerSent = false;
    const sendHeader = () => {
      if (!headerSent && !isEmpty(context.responseHeader))
        call.sendMetadata(headersToMetadata(context.responseHeader));
      headerSent = true;
    };
    try {
      const input =
        spec.kind === "server_streaming"
          ? (async function* () {
              yield checked(call.request, started);
            })()
          : inputOf(call, started);
      const output = transformInvokeImplementation(
        spec,
        context,
        interceptors as Interceptor[],
      )(input as AsyncIterable<never>);
      if (callback) {
        // client streaming: one answer at the end
        let answer: unknown;
        for await (const message of output) answer = message;
        sendHeader();
        callback(null, answer, headersToMetadata(context.responseTrailer));
        return;
      }
      for await (const message of output) {
        sendHeader();
        if (call.cancelled) return;
        if (!call.write(message) && !(await drained(call))) return;
      }
      sendHeader();
      call.end(headersToMetadata(context.responseTrailer));
    } catch (error) {
      if (call.cancelled) return;
      if (callback) callback(toGrpcStatus(error));
      else call.emit("error", toGrpcStatus(error));
    } finally {
      context.abort();
    }
  };
}

/**
 * Waits until a refused write has gone out: true on `drain`, false when the call ends first. A client that
 * cancels (or whose deadline passes) while not reading never gets its pending write completed, so `drain`
 * alone would hold the handler, its generator and their buffers forever.
 */
function drained(call: grpc.ServerWritableStream<unknown, unknown>): Promise<boolean> {
  if (call.cancelled || call.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const events = ["drain", "close", "error", "cancelled", "finish"] as const;
    const settle = (event: (typeof events)[number]) => () => {
      for (const [name, listener] of listeners) call.off(name, listener);
      resolve(event === "drain" && !call.cancelled);
    };
    const listeners = events.map((event) => [event, settle(event)] as const);
    for (const [name, listener] of listeners) call.once(name, listener);
  });
}

/**
 * A grpc-js service definition and implementation for `server.addService`, from a connect-es service and
 * its implementation.
 */
export function grpcServiceOf(
  { service, impl }: ServedService,
  interceptors: readonly Interceptor[],
  observe: Observe,
): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const spec = createServiceImplSpec(service, impl as ServiceImpl<DescService>);
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const m = spec.methods[method.localName];
    // A method the implementation leaves out throws unimplemented inside the chain, counted as connect-node counts it.
    if (m === undefined) continue;
    definition[method.localName] = methodDefinition(method);
    implementation[method.localName] = (
      m.kind === "unary" ? unaryHandler(m, interceptors, observe) : streamHandler(m, interceptors, observe)
    ) as grpc.UntypedHandleCall;
  }
  return { definition, implementation };
}
