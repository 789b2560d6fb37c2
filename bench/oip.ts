/**
 * Issue 16's figures (the "Open Inference Protocol v2" section of docs/benchmarks.md): single-row
 * throughput of OIP v2 REST (JSON and binary tensor data) and gRPC ModelInfer beside the native
 * protocols (legacy REST `POST /predict`, Connect JSON and gRPC `PredictService/Predict`), one server,
 * one trained model, in the same run. The REST loads are autocannon in this process; each gRPC load is a
 * grpc-js closed loop in a process of its own (this file, run with `--grpc-child`). The protocols take
 * turns, round after round, so a shared machine's drift hits all of them; each figure is the median.
 * Usage: npx tsx bench/oip.ts (also a step of `npm run bench` unless BENCH_OIP=0).
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import autocannon from "autocannon";
import { PredictRequestSchema } from "../gen/bikeshare/v1/predict_pb.js";
import { ModelInferRequestSchema } from "../gen/inference/grpc_predict_v2_pb.js";
import { MODEL_FIELDS, modelInput, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { freePort, serveEnv, startServe } from "../tests/helpers/serve-process.js";
import { seedModels, testConfig } from "../tests/helpers/server.js";
import { docSection } from "./doc-section.js";

const section = docSection("oip");
const CONNECTIONS = 8;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = 3;

interface Load {
  requestsPerSecond: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

const f2 = (x: number) => x.toFixed(2);
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};
const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

async function rest(url: string, body: string | Buffer, headers: Record<string, string>): Promise<Load> {
  // autocannon sends a Buffer body as it is (its README); bench/autocannon.d.ts declares only strings.
  const r = await autocannon({
    url,
    method: "POST",
    headers,
    body: body as string,
    connections: CONNECTIONS,
    duration: SECONDS,
  });
  return {
    requestsPerSecond: r.requests.total / r.duration,
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    errors: r.errors + r.timeouts + r.non2xx,
  };
}

/** The gRPC load in a child process: `CONNECTIONS` channels, one call in flight on each. */
async function grpcLoad(port: number, method: string, payload: Uint8Array): Promise<Load> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      "--import",
      "tsx",
      new URL(import.meta.url).pathname,
      "--grpc-child",
      String(port),
      method,
      Buffer.from(payload).toString("base64"),
    ],
    { timeout: (SECONDS + 60) * 1000 },
  );
  return JSON.parse(stdout.trim().split("\n").at(-1) as string) as Load;
}

async function grpcChild(port: string, method: string, payloadBase64: string): Promise<void> {
  const Client = grpc.makeGenericClientConstructor({}, "Load");
  const clients = Array.from(
    { length: CONNECTIONS },
    () =>
      new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
  );
  const payload = Buffer.from(payloadBase64, "base64");
  const latencies: number[] = [];
  let errors = 0;
  let lastError = "";
  const call = (client: grpc.Client) =>
    new Promise<void>((resolve) => {
      const start = performance.now();
      client.makeUnaryRequest(
        method,
        (b: Buffer) => b,
        (b: Buffer) => b,
        payload,
        (error) => {
          if (error) {
            errors++;
            lastError = error.message;
          } else latencies.push(performance.now() - start);
          resolve();
        },
      );
    });
  for (const c of clients) await call(c); // connect and warm up each channel
  if (errors > 0) throw new Error(`${method} failed: ${lastError}`);
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
  const load: Load = {
    requestsPerSecond: latencies.length / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    errors,
  };
  console.log(JSON.stringify(load));
}

