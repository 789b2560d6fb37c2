/**
 * `npm run bench`: training wall time and accuracy, single-row predict throughput and
 * latency over legacy REST, Connect JSON and gRPC (8 connections), and PredictBatch of
 * 1,000 rows. The server runs as its own process (compiled dist/), as in production;
 * the throughput load generators run in this process, the fixed-rate latency one (bench/loadgen, Go)
 * in its own, all on the same 2 cores. Writes docs/benchmarks.md; then the prediction-log spool
 * (bench/spool.ts), batch scoring (bench/scoring.ts), scale-out (bench/scale-out.ts), in-process model
 * compute (bench/model-compute.ts), each protocol against its transport's ceiling (bench/transport.ts) and the
 * Open Inference Protocol v2 beside the native protocols (bench/oip.ts) add their sections.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import autocannon from "autocannon";
import {
  type PredictRequest,
  PredictRequestSchema,
  PredictResponseSchema,
  PredictService,
} from "../gen/bikeshare/v1/predict_pb.js";
import { JobState, TrainService } from "../gen/bikeshare/v1/train_pb.js";
import { projectRoot } from "../services/config.js";
import { modelInput, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { freePort } from "../tests/helpers/ports.js";
import { docSection } from "./doc-section.js";
import { currentExplainSection, explainBenchmark, writeExplainSection } from "./explain.js";
import { buildLoadgen, fixedRateLoad, type LoadResult } from "./fixed-rate.js";
import { currentIntervalsSection, intervalsBenchmark, writeIntervalsSection } from "./intervals.js";
import {
  currentModelComputeSection,
  modelComputeBenchmark,
  writeModelComputeSection,
} from "./model-compute.js";
import { currentOipSection, oipBenchmark, writeOipSection } from "./oip.js";
import { currentScaleOutSection, scaleOutBenchmark, writeScaleOutSection } from "./scale-out.js";
import { currentScoringSection, scoringBenchmark, writeScoringSection } from "./scoring.js";
import { waitReady } from "./server-ready.js";
import { currentSpoolSection, spoolBenchmark, writeSpoolSection } from "./spool.js";
import { currentTransportSection, transportBenchmark, writeTransportSection } from "./transport.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = 8;
const LATENCY_RUNS = 5;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Waits until no job is queued or running (a cancelled job stops at its next boosting round). */
async function waitUntilIdle(client: {
  listJobs(req: { pageSize: number }): Promise<{ jobs: { state: JobState }[] }>;
}) {
  for (;;) {
    const { jobs } = await client.listJobs({ pageSize: 5 });
    if (!jobs.some((j) => j.state === JobState.RUNNING || j.state === JobState.QUEUED)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}
const root = projectRoot();

async function cannon(url: string, body: string, headers: Record<string, string>): Promise<LoadResult> {
  const r = await autocannon({
    url,
    method: "POST",
    headers,
    body,
    connections: CONNECTIONS,
    duration: SECONDS,
  });
  return {
    tool: `autocannon, ${CONNECTIONS} connections, HTTP/1.1`,
    requestsPerSecond: r.requests.total / r.duration,
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    errors: r.errors + r.timeouts + r.non2xx,
    total: r.requests.total,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Closed loop over 8 separate grpc-js channels (8 HTTP/2 connections), one call in flight on each. */
async function grpcLoad(port: number, request: PredictRequest): Promise<LoadResult> {
  const Client = grpc.makeGenericClientConstructor({}, "PredictService");
  const clients = Array.from(
    { length: CONNECTIONS },
    () =>
      new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
  );
  const payload = Buffer.from(toBinary(PredictRequestSchema, request));
  const latencies: number[] = [];
  let errors = 0;
  const call = (client: grpc.Client) =>
    new Promise<void>((resolve) => {
      const start = performance.now();
      client.makeUnaryRequest(
        "/bikeshare.v1.PredictService/Predict",
        (b: Buffer) => b,
        (b: Buffer) => fromBinary(PredictResponseSchema, b),
        payload,
        (error) => {
          if (error) errors++;
          else latencies.push(performance.now() - start);
          resolve();
        },
      );
    });
  for (const c of clients) await call(c); // connect and warm up each channel
  latencies.length = 0;
  const started = performance.now();
  const end = started + SECONDS * 1000;
  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < end) await call(c);
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  return {
    tool: `@grpc/grpc-js closed loop, ${CONNECTIONS} channels, h2c`,
    requestsPerSecond: latencies.length / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    errors,
    total: latencies.length,
  };
}

async function batchLoad(
  baseUrl: string,
  rows: Record<string, number>[],
): Promise<{ rowsPerSecond: number; p50ms: number; calls: number }> {
  const client = createClient(
    PredictService,
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
  );
  await client.predictBatch({ rows });
  const latencies: number[] = [];
  const started = performance.now();
  while (performance.now() - started < SECONDS * 500) {
    const t0 = performance.now();
    const res = await client.predictBatch({ rows });
    if (res.predictions.length !== rows.length)
      throw new Error("PredictBatch returned the wrong number of rows");
    latencies.push(performance.now() - t0);
  }
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    rowsPerSecond: (latencies.length * rows.length) / elapsed,
    p50ms: percentile(latencies, 50),
    calls: latencies.length,
  };
}

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

async function main(): Promise<void> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-bench-"));
  const machine = `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
  console.log(`machine: ${machine}`);

  // A fresh server with an empty registry trains its first model through the default job, as `make start` does.
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const adminTokenFile = join(dir, "admin-token");
  const server = spawn(process.execPath, [join(root, "dist/cli/bikeshare.js"), "serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      BIKESHARE_MODELS_DIR: join(dir, "models"),
      BIKESHARE_DB: join(dir, "bikeshare.duckdb"),
      BIKESHARE_TOKENS_FILE: join(dir, "tokens.json"),
      BIKESHARE_ADMIN_TOKEN_FILE: adminTokenFile,
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  try {
    await waitReady(baseUrl, server, 300_000);
    const token = (await readFile(adminTokenFile, "utf8")).trim();
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    };
    const transport = createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [auth] });
    const trainClient = createClient(TrainService, transport);
    const predictClient = createClient(PredictService, transport);
    const [bootstrap] = (await trainClient.listJobs({})).jobs;
    if (bootstrap?.state !== JobState.SUCCEEDED)
      throw new Error(`bootstrap training job ended ${bootstrap?.state}: ${bootstrap?.error}`);
    const trainSeconds =
      Number(bootstrap.finishedAt?.seconds) -
      Number(bootstrap.startedAt?.seconds) +
      ((bootstrap.finishedAt?.nanos ?? 0) - (bootstrap.startedAt?.nanos ?? 0)) / 1e9;
    const info = (await predictClient.getModelInfo({})).model;
    const m = info?.metrics ?? {};
    console.log(
      `default training job: ${f1(trainSeconds)} s, ${info?.family} test RMSE ${f2(m.test_rmse ?? Number.NaN)}`,
    );

    const rows = readHourCsvRecords().map((r) => modelInput(r));
    const one = rows[5000] as Record<string, number>;
    const json = { "content-type": "application/json" };
    const rest = await cannon(`${baseUrl}/predict`, JSON.stringify(one), json);
    console.log(`legacy REST: ${f1(rest.requestsPerSecond)} req/s`);
    const connect = await cannon(
      `${baseUrl}/bikeshare.v1.PredictService/Predict`,
      JSON.stringify({ conditions: one }),
      json,
    );
    console.log(`Connect JSON: ${f1(connect.requestsPerSecond)} req/s`);
    const grpcResult = await grpcLoad(port, create(PredictRequestSchema, { conditions: one }));
    console.log(`gRPC: ${f1(grpcResult.requestsPerSecond)} req/s`);
    const batch = await batchLoad(baseUrl, rows.slice(0, 1000));
    console.log(`PredictBatch 1000 rows: ${f1(batch.rowsPerSecond)} rows/s`);

    // Predict latency at a fixed rate, idle and while the server trains the default job, in turns:
    // one 15 s sample has only ~30 requests beyond its p99, so a few runs of each are reported.
    await buildLoadgen();
    const fixedRate = () => fixedRateLoad(`${baseUrl}/predict`, JSON.stringify(one), 200, 15);
    const idleRuns: LoadResult[] = [];
    const trainingRuns: LoadResult[] = [];
    for (let i = 0; i < LATENCY_RUNS; i++) {
      idleRuns.push(await fixedRate());
      const { job } = await trainClient.startTraining({ reason: "bench: latency during training" });
      trainingRuns.push(await fixedRate());
      const { job: trained } = await trainClient.getJob({ jobId: job?.id as string });
      if (trained?.state !== JobState.RUNNING)
        throw new Error(`the job was ${trained?.state} before the end of the sample`);
      await trainClient.cancelJob({ jobId: job?.id as string });
      await waitUntilIdle(trainClient);
    }
    const p99s = (runs: LoadResult[]) => runs.map((r) => f2(r.p99ms)).join(", ");
    console.log(`p99 idle: ${p99s(idleRuns)} ms; during training: ${p99s(trainingRuns)} ms`);

    const load = (name: string, r: LoadResult) =>
      `| ${name} | ${Math.round(r.requestsPerSecond)} | ${f2(r.p50ms)} | ${f2(r.p99ms)} | ${r.errors} | ${r.tool} |`;
    const row = (label: string, prefix: string) =>
      m[`${prefix}rmse`] === undefined
        ? ""
        : `| ${label} | ${f2(m[`${prefix}rmse`] as number)} | ${f2(m[`${prefix}mae`] as number)} | ${(m[`${prefix}r2`] as number).toFixed(3)} | ${((m[`${prefix}within20`] as number) * 100).toFixed(1)}% |\n`;
    const doc = `# Benchmarks

Generated by \`npm run bench\` (bench/run.ts) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${machine}. Each load test runs ${SECONDS} s; the server is a separate process
(\`node dist/cli/bikeshare.js serve\`, ONNX Runtime with 1 intra-op thread) and the load generator shares the same 2 cores.

## Accuracy (hour.csv, target \`cnt\`)

Split T: train before 2012-07-01, validation Jul–Aug 2012 (early stopping and every choice), refit on train+valid,
test Sep–Dec 2012 (never used to choose). Split A: the old stack's random 80/20 (seed 42), same parameters and
rounds, reported for comparison only. Model chosen by the default job: ${info?.family === 1 ? "gradient boosted trees" : `family ${info?.family}`} (${info?.objective}).

| evaluation | RMSE | MAE | R² | within ±20% |
|---|---|---|---|---|
${row("split T test, requests with the hour's timestamp", "test_")}${row("split T test, legacy requests (no timestamp)", "test_nodate_")}${row("split A test (random 80/20, comparison only)", "split_a_test_")}
Old Python stack, best model (reference figures): split T 71.7, split A 41.2.

Default training job (load, validate, 3 families + seeded search with early stopping, refit, split A, ONNX
export with parity check, register, gate): **${f1(trainSeconds)} s** wall.

## Serving

Single-row predict with ${CONNECTIONS} concurrent connections:

| route | req/s | p50 ms | p99 ms | errors | load tool |
|---|---|---|---|---|---|
${load("legacy REST `POST /predict`", rest)}
${load("Connect JSON `PredictService/Predict`", connect)}
${load("gRPC `PredictService/Predict`", grpcResult)}

Latency at a fixed 200 req/s (legacy REST, 15 s per run), ${LATENCY_RUNS} runs each, taken in turns: idle, then while
the server trains the default job (a child process at nice 10, see pipelines/jobs/process-executor.ts). The load
comes from bench/loadgen, a small Go program in its own process: open loop, each request's latency counted from
the moment it was due, so a stall is charged for every request queued behind it. autocannon, used for the
throughput rows above, runs inside this Node process and adds its own pauses: against a trivial Node server that
answers a constant, it measured p99 5–16 ms where bench/loadgen measures 2–4 ms.

| state | p99 ms of each run | median p99 ms | p50 ms (median) |
|---|---|---|---|
| idle | ${p99s(idleRuns)} | ${f2(median(idleRuns.map((r) => r.p99ms)))} | ${f2(median(idleRuns.map((r) => r.p50ms)))} |
| training | ${p99s(trainingRuns)} | ${f2(median(trainingRuns.map((r) => r.p99ms)))} | ${f2(median(trainingRuns.map((r) => r.p50ms)))} |

Issue 3 asks for predict p99 under 20 ms during a training job. What got it there:
- the job computes in a child process at nice 10, not on the server's event loop or at its priority, and sends its
  per-round progress in batches every 50 ms;
- the prediction log writes what is buffered every 250 ms. It used to keep inserting back to back, one or two
  rows per statement, and bound each batch as list parameters, which made one native value object per number.
  Their finalizers made every young-generation GC pause 6–10 ms, about once a second (\`--trace-gc-nvp\`:
  \`heap.external_weak_global_handles\`), and idle p99 was 14 ms. Now each column goes as one JSON array.

Single-row throughput is lower than the first walking-skeleton measurement (5,590 req/s legacy REST before the
prediction log, auth and registry existed). An earlier CPU profile under load pointed at the prediction log's
per-value parameter conversion (since replaced by one JSON array per column, above) and at async-context tracking
in the DuckDB wrapper; the rest of the difference has not been profiled since.

The old Python API answered 14 req/s as shipped. The gRPC figure is bounded by Node's HTTP/2 stack: a bare
connect-node h2c server with a handler that does nothing measured ≈ 1,050 req/s under ghz here, so the
limit is the transport, not the model.

PredictBatch of 1,000 rows (Connect binary over h2c, one call at a time, client on the same cores): **${Math.round(batch.rowsPerSecond)} rows/s**
(p50 ${f2(batch.p50ms)} ms per call, ${batch.calls} calls). Server-side cost of one such call measured in-process:
ONNX Runtime ≈ 10 ms, protobuf decoding ≈ 3.5 ms, validation ≈ 2 ms, features ≈ 0.6 ms.
`;
    const sections = [
      doc,
      await currentIntervalsSection(),
      await currentSpoolSection(),
      await currentScoringSection(),
      await currentScaleOutSection(),
      await currentModelComputeSection(),
      await currentExplainSection(),
      await currentTransportSection(),
      await currentOipSection(),
      // Written by hand (a one-off measurement, not a benchmark step): kept as is.
      await docSection("micro-batching").current(),
    ];
    await writeFile(join(root, "docs/benchmarks.md"), sections.filter((s) => s !== "").join("\n"));
    console.log("wrote docs/benchmarks.md");
  } finally {
    server.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1000));
    await rm(dir, { recursive: true, force: true });
  }
  // After the server has stopped, so each has the machine to itself; each adds its own section.
  // BENCH_SPOOL=0, BENCH_SCORING=0 and BENCH_SCALE_OUT=0 keep the section from the last run (scoring takes
  // about 25 minutes).
  // BENCH_INTERVALS=0 keeps the prediction-interval section (a training search, ~70 s).
  if (process.env.BENCH_INTERVALS !== "0") await writeIntervalsSection(await intervalsBenchmark());
  if (process.env.BENCH_SPOOL !== "0") await writeSpoolSection(await spoolBenchmark());
  if (process.env.BENCH_SCORING !== "0") await writeScoringSection(await scoringBenchmark());
  if (process.env.BENCH_SCALE_OUT !== "0") await writeScaleOutSection(await scaleOutBenchmark());
  if (process.env.BENCH_MODEL_COMPUTE !== "0") await writeModelComputeSection(await modelComputeBenchmark());
  // BENCH_EXPLAIN=0 keeps the explanation section (three trainings and TreeSHAP timings, ~2 min).
  if (process.env.BENCH_EXPLAIN !== "0") await writeExplainSection(await explainBenchmark());
  if (process.env.BENCH_TRANSPORT !== "0") await writeTransportSection(await transportBenchmark());
  // OIP v2 REST and gRPC beside the native protocols, on one server of its own (~4 minutes).
  if (process.env.BENCH_OIP !== "0") await writeOipSection(await oipBenchmark());
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
