import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import {
  GetModelInfoRequestSchema,
  GetModelInfoResponseSchema,
  PredictService,
} from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { createLogger } from "../../services/observability/log.js";
import { tracingInterceptor } from "../../services/observability/rpc-tracing.js";
import {
  activeTraceparent,
  exporterFromEnv,
  initTracing,
  parseTraceparent,
  runWithTraceparent,
  tracingEnabled,
  withSpan,
} from "../../services/observability/tracing.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const quiet = createLogger({}, "error", () => {});

/** A client-side trace context: what an upstream service would send. */
function clientTrace() {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

async function waitFor<T>(what: string, find: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sets (or, for undefined, removes) variables; returns the function that puts them back. */
function withEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(vars);
  return () => apply(saved);
}

describe("with tracing off (no exporter configured)", () => {
  it("stays off, and the helpers cost nothing and change nothing", async () => {
    const restore = withEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: undefined,
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: undefined,
      OTEL_TRACES_EXPORTER: undefined,
    });
    const stop = initTracing(quiet);
    restore();
    expect(tracingEnabled()).toBe(false);
    const next = async () => "called";
    // The interceptor hands back `next` itself: no per-request wrapper, allocation or span.
    expect(tracingInterceptor()(next as never)).toBe(next);
    const lines: string[] = [];
    const log = createLogger({}, "info", (l) => lines.push(l));
    const result = await withSpan("off", {}, async (span) => {
      expect(span.isRecording()).toBe(false);
      expect(activeTraceparent()).toBeUndefined();
      log.info("inside");
      return 42;
    });
    expect(result).toBe(42);
    expect(JSON.parse(lines[0] as string)).not.toHaveProperty("trace_id");
    await stop();
  });
});

describe("configuration from OTEL_* variables", () => {
  it("is off when nothing is configured, disabled, or the exporter is none", () => {
    expect(exporterFromEnv({})).toBeUndefined();
    expect(exporterFromEnv({ OTEL_SERVICE_NAME: "x" })).toBeUndefined();
    expect(
      exporterFromEnv({ OTEL_SDK_DISABLED: "TRUE", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }),
    ).toBeUndefined();
    expect(
      exporterFromEnv({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }),
    ).toBeUndefined();
  });

  it("is on with an OTLP endpoint or OTEL_TRACES_EXPORTER=otlp", async () => {
    for (const env of [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" },
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://collector.example:4318/v1/traces" },
      { OTEL_TRACES_EXPORTER: "otlp" },
    ]) {
      const exporter = exporterFromEnv(env);
      expect(exporter, JSON.stringify(env)).toBeDefined();
      await exporter?.shutdown();
    }
  });

  it.each([
    [{ OTEL_TRACES_EXPORTER: "zipkin" }, 'OTEL_TRACES_EXPORTER must be "otlp" or "none", got "zipkin"'],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" },
      "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL",
    ],
    [
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "grpc://collector:4317" },
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be an http:// or https:// URL",
    ],
    [
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
      'OTEL_EXPORTER_OTLP_PROTOCOL must be "http/json" or "http/protobuf"',
    ],
    [
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_TRACES_SAMPLER: "sometimes" },
      'OTEL_TRACES_SAMPLER must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio, got "sometimes"',
    ],
    [
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1.5" },
      'OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1 for traceidratio, got "1.5"',
    ],
  ])("rejects %j naming the variable", (env, message) => {
    expect(() => exporterFromEnv(env)).toThrow(message);
  });
});