export async function oipBenchmark(): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-bench-oip-"));
  try {
    const config = await testConfig(dir);
    await seedModels(config, 1);
    const port = await freePort();
    const server = await startServe(
      [],
      serveEnv(dir, undefined, port, { BIKESHARE_DB: config.dbPath, LOG_LEVEL: "warn" }),
      async (p) => {
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          // Refused until the port opens: polled again until the deadline, which then fails loudly.
          if ((await fetch(`${p.baseUrl}/readyz`).catch(() => undefined))?.ok) return;
          await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error(`the server on ${p.baseUrl} was not ready within 60 s`);
      },
    );
    try {
      const base = server.baseUrl;
      const info = (await (await fetch(`${base}/v2/models/${config.modelName}`)).json()) as {
        versions: string[];
      };
      const one = modelInput(readHourCsvRecords()[5000] as Record<string, number | string>);
      const json = { "content-type": "application/json" };
      const named = MODEL_FIELDS.map((name) => ({ name, datatype: "FP64", shape: [1], data: [one[name]] }));
      const oipJson = JSON.stringify({ inputs: named, outputs: [{ name: "cnt" }] });
      // Binary tensor data in and out, as tritonclient sends it by default.
      const header = Buffer.from(
        JSON.stringify({
          inputs: MODEL_FIELDS.map((name) => ({
            name,
            datatype: "FP32",
            shape: [1],
            parameters: { binary_data_size: 4 },
          })),
          parameters: { binary_data_output: true },
        }),
      );
      const values = Buffer.alloc(4 * MODEL_FIELDS.length);
      MODEL_FIELDS.forEach((name, i) => {
        values.writeFloatLE(one[name] as number, i * 4);
      });
      const oipBinary = Buffer.concat([header, values]);
      const inferRequest = create(ModelInferRequestSchema, {
        modelName: config.modelName,
        inputs: MODEL_FIELDS.map((name) => ({ name, datatype: "FP32", shape: [1n] })),
        rawInputContents: MODEL_FIELDS.map((_, i) => values.subarray(i * 4, i * 4 + 4)),
      });

      const runs: [string, () => Promise<Load>][] = [
        ["legacy REST `POST /predict`", () => rest(`${base}/predict`, JSON.stringify(one), json)],
        [
          "Connect JSON `PredictService/Predict`",
          () =>
            rest(`${base}/bikeshare.v1.PredictService/Predict`, JSON.stringify({ conditions: one }), json),
        ],
        [
          "gRPC `PredictService/Predict`",
          () =>
            grpcLoad(
              port,
              "/bikeshare.v1.PredictService/Predict",
              toBinary(PredictRequestSchema, create(PredictRequestSchema, { conditions: one })),
            ),
        ],
        [
          "OIP v2 REST, JSON (12 FP64 tensors)",
          () => rest(`${base}/v2/models/${config.modelName}/infer`, oipJson, json),
        ],
        [
          "OIP v2 REST, binary tensor data (12 FP32 tensors)",
          () =>
            rest(`${base}/v2/models/${config.modelName}/infer`, oipBinary, {
              "content-type": "application/octet-stream",
              "inference-header-content-length": String(header.length),
            }),
        ],
        [
          "OIP v2 gRPC `ModelInfer`, raw_input_contents",
          () =>
            grpcLoad(
              port,
              "/inference.GRPCInferenceService/ModelInfer",
              toBinary(ModelInferRequestSchema, inferRequest),
            ),
        ],
      ];
      const results = new Map<string, Load[]>(runs.map(([name]) => [name, []]));
      // Other processes on the machine move every figure: the section says how busy it was.
      const loadBefore = os.loadavg()[0] as number;
      for (let round = 0; round < ROUNDS; round++) {
        for (const [name, load] of runs) {
          const r = await load();
          if (r.errors > 0) throw new Error(`${name}: ${r.errors} errors`);
          results.get(name)?.push(r);
          console.log(`round ${round + 1}, ${name}: ${Math.round(r.requestsPerSecond)} req/s`);
        }
      }
      const loadAfter = os.loadavg()[0] as number;
      const machine = `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, Node ${process.version}`;
      const table = runs
        .map(([name]) => {
          const rs = results.get(name) as Load[];
          return `| ${name} | ${Math.round(median(rs.map((r) => r.requestsPerSecond)))} | ${rs.map((r) => Math.round(r.requestsPerSecond)).join(", ")} | ${f2(median(rs.map((r) => r.p50ms)))} | ${f2(median(rs.map((r) => r.p99ms)))} |`;
        })
        .join("\n");
      return `${section.start}
## Open Inference Protocol v2 beside the native protocols

Generated by \`npx tsx bench/oip.ts\` on ${new Date().toISOString().slice(0, 10)} (${machine}). One \`bikeshare serve\`
(from the sources, embedded DuckDB, one trained model, version ${info.versions[0]}), single-row predictions, ${CONNECTIONS}
connections, ${SECONDS} s per run, ${ROUNDS} rounds taking turns; the figures are medians. REST loads: autocannon in the
bench process (HTTP/1.1); gRPC loads: a grpc-js closed loop (${CONNECTIONS} channels, h2c) in a process of its own. All
share the machine's cores with the server; its 1-minute load average was ${loadBefore.toFixed(1)} before the runs and
${loadAfter.toFixed(1)} after (anything above 2 means other processes took CPU from this benchmark). Every OIP request goes through the same validation, model and prediction
log as Predict (docs/oip-v2.md).

| protocol | req/s (median) | req/s each round | p50 ms | p99 ms |
|---|---|---|---|---|
${table}
${section.end}
`;
    } finally {
      await server.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const currentOipSection = section.current;
export const writeOipSection = section.write;

if (process.argv[2] === "--grpc-child") {
  const [port, method, payload] = process.argv.slice(3) as [string, string, string];
  grpcChild(port, method, payload).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
} else section.runIfMain(import.meta.url, oipBenchmark);
