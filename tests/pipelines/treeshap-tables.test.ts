import { monitorEventLoopDelay } from "node:perf_hooks";
import { beforeAll, describe, expect, it } from "vitest";
import { dayColumn, featureMatrix, NUM_FEATURES, withDays } from "../../core/features/index.js";
import { Booster, TreeShapDeclined, TreeShapTables, train } from "../../core/xgboost/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import { maskDates } from "../../pipelines/training/matrices.js";
import { candidateSpecs } from "../../pipelines/training/search-space.js";
import type { Family, LabelledMatrix, ObjectiveName } from "../../pipelines/training/types.js";
import { xgboostParams } from "../../pipelines/training/xgboost-params.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

// Parity of the precomputed TreeSHAP tables (TreeShapTables, core/xgboost/src/treeshap.cc) with XGBoost's own
// predictContribs, the reference, on every row of hour.csv through the feature pipeline: once with all
// features present and once with half the rows' dates hidden (their date features NaN, so every split
// on them takes its default branch). Models are fitted with the pipeline's own family parameters,
// smaller than production so that XGBoost explaining 2 × 17,379 rows stays within a test's time.
const TOLERANCE = 1e-3;

let full: LabelledMatrix;
let masked: LabelledMatrix;

async function fitModel(
  family: Family,
  objective: ObjectiveName,
  rounds: number,
  overrides: Record<string, number> = {},
): Promise<Booster> {
  const spec = candidateSpecs({ families: [family], objectives: [objective], trials: 0, overrides })[0];
  if (!spec) throw new Error("no spec");
  const { booster } = await train({ params: xgboostParams(spec, masked.labels, 2), rounds, train: masked });
  return booster;
}

/**
 * Largest |tables − XGBoost| over every contribution and the bias of every row of `m`, evaluated on the
 * thread pool, and the same on the calling thread for the first rows (the served path for few rows).
 */
async function parity(booster: Booster, tables: TreeShapTables, m: LabelledMatrix): Promise<number> {
  const reference = await booster.predictContribsAsync(m);
  const got = await tables.contributionsAsync(m);
  expect(got.length).toBe(reference.length);
  const few = { data: m.data.subarray(0, 4 * m.cols), rows: 4, cols: m.cols };
  expect(tables.contributions(few)).toEqual(got.subarray(0, 4 * (m.cols + 1)));
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    worst = Math.max(worst, Math.abs((got[i] as number) - (reference[i] as number)));
  }
  return worst;
}

function missingRows(m: LabelledMatrix): number {
  let rows = 0;
  for (let r = 0; r < m.rows; r++) {
    if (m.data.subarray(r * m.cols, (r + 1) * m.cols).some(Number.isNaN)) rows++;
  }
  return rows;
}

beforeAll(async () => {
  const data = await loadHourly(HOUR_CSV);
  full = {
    data: featureMatrix(withDays(data.columns, dayColumn(data.dteday))),
    rows: data.columns.length,
    cols: NUM_FEATURES,
    labels: Float32Array.from(data.cnt),
  };
  // Trained as the pipeline trains (half the dates hidden), so the trees learn real default branches.
  masked = maskDates(full, 0.5, 42);
}, 60_000);

describe("TreeSHAP tables equal XGBoost's predictContribs on all 17,379 hours of hour.csv", () => {
  it("gbtree (squared error, depth 6): every contribution within 1e-3, with and without missing values", async () => {
    expect(full.rows).toBe(17_379);
    expect(missingRows(full)).toBe(0);
    expect(missingRows(masked)).toBeGreaterThan(5000);
    const booster = await fitModel("gbtree", "squared_error", 150);
    try {
      booster.setParam("nthread", 2);
      const tables = await TreeShapTables.build(booster.saveJson());
      expect(await parity(booster, tables, full)).toBeLessThan(TOLERANCE);
      expect(await parity(booster, tables, masked)).toBeLessThan(TOLERANCE);
    } finally {
      booster.dispose();
    }
  }, 900_000);

  it("random forest (20 trees of depth 8): every contribution within 1e-3, with and without missing values", async () => {
    const booster = await fitModel("random_forest", "squared_error", 1, {
      num_parallel_tree: 20,
      max_depth: 8,
    });
    try {
      booster.setParam("nthread", 2);
      const tables = await TreeShapTables.build(booster.saveJson());
      expect(await parity(booster, tables, full)).toBeLessThan(TOLERANCE);
      expect(await parity(booster, tables, masked)).toBeLessThan(TOLERANCE);
    } finally {
      booster.dispose();
    }
  }, 900_000);

  it("Poisson gbtree: the bias is log(base_score) + the trees' means, contributions within 1e-3 (log space)", async () => {
    const booster = await fitModel("gbtree", "poisson", 60);
    try {
      booster.setParam("nthread", 2);
      const tables = await TreeShapTables.build(booster.saveJson());
      expect(await parity(booster, tables, masked)).toBeLessThan(TOLERANCE);
    } finally {
      booster.dispose();
    }
  }, 900_000);
});