describe("traceparent helpers and spans", () => {
  const exporter = new InMemorySpanExporter();
  let stop: () => Promise<void>;
  beforeAll(() => {
    stop = initTracing(quiet, { exporter });
  });
  afterAll(() => stop());
  afterEach(() => exporter.reset());

  it("parses only valid W3C traceparent values", () => {
    const { traceId, spanId, traceparent } = clientTrace();
    expect(parseTraceparent(traceparent)).toMatchObject({ traceId, spanId, traceFlags: 1, isRemote: true });
    for (const bad of [
      undefined,
      "",
      "garbage",
      `ff-${traceId}-${spanId}-01`,
      `00-${"0".repeat(32)}-${spanId}-01`,
      `00-${traceId}-${"0".repeat(16)}-01`,
      `00-${traceId.toUpperCase()}-${spanId}-01`,
    ]) {
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    }
  });

  it("carries a span into a job through a traceparent string, starting from an empty context", async () => {
    let carried: string | undefined;
    await withSpan("rpc", {}, async () => {
      carried = activeTraceparent();
    });
    expect(carried).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // Started while an unrelated span is active (a queue running the next job when one ends).
    await withSpan("previous job", {}, () =>
      runWithTraceparent(carried, () => withSpan("job", {}, async () => {})),
    );
    await runWithTraceparent("not a traceparent", () => withSpan("orphan", {}, async () => {}));

    const spans = exporter.getFinishedSpans();
    const byName = (name: string) => spans.find((s) => s.name === name) as ReadableSpan;
    const rpc = byName("rpc");
    const job = byName("job");
    expect(job.spanContext().traceId).toBe(rpc.spanContext().traceId);
    expect(job.parentSpanContext?.spanId).toBe(rpc.spanContext().spanId);
    expect(job.spanContext().traceId).not.toBe(byName("previous job").spanContext().traceId);
    expect(byName("orphan").parentSpanContext).toBeUndefined();
  });

  it("records an exception and the error status, and rethrows", async () => {
    const error = await withSpan("fails", { "test.attr": 7 }, async () => {
      throw new RangeError("out of range: 42");
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe("fails");
    expect(span?.attributes["test.attr"]).toBe(7);
    expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: "out of range: 42" });
    expect(span?.events[0]?.name).toBe("exception");
    expect(span?.events[0]?.attributes?.["exception.type"]).toBe("RangeError");
  });

  it("puts the active trace and span ids on every log line, and none outside a span", async () => {
    const lines: string[] = [];
    const log = createLogger({ component: "test" }, "info", (l) => lines.push(l));
    let ids: { traceId: string; spanId: string } | undefined;
    await withSpan("logging", {}, async (span) => {
      ids = span.spanContext();
      log.info("first");
      await new Promise((r) => setTimeout(r, 5));
      log.child({ job_id: "j1" }).warn("after an await");
    });
    log.info("outside");
    const [first, second, outside] = lines.map((l) => JSON.parse(l));
    for (const line of [first, second]) {
      expect(line).toMatchObject({ trace_id: ids?.traceId, span_id: ids?.spanId, component: "test" });
    }
    expect(second.job_id).toBe("j1");
    expect(outside).not.toHaveProperty("trace_id");
    expect(outside).not.toHaveProperty("span_id");
  });
});

