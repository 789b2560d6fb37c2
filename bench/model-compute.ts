/**
 * Model compute alone, in-process (the "Model compute" section of docs/benchmarks.md): one call of
 * ONNX Runtime (`OnnxModel`, as ServingModel runs it on the event loop's thread), of the compiled
 * evaluator (`CompiledModel`) and of XGBoost's own in-place predict (the addon's `Booster.predict`) on
 * 1 to 512 rows of hour.csv through the real feature pipeline, for a 600-tree gbtree of depth 6 (the
 * size the default training job serves). The crossover it shows sets `COMPILED_MAX_ROWS` in
 * services/predict/serving-model.ts.
 * Usage: npx tsx bench/model-compute.ts (also a step of `npm run bench` unless BENCH_MODEL_COMPUTE=0).
 */
import os from "node:os";
import { performance } from "node:perf_hooks";
import { FEATURE_NAMES, featureMatrix, type RawRecord, recordsToColumns } from "../core/features/index.js";
import { CompiledModel, OnnxModel, xgboostToOnnx } from "../core/onnx/index.js";
import { Booster, train } from "../core/xgboost/index.js";
import { COMPILED_MAX_ROWS } from "../services/predict/serving-model.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { docSection } from "./doc-section.js";

const section = docSection("model-compute");
const TREES = 600;
const BATCHES = [1, 2, 4, 8, 64, 512];
/** Median of this many timed runs, each long enough (~50 ms) that the timer's resolution does not matter. */
const RUNS = 7;

async function perCallMicros(call: () => unknown, rows: number): Promise<number> {
  const calls = Math.max(20, Math.round(20_000 / rows));
  for (let i = 0; i < Math.min(calls, 200); i++) await call();
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const started = performance.now();
    for (let i = 0; i < calls; i++) await call();
    runs.push(((performance.now() - started) * 1000) / calls);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(RUNS / 2)] as number;
}

export async function modelComputeBenchmark(): Promise<string> {
  const records = readHourCsvRecords().map(
    (r) => Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f]])) as RawRecord,
  );
  const data = featureMatrix(recordsToColumns(records));
  const cols = FEATURE_NAMES.length;
  const labels = Float32Array.from(readHourCsvRecords(), (r) => Number(r.cnt));
  const { booster: trained } = await train({
    params: { tree_method: "hist", max_depth: 6, eta: 0.05, nthread: 1, seed: 1 },
    rounds: TREES,
    train: { data, rows: records.length, cols, labels },
  });
  trained.setFeatureNames([...FEATURE_NAMES]);
  const json = trained.saveJson();
  trained.dispose();
  const booster = Booster.loadJson(json);
  const bytes = xgboostToOnnx(json, { featureNames: [...FEATURE_NAMES] });
  const onnx = await OnnxModel.load(bytes, { intraOpThreads: 1 });
  const compiled = CompiledModel.fromOnnx(bytes);
  const lines: string[] = [];
  try {
    for (const rows of BATCHES) {
      const x = data.subarray(1000 * cols, (1000 + rows) * cols);
      const onnxUs = await perCallMicros(() => onnx.predict(x, rows), rows);
      const compiledUs = await perCallMicros(() => compiled.predict(x, rows), rows);
      const nativeUs = await perCallMicros(() => booster.predict({ data: x, rows, cols }), rows);
      console.log(
        `model compute, ${rows} rows: onnx ${onnxUs} µs, compiled ${compiledUs} µs, native ${nativeUs} µs`,
      );
      const f = (us: number) => (us < 100 ? us.toFixed(1) : Math.round(us).toLocaleString("en-US"));
      lines.push(
        `| ${rows} | ${f(onnxUs)} | ${f(compiledUs)} | ${f(nativeUs)} | ${(onnxUs / compiledUs).toFixed(1)}× |`,
      );
    }
  } finally {
    await onnx.release();
    booster.dispose();
  }
  const cpus = os.cpus();
  const machine = `${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, Linux ${os.release()}, Node ${process.version}`;
  return `${section.start}
## Model compute (in-process)

One call on the calling thread, features already computed, for a ${TREES}-tree gbtree of depth 6 trained on
hour.csv (median of ${RUNS} timed runs, µs per call). ONNX Runtime pays a fixed cost per run; the compiled
evaluator (\`core/onnx/compiled-model.ts\`: the exported ONNX graph walked over flat typed arrays in
TypeScript) does not, but costs more per row: the server sends it requests of up to ${COMPILED_MAX_ROWS} rows
(\`COMPILED_MAX_ROWS\`, services/predict/serving-model.ts), the crossover below. XGBoost's in-place predict
through the addon is shown for comparison. Goal: one row ≤ 20 µs.

| rows | ONNX Runtime | compiled | XGBoost in-place | ONNX / compiled |
|---:|---:|---:|---:|---:|
${lines.join("\n")}

Machine: ${machine}; load average at the end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} (shared: other work ran beside it).
${section.end}
`;
}

export const currentModelComputeSection = section.current;
export const writeModelComputeSection = section.write;

section.runIfMain(import.meta.url, modelComputeBenchmark);
