/**
 * The cost of explaining one prediction (the "Explanations" section of docs/benchmarks.md): XGBoost's
 * own contribution prediction through the addon (TreeSHAP for trees, weight × value for gblinear) plus
 * core/explain's naming, for one row of hour.csv, with the models each family's baseline trains to
 * (gbtree: 600 trees of depth 6, the size the default training job serves; random forest: 80 trees of
 * depth 12; linear), one OpenMP thread as ServingModel sets it. Also the largest additivity error of
 * the 600-tree model over 2,000 rows. Goal from issue 15: one row ≤ 1 ms.
 * Usage: npx tsx bench/explain.ts (also a step of `npm run bench` unless BENCH_EXPLAIN=0).
 */
import os from "node:os";
import { performance } from "node:perf_hooks";
import { explainContributions } from "../core/explain/index.js";
import { dayColumn, featureMatrix, NUM_FEATURES, withDays } from "../core/features/index.js";
import { type Booster, train } from "../core/xgboost/index.js";
import { loadHourly } from "../pipelines/data/hourly.js";
import { candidateSpecs } from "../pipelines/training/search-space.js";
import type { Family } from "../pipelines/training/types.js";
import { xgboostParams } from "../pipelines/training/xgboost-params.js";
import { projectRoot } from "../services/config.js";
import { docSection } from "./doc-section.js";

const section = docSection("explain");
const RUNS = 5;

/** Median over RUNS timed runs of `calls` calls each, in ms per call. */
async function perCallMs(call: () => unknown, calls: number): Promise<number> {
  for (let i = 0; i < Math.max(2, calls / 4); i++) await call();
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const started = performance.now();
    for (let i = 0; i < calls; i++) await call();
    runs.push((performance.now() - started) / calls);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(RUNS / 2)] as number;
}

export async function explainBenchmark(): Promise<string> {
  const data = await loadHourly(`${projectRoot()}/data/raw/hour.csv`);
  const x = featureMatrix(withDays(data.columns, dayColumn(data.dteday)));
  const labels = Float32Array.from(data.cnt);
  const all = { data: x, rows: data.columns.length, cols: NUM_FEATURES, labels };
  const models: { family: Family; label: string; rounds: number }[] = [
    { family: "gbtree", label: "gbtree, 600 trees of depth 6", rounds: 600 },
    { family: "random_forest", label: "random forest, 80 trees of depth 12", rounds: 1 },
    { family: "linear", label: "linear (gblinear)", rounds: 100 },
  ];
  const lines: string[] = [];
  let additivity = "";
  for (const m of models) {
    const spec = candidateSpecs({ families: [m.family], trials: 0 })[0];
    if (!spec) throw new Error(`no baseline for ${m.family}`);
    const { booster } = await train({ params: xgboostParams(spec, labels, 2), rounds: m.rounds, train: all });
    try {
      booster.setParam("nthread", 1);
      const one = { data: x.subarray(5000 * NUM_FEATURES, 5001 * NUM_FEATURES), rows: 1, cols: NUM_FEATURES };
      const predictMs = await perCallMs(() => booster.predict(one), 200);
      const probe = performance.now();
      booster.predictContribs(one);
      // About 2 s of calls per run, at least 3.
      const calls = Math.max(3, Math.round(2000 / Math.max(0.01, performance.now() - probe)));
      const syncMs = await perCallMs(
        () => explainContributions(booster.predictContribs(one), 1, "prediction"),
        calls,
      );
      const asyncMs = await perCallMs(
        async () => explainContributions(await booster.predictContribsAsync(one), 1, "prediction"),
        calls,
      );
      console.log(`explain ${m.label}: ${syncMs.toFixed(3)} ms (thread pool ${asyncMs.toFixed(3)} ms)`);
      const f = (ms: number) => (ms < 1 ? ms.toFixed(3) : ms.toFixed(1));
      lines.push(
        `| ${m.label} | ${f(predictMs)} | ${f(syncMs)} | ${f(asyncMs)} | ${syncMs <= 1 ? "yes" : "**no**"} |`,
      );
      if (m.family === "gbtree") additivity = additivityOf(booster, x, 2000);
    } finally {
      booster.dispose();
    }
  }
  const cpus = os.cpus();
  const machine = `${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, Linux ${os.release()}, Node ${process.version}`;
  return `${section.start}
## Explanations (one prediction)

Explaining one row of hour.csv: XGBoost's own contribution prediction through the addon
(\`Booster.predictContribs\`, XGBoosterPredictFromDMatrix type 2: exact TreeSHAP for trees, weight × value
for gblinear) and \`core/explain\` naming the contributions by input field, one OpenMP thread as the server
runs it (median of ${RUNS} timed runs, ms per row). "Thread pool" is the served path
(\`predictContribsAsync\`: the same work on a libuv thread, the event loop free meanwhile). The models are
each family's baseline trained on all of hour.csv. Goal (issue 15): one row ≤ 1 ms.

| model | predict | explain | explain, thread pool | ≤ 1 ms |
|---|---:|---:|---:|:---:|
${lines.join("\n")}

Exact TreeSHAP costs O(trees × leaves × depth²) per row, so the goal holds only for small models: the
linear model, and tree ensembles of about a hundred shallow trees. The 600-tree gbtree and the deep forest
take milliseconds to tens of milliseconds a row, which is why explanations run on the thread pool and a
request may ask for at most 100 of them (\`EXPLAIN_MAX_ROWS\`). Not done: a faster exact algorithm
(precomputed per-leaf path weights, Fast TreeSHAP v2) or XGBoost's approximate (Saabas) contributions,
which are cheap but not Shapley values.

Additivity of the 600-tree gbtree, first 2,000 rows: ${additivity}. The tests check
|bias + Σ contributions − prediction| < 1e-3 on all 17,379 rows for smaller models of each family
(tests/pipelines/explain-additivity.test.ts). Both sides are XGBoost's float32 sums over the trees, so the
gap grows with the number of trees and the size of the prediction.

Machine: ${machine}; load average at the end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")} (shared: other work ran beside it).
${section.end}
`;
}

function additivityOf(booster: Booster, x: Float32Array, rows: number): string {
  const m = { data: x.subarray(0, rows * NUM_FEATURES), rows, cols: NUM_FEATURES };
  const predictions = booster.predict(m);
  const explanations = explainContributions(booster.predictContribs(m), rows, "prediction");
  let worst = 0;
  let worstRelative = 0;
  explanations.forEach((e, r) => {
    const p = predictions[r] as number;
    const diff = Math.abs(e.prediction - p);
    worst = Math.max(worst, diff);
    worstRelative = Math.max(worstRelative, diff / Math.max(1, Math.abs(p)));
  });
  return `max |bias + Σ contributions − prediction| = ${worst.toExponential(2)} (relative ${worstRelative.toExponential(2)})`;
}

export const currentExplainSection = section.current;
export const writeExplainSection = section.write;

section.runIfMain(import.meta.url, explainBenchmark);