describe("RPC spans on a real server", () => {
  const exporter = new InMemorySpanExporter();
  let stop: () => Promise<void>;
  let t: TestServer;
  beforeAll(async () => {
    // Tracing must be on before the server builds its interceptors.
    stop = initTracing(quiet, { exporter });
    t = await startTestServer();
  }, 120_000);
  afterAll(async () => {
    await t?.stop();
    await stop?.();
  });

  const spans = () => exporter.getFinishedSpans();
  const inTrace = (traceId: string) => spans().filter((s) => s.spanContext().traceId === traceId);
  const rpcSpan = (traceId: string, name: string) =>
    waitFor(`span ${name}`, () =>
      inTrace(traceId).find((s) => s.name === name && s.kind === SpanKind.SERVER),
    );

  function withHeaders(headers: Record<string, string>): Interceptor {
    return (next) => (req) => {
      for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
      return next(req);
    };
  }

  const conditions = modelInput(readHourCsvRecords()[4000] as Record<string, number>);

  it("Connect JSON over HTTP/1.1: a server span under the client's traceparent", async () => {
    const { traceId, spanId, traceparent } = clientTrace();
    const res = await fetch(`${t.baseUrl}/bikeshare.v1.PredictService/Predict`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent },
      body: JSON.stringify({ conditions }),
    });
    expect(res.status).toBe(200);
    const span = await rpcSpan(traceId, "bikeshare.v1.PredictService/Predict");
    expect(span.parentSpanContext?.spanId).toBe(spanId);
    expect(span.attributes).toMatchObject({
      "rpc.system": "connect_rpc",
      "rpc.service": "bikeshare.v1.PredictService",
      "rpc.method": "Predict",
      "bikeshare.protocol": "connect",
    });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("gRPC from @grpc/grpc-js over HTTP/2: traceparent sent as metadata", async () => {
    const { traceId, spanId, traceparent } = clientTrace();
    const Client = grpc.makeGenericClientConstructor({}, "PredictService");
    const client = new Client(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set("traceparent", traceparent);
    const info = await new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        "/bikeshare.v1.PredictService/GetModelInfo",
        (m: unknown) => Buffer.from(toBinary(GetModelInfoRequestSchema, m as never)),
        (b: Buffer) => fromBinary(GetModelInfoResponseSchema, b),
        create(GetModelInfoRequestSchema, {}),
        metadata,
        (error, response) => {
          client.close();
          if (error) reject(error);
          else resolve(response);
        },
      );
    });
    expect(info).toBeDefined();
    const span = await rpcSpan(traceId, "bikeshare.v1.PredictService/GetModelInfo");
    expect(span.parentSpanContext?.spanId).toBe(spanId);
    expect(span.attributes).toMatchObject({
      "rpc.system": "grpc",
      "bikeshare.protocol": "grpc",
      "rpc.grpc.status_code": 0,
    });
  });

  it("gRPC-Web over HTTP/1.1", async () => {
    const { traceId, spanId, traceparent } = clientTrace();
    const client = createClient(
      PredictService,
      createGrpcWebTransport({
        baseUrl: t.baseUrl,
        httpVersion: "1.1",
        interceptors: [withHeaders({ traceparent })],
      }),
    );
    await client.predict({ conditions });
    const span = await rpcSpan(traceId, "bikeshare.v1.PredictService/Predict");
    expect(span.parentSpanContext?.spanId).toBe(spanId);
    expect(span.attributes["bikeshare.protocol"]).toBe("grpc-web");
  });

  it("a refused call keeps its code on the span; a caller's mistake is not a server error", async () => {
    const { traceId, traceparent } = clientTrace();
    const res = await fetch(`${t.baseUrl}/bikeshare.v1.RegistryService/SetAlias`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent },
      body: JSON.stringify({ modelName: "bike-demand", alias: "staging", version: "1", reason: "x" }),
    });
    expect(res.status).toBe(401);
    const span = await rpcSpan(traceId, "bikeshare.v1.RegistryService/SetAlias");
    expect(span.attributes["rpc.connect_rpc.error_code"]).toBe("unauthenticated");
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("RunCheck: the monitoring check is a child of the RPC span", async () => {
    const { traceId, traceparent } = clientTrace();
    const client = createClient(
      MonitorService,
      createConnectTransport({
        baseUrl: t.baseUrl,
        httpVersion: "1.1",
        interceptors: [withHeaders({ traceparent, authorization: `Bearer ${t.tokens.admin}` })],
      }),
    );
    // Whether or not the window holds predictions, the check runs inside the RPC.
    await client.runCheck({ allowRetrain: false }).catch(() => undefined);
    const rpc = await rpcSpan(traceId, "bikeshare.v1.MonitorService/RunCheck");
    const check = inTrace(traceId).find((s) => s.name === "monitoring check");
    expect(check?.parentSpanContext?.spanId).toBe(rpc.spanContext().spanId);
    expect(check?.attributes["check.retrain_allowed"]).toBe(false);
  });

  it("SetAlias: the registry write is a child of the RPC span", async () => {
    const { traceId, traceparent } = clientTrace();
    const client = createClient(
      RegistryService,
      createConnectTransport({
        baseUrl: t.baseUrl,
        httpVersion: "1.1",
        interceptors: [withHeaders({ traceparent, authorization: `Bearer ${t.tokens.admin}` })],
      }),
    );
    await client.setAlias({
      modelName: "bike-demand",
      alias: "tracing-test",
      version: "1",
      reason: "tracing test",
    });
    const rpc = await rpcSpan(traceId, "bikeshare.v1.RegistryService/SetAlias");
    const write = inTrace(traceId).find((s) => s.name === "registry.setAlias");
    expect(write?.parentSpanContext?.spanId).toBe(rpc.spanContext().spanId);
    expect(write?.attributes).toMatchObject({
      "registry.model_name": "bike-demand",
      "registry.alias": "tracing-test",
      "registry.version": "1",
    });
  });

  it("StartTraining: the job's registry writes descend from the RPC span, and its log lines carry the trace id", async () => {
    const { traceId, traceparent } = clientTrace();
    const client = createClient(
      TrainService,
      createConnectTransport({
        baseUrl: t.baseUrl,
        httpVersion: "1.1",
        interceptors: [withHeaders({ traceparent, authorization: `Bearer ${t.tokens.trainer}` })],
      }),
    );
    const { job } = await client.startTraining({
      experiment: "tracing",
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      reason: "tracing test",
    });
    // WatchJob streams until the job ends: its span must stay open as long.
    for await (const _event of client.watchJob({ jobId: job?.id ?? "" })) {
      // drain
    }
    const { job: done } = await client.getJob({ jobId: job?.id ?? "" });
    expect(done?.state).toBe(JobState.SUCCEEDED);

    const start = await rpcSpan(traceId, "bikeshare.v1.TrainService/StartTraining");
    const watch = await rpcSpan(traceId, "bikeshare.v1.TrainService/WatchJob");
    const trace = inTrace(traceId);
    const byId = new Map(trace.map((s) => [s.spanContext().spanId, s]));
    const jobSpan = trace.find((s) => s.name === "training job");
    expect(jobSpan?.attributes["job.id"]).toBe(job?.id);
    expect(jobSpan?.parentSpanContext?.spanId).toBe(start.spanContext().spanId);
    // RPC → training job → registry write.
    const descendsFromStart = (span: ReadableSpan) => {
      for (
        let p = span.parentSpanContext?.spanId;
        p !== undefined;
        p = byId.get(p)?.parentSpanContext?.spanId
      ) {
        if (p === jobSpan?.spanContext().spanId) return true;
      }
      return false;
    };
    for (const name of [
      "registry.createRun",
      "registry.logRunData",
      "registry.putArtifact",
      "registry.registerVersion",
    ]) {
      const writes = trace.filter((s) => s.name === name);
      expect(writes.length, name).toBeGreaterThan(0);
      expect(writes.every(descendsFromStart), `${name} descends from StartTraining`).toBe(true);
    }
    const lastWrite = Math.max(
      ...trace.filter((s) => s.name.startsWith("registry.")).map((s) => s.endTime[0] * 1e9 + s.endTime[1]),
    );
    expect(watch.endTime[0] * 1e9 + watch.endTime[1]).toBeGreaterThanOrEqual(lastWrite);

    const traced = t.logs.map((l) => JSON.parse(l)).filter((l) => l.trace_id === traceId);
    expect(traced.length).toBeGreaterThan(0);
    expect(traced.every((l) => /^[0-9a-f]{16}$/.test(l.span_id))).toBe(true);
  }, 180_000);
});