describe("TreeSHAP tables decline what they do not reproduce, so the caller keeps XGBoost", () => {
  it("bounds its tables: a leaf with more distinct path features than the cap, or tables over the byte cap", async () => {
    const booster = await fitModel("gbtree", "squared_error", 20);
    try {
      const json = booster.saveJson();
      const tables = await TreeShapTables.build(json);
      // 20 trees of depth 6: at most 20 × 64 leaves × 2^6 float32s.
      expect(tables.tableBytes).toBeLessThanOrEqual(20 * 64 * 64 * 4);
      expect(tables.leaves).toBeGreaterThan(20);
      await expect(TreeShapTables.build(json, { maxPathFeatures: 3 })).rejects.toThrow(
        /distinct path features \(limit 3\)/,
      );
      const overBytes = TreeShapTables.build(json, { maxTableBytes: 1024 });
      await expect(overBytes).rejects.toBeInstanceOf(TreeShapDeclined);
      await expect(overBytes).rejects.toThrow(/tables would exceed/);
      await expect(TreeShapTables.build(json, { maxPathFeatures: 25 })).rejects.toThrow(/maxPathFeatures/);
    } finally {
      booster.dispose();
    }
  }, 300_000);

  it("refuses gblinear, unsupported objectives and text that is not a model, and checks its input", async () => {
    const booster = await fitModel("linear", "squared_error", 5);
    try {
      await expect(TreeShapTables.build(booster.saveJson())).rejects.toThrow(
        /booster "gblinear" is not gbtree/,
      );
    } finally {
      booster.dispose();
    }
    const tree = await fitModel("gbtree", "squared_error", 2);
    try {
      const model = JSON.parse(tree.saveJson()) as { learner: { objective: { name: string } } };
      model.learner.objective.name = "binary:logistic";
      await expect(TreeShapTables.build(JSON.stringify(model))).rejects.toThrow(
        /objective "binary:logistic"/,
      );
      // Not declined (a model it cannot read is an error, not a limit), and no crash on a cut-off file.
      const cut = tree.saveJson().slice(0, 500);
      const broken = await TreeShapTables.build(cut).catch((e: unknown) => e);
      expect(broken).toBeInstanceOf(Error);
      expect(broken).not.toBeInstanceOf(TreeShapDeclined);
      expect((broken as Error).message).toMatch(/model JSON/);
      const tables = await TreeShapTables.build(Buffer.from(tree.saveJson()));
      const one = new Float32Array(NUM_FEATURES);
      const short = new Float32Array(NUM_FEATURES - 1);
      expect(() => tables.contributions({ data: short, rows: 1, cols: NUM_FEATURES - 1 })).toThrow(
        /matrix\.cols/,
      );
      expect(() => tables.contributions({ data: one, rows: 2, cols: NUM_FEATURES })).toThrow(/matrix\.data/);
      tables.dispose();
      expect(() => tables.contributions({ data: one, rows: 1, cols: NUM_FEATURES })).toThrow(/disposed/);
    } finally {
      tree.dispose();
    }
  }, 300_000);
});

describe("off the event loop", () => {
  it("builds the tables and loads a booster on the thread pool: the loop never stalls meanwhile", async () => {
    // The 600-tree depth-6 model the training job serves: its tables took 460 ms and XGBoost's
    // loadJson 420 ms on the event loop (bench/explain.ts before they moved to the thread pool).
    const booster = await fitModel("gbtree", "squared_error", 600);
    const bytes = Buffer.from(booster.saveJson());
    booster.dispose();
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const before = performance.eventLoopUtilization();
    const started = performance.now();
    // What the loop itself runs: the calls up to their promises (copying the model for the pool)...
    const building = TreeShapTables.build(bytes);
    const loading = Booster.loadJsonAsync(bytes);
    const callsMs = performance.now() - started;
    const [tables, loaded] = await Promise.all([building, loading]);
    const took = performance.now() - started;
    // ...and everything else it ran meanwhile (resolving them, the delay monitor's own timer): the
    // loop's active time, which unlike the largest delay does not count the time this process waited
    // for a core on a machine shared with other work (tens to hundreds of ms when it is loaded).
    const busy = performance.eventLoopUtilization(before);
    delay.disable();
    try {
      const maxMs = delay.max / 1e6;
      console.log(
        `build + load ${took.toFixed(0)} ms; event loop: calls ${callsMs.toFixed(1)} ms, active ${busy.active.toFixed(1)} ms in all, largest delay ${maxMs.toFixed(1)} ms`,
      );
      expect(callsMs).toBeLessThan(20);
      // On the loop the two took ~0.9 s of active time; now no single stall can exceed the total.
      expect(busy.active).toBeLessThan(20);
      expect(took).toBeGreaterThan(busy.active);
      expect(tables.tableBytes).toBeGreaterThan(2 ** 20);
      expect(loaded.numFeatures()).toBe(NUM_FEATURES);
      await expect(Booster.loadJsonAsync("{not json")).rejects.toThrow(/XGBoosterLoadModelFromBuffer/);
    } finally {
      tables.dispose();
      loaded.dispose();
    }
  }, 300_000);
});
