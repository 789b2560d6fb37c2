import {
  type Attributes,
  context,
  DiagLogLevel,
  diag,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import {
  defaultResource,
  detectResources,
  envDetector,
  resourceFromAttributes,
} from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  NodeTracerProvider,
  SimpleSpanProcessor,
  type SpanExporter,
} from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { Logger } from "./log.js";

/**
 * OpenTelemetry tracing, configured by the standard OTEL_* variables and exported over OTLP/HTTP.
 *
 * Tracing is on only when an exporter is configured (an OTLP endpoint, or OTEL_TRACES_EXPORTER=otlp)
 * and OTEL_SDK_DISABLED is not "true". The specification's default (export to localhost:4318 even
 * when nothing is set) would make every developer machine log export failures; and with tracing off,
 * no provider, context manager or propagator is registered, so the predict path pays nothing.
 *
 * `tracer` is a live binding: import it, do not copy it. It is the current provider's tracer, or
 * the API's no-op one while tracing is off. (The API's proxy tracer is not enough: it keeps the
 * first provider it saw, so after a shutdown and a new `initTracing` its spans would go nowhere.)
 */

const SCOPE = "bikeshare";
export let tracer: Tracer = trace.getTracer(SCOPE);

const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
];
const RATIO_SAMPLERS = new Set(["traceidratio", "parentbased_traceidratio"]);
/** The exporter sends OTLP/HTTP with JSON bodies; collectors accept JSON and protobuf on the same port. */
const PROTOCOLS = new Set(["http/json", "http/protobuf"]);

let provider: NodeTracerProvider | undefined;
let users = 0;

export interface TracingOptions {
  /** Replaces the exporter chosen from OTEL_* and exports each span as it ends (tests: InMemorySpanExporter). */
  exporter?: SpanExporter;
}

/** Whether spans are being recorded in this process. */
export function tracingEnabled(): boolean {
  return provider !== undefined;
}

/**
 * Starts tracing when the environment (or `options.exporter`) asks for it, and returns the function
 * that stops it. Several servers may share one process (tests, the replay): the provider is
 * registered once and shut down, flushing pending spans, when the last of them stops.
 * Throws an Error naming the variable when an OTEL_* value is not valid.
 */
export function initTracing(log: Logger, options: TracingOptions = {}): () => Promise<void> {
  if (provider) {
    users++;
    return releaser();
  }
  const exporter = options.exporter ?? exporterFromEnv(process.env);
  if (!exporter) return async () => {};

  // The SDK reports its own failures (an unreachable collector) through `diag`: send them to the log.
  const report = (message: string, ...args: unknown[]) =>
    log.warn("the tracing SDK reported a problem", { detail: [message, ...args].map(String).join(" ") });
  diag.setLogger(
    {
      error: report,
      warn: report,
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    DiagLogLevel.WARN,
  );
  provider = new NodeTracerProvider({
    resource: defaultResource()
      .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: "bikeshare" }))
      .merge(detectResources({ detectors: [envDetector] })),
    spanProcessors: [options.exporter ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter)],
  });
  // Registers the W3C trace-context propagator and the AsyncLocalStorage context manager.
  provider.register();
  tracer = provider.getTracer(SCOPE);
  users = 1;
  const target = options.exporter ? "a custom exporter" : otlpTarget(process.env);
  log.info("tracing on", {
    exporter: target,
    sampler: process.env.OTEL_TRACES_SAMPLER || "parentbased_always_on",
  });
  return releaser();
}

function releaser(): () => Promise<void> {
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    users--;
    if (users > 0 || !provider) return;
    const stopping = provider;
    provider = undefined;
    try {
      await stopping.shutdown();
    } finally {
      trace.disable();
      context.disable();
      propagation.disable();
      diag.disable();
      tracer = trace.getTracer(SCOPE);
    }
  };
}

/** Exports the spans ended so far (a short-lived worker calls it before it exits). */
export async function flushTracing(): Promise<void> {
  await provider?.forceFlush();
}