describe("OTLP/HTTP export configured by the environment", () => {
  let receiver: http.Server;
  const posts: { path: string; contentType: string; body: unknown }[] = [];
  let restoreEnv = () => {};
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-otlp-"));
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        posts.push({
          path: req.url ?? "",
          contentType: req.headers["content-type"] ?? "",
          body: JSON.parse(Buffer.concat(chunks).toString("utf8")),
        });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    restoreEnv();
    await new Promise((resolve) => receiver.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    restoreEnv();
    posts.length = 0;
  });

  interface OtlpSpan {
    name: string;
    traceId: string;
    spanId: string;
    parentSpanId?: string;
  }
  interface OtlpBody {
    resourceSpans: {
      resource: { attributes: { key: string; value: { stringValue?: string } }[] };
      scopeSpans: { spans: OtlpSpan[] }[];
    }[];
  }
  const exported = () =>
    posts.flatMap((p) =>
      (p.body as OtlpBody).resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
    );

  it("posts spans with the service name and resource attributes to <endpoint>/v1/traces", async () => {
    restoreEnv = withEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`,
      OTEL_SERVICE_NAME: "bikeshare-test",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=ci,service.namespace=mlops",
    });
    const stop = initTracing(quiet);
    expect(tracingEnabled()).toBe(true);
    const db = await Database.open(join(dir, "a.duckdb"));
    try {
      const registry = await Registry.open(db, join(dir, "models"));
      await withSpan("pipeline", { "pipeline.kind": "test" }, async () => {
        await registry.createRun({ experiment: "otlp" });
      });
    } finally {
      await db.close();
    }
    await stop(); // flushes the batch processor
    expect(tracingEnabled()).toBe(false);

    expect(posts.length).toBeGreaterThan(0);
    expect(posts[0]?.path).toBe("/v1/traces");
    expect(posts[0]?.contentType).toContain("application/json");
    const [first] = (posts[0]?.body as OtlpBody | undefined)?.resourceSpans ?? [];
    const resource = first?.resource.attributes ?? [];
    const attrs = Object.fromEntries(resource.map((a) => [a.key, a.value.stringValue]));
    expect(attrs).toMatchObject({
      "service.name": "bikeshare-test",
      "deployment.environment.name": "ci",
      "service.namespace": "mlops",
    });
    const spans = exported();
    const pipeline = spans.find((s) => s.name === "pipeline");
    const write = spans.find((s) => s.name === "registry.createRun");
    expect(pipeline?.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(write?.traceId).toBe(pipeline?.traceId);
    expect(write?.parentSpanId).toBe(pipeline?.spanId);
  });

  it("honours OTEL_TRACES_SAMPLER: a ratio of 0 drops new traces but keeps a sampled caller's", async () => {
    restoreEnv = withEnv({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`,
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0",
    });
    const stop = initTracing(quiet);
    await withSpan("unsampled root", {}, async () => {});
    const { traceId, traceparent } = clientTrace();
    await runWithTraceparent(traceparent, () => withSpan("sampled by its parent", {}, async () => {}));
    // An unsampled trace still has ids: log lines keep the caller's trace id.
    const unsampled = clientTrace();
    let inside: string | undefined;
    await runWithTraceparent(unsampled.traceparent.replace(/-01$/, "-00"), () =>
      withSpan("not sampled", {}, async () => {
        inside = trace.getActiveSpan()?.spanContext().traceId;
      }),
    );
    expect(inside).toBe(unsampled.traceId);
    await stop();
    expect(exported().map((s) => [s.name, s.traceId])).toEqual([["sampled by its parent", traceId]]);
  });
});