/** The OTLP exporter when the environment configures one; undefined when tracing is to stay off. */
export function exporterFromEnv(env: NodeJS.ProcessEnv): SpanExporter | undefined {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return undefined;
  const kind = env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() ?? "";
  if (kind === "none") return undefined;
  if (kind !== "" && kind !== "otlp") {
    throw new Error(
      `OTEL_TRACES_EXPORTER must be "otlp" or "none", got ${JSON.stringify(env.OTEL_TRACES_EXPORTER)}`,
    );
  }
  const endpoints = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].filter((name) =>
    env[name]?.trim(),
  );
  if (kind === "" && endpoints.length === 0) return undefined;
  for (const name of endpoints) {
    const value = env[name]?.trim() ?? "";
    if (!/^https?:$/.test(safeUrl(value)?.protocol ?? "")) {
      throw new Error(
        `${name} must be an http:// or https:// URL such as http://127.0.0.1:4318, got ${JSON.stringify(value)}`,
      );
    }
  }
  for (const name of ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
    const value = env[name]?.trim();
    if (value && !PROTOCOLS.has(value)) {
      throw new Error(
        `${name} must be "http/json" or "http/protobuf" (this exporter speaks OTLP over HTTP), got ${JSON.stringify(value)}`,
      );
    }
  }
  const sampler = env.OTEL_TRACES_SAMPLER?.trim();
  if (sampler && !SAMPLERS.includes(sampler)) {
    throw new Error(
      `OTEL_TRACES_SAMPLER must be one of ${SAMPLERS.join(", ")}, got ${JSON.stringify(sampler)}`,
    );
  }
  const ratio = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  if (sampler && RATIO_SAMPLERS.has(sampler) && ratio) {
    const value = Number(ratio);
    if (!(value >= 0 && value <= 1)) {
      throw new Error(
        `OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1 for ${sampler}, got ${JSON.stringify(ratio)}`,
      );
    }
  }
  return new OTLPTraceExporter();
}

function safeUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/** Where spans go, for the log: origin and path only, never credentials in the URL or OTEL_EXPORTER_OTLP_HEADERS. */
function otlpTarget(env: NodeJS.ProcessEnv): string {
  const specific = safeUrl(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() ?? "");
  if (specific) return `${specific.origin}${specific.pathname}`;
  const base = safeUrl(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || "http://localhost:4318");
  return base ? `${base.origin}${base.pathname.replace(/\/$/, "")}/v1/traces` : "otlp";
}

const NOOP_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** Marks a span failed with the error as an exception event. */
export function recordError(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/**
 * Runs `fn` inside a new active span (a child of the active one), records a thrown error on it and
 * ends it when `fn` settles. With tracing off it only calls `fn`.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  if (!provider) return fn(NOOP_SPAN);
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      recordError(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/**
 * Wraps async methods of a class so that each call is a span `${prefix}.${method}`, with attributes
 * computed from the call's arguments (only when tracing is on).
 */
export function traceMethods<T extends object>(
  cls: { prototype: T },
  prefix: string,
  methods: {
    [K in keyof T]?: T[K] extends (...args: infer A) => Promise<unknown> ? (...args: A) => Attributes : never;
  },
): void {
  const proto = cls.prototype as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const [name, attributesOf] of Object.entries(methods) as [
    string,
    (...args: unknown[]) => Attributes,
  ][]) {
    const original = proto[name];
    if (typeof original !== "function") throw new Error(`traceMethods: ${prefix}.${name} is not a method`);
    const spanName = `${prefix}.${name}`;
    proto[name] = function (this: unknown, ...args: unknown[]) {
      if (!provider) return original.apply(this, args);
      return withSpan(spanName, attributesOf(...args), () => original.apply(this, args));
    };
  }
}

/**
 * The active span as a W3C `traceparent` header value, to carry the trace into a job that runs
 * later or elsewhere (a child process, a BullMQ worker); undefined when no span is active.
 */
export function activeTraceparent(): string | undefined {
  const span = trace.getActiveSpan();
  if (!span) return undefined;
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The span context of a W3C `traceparent` value; undefined when it is missing or not valid. */
export function parseTraceparent(traceparent: string | undefined): SpanContext | undefined {
  const match = TRACEPARENT.exec(traceparent?.trim() ?? "");
  if (!match || match[1] === "ff") return undefined;
  const sc: SpanContext = {
    traceId: match[2] as string,
    spanId: match[3] as string,
    traceFlags: Number.parseInt(match[4] as string, 16),
    isRemote: true,
  };
  return isSpanContextValid(sc) ? sc : undefined;
}

/**
 * Runs `fn` with the span described by `traceparent` (from `activeTraceparent`) as the parent of
 * the spans it starts. It starts from an empty context, never from the caller's: a queue that
 * starts the next job when the previous one ends would otherwise nest that job under the previous
 * job's trace. An undefined or invalid `traceparent` runs `fn` as the start of a new trace.
 */
export function runWithTraceparent<T>(traceparent: string | undefined, fn: () => T): T {
  const parent = parseTraceparent(traceparent);
  return context.with(parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT, fn);
}
