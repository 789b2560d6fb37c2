import { beforeAll, describe, expect, it } from "vitest";
import { FastTreeShap, FastTreeShapDeclined } from "../../core/explain/fast-treeshap.js";
import { dayColumn, featureMatrix, NUM_FEATURES, withDays } from "../../core/features/index.js";
import { type Booster, train } from "../../core/xgboost/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import { maskDates } from "../../pipelines/training/matrices.js";
import { candidateSpecs } from "../../pipelines/training/search-space.js";
import type { Family, LabelledMatrix, ObjectiveName } from "../../pipelines/training/types.js";
import { xgboostParams } from "../../pipelines/training/xgboost-params.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

// Parity of the precomputed TreeSHAP tables (core/explain/fast-treeshap.ts) with XGBoost's own
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

/** Largest |fast − XGBoost| over every contribution and the bias of every row of `m`. */
async function parity(booster: Booster, fast: FastTreeShap, m: LabelledMatrix): Promise<number> {
  const reference = await booster.predictContribsAsync(m);
  const got = fast.contributions(m.data, m.rows, m.cols);
  expect(got.length).toBe(reference.length);
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

describe("fast TreeSHAP equals XGBoost's predictContribs on all 17,379 hours of hour.csv", () => {
  it("gbtree (squared error, depth 6): every contribution within 1e-3, with and without missing values", async () => {
    expect(full.rows).toBe(17_379);
    expect(missingRows(full)).toBe(0);
    expect(missingRows(masked)).toBeGreaterThan(5000);
    const booster = await fitModel("gbtree", "squared_error", 150);
    try {
      booster.setParam("nthread", 2);
      const fast = FastTreeShap.fromXgboostJson(booster.saveJson());
      expect(await parity(booster, fast, full)).toBeLessThan(TOLERANCE);
      expect(await parity(booster, fast, masked)).toBeLessThan(TOLERANCE);
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
      const fast = FastTreeShap.fromXgboostJson(booster.saveJson());
      expect(await parity(booster, fast, full)).toBeLessThan(TOLERANCE);
      expect(await parity(booster, fast, masked)).toBeLessThan(TOLERANCE);
    } finally {
      booster.dispose();
    }
  }, 900_000);

  it("Poisson gbtree: the bias is log(base_score) + the trees' means, contributions within 1e-3 (log space)", async () => {
    const booster = await fitModel("gbtree", "poisson", 60);
    try {
      booster.setParam("nthread", 2);
      const fast = FastTreeShap.fromXgboostJson(booster.saveJson());
      expect(await parity(booster, fast, masked)).toBeLessThan(TOLERANCE);
    } finally {
      booster.dispose();
    }
  }, 900_000);
});

describe("fast TreeSHAP declines what it does not reproduce, so the caller keeps XGBoost", () => {
  it("bounds its tables: a leaf with more distinct path features than the cap, or tables over the byte cap", async () => {
    const booster = await fitModel("gbtree", "squared_error", 20);
    try {
      const json = booster.saveJson();
      const fast = FastTreeShap.fromXgboostJson(json);
      // 20 trees of depth 6: at most 20 × 64 leaves × 2^6 float32s.
      expect(fast.tableBytes).toBeLessThanOrEqual(20 * 64 * 64 * 4);
      expect(() => FastTreeShap.fromXgboostJson(json, { maxPathFeatures: 3 })).toThrow(
        /distinct path features \(limit 3\)/,
      );
      expect(() => FastTreeShap.fromXgboostJson(json, { maxTableBytes: 1024 })).toThrow(FastTreeShapDeclined);
      expect(() => FastTreeShap.fromXgboostJson(json, { maxTableBytes: 1024 })).toThrow(
        /tables would exceed/,
      );
    } finally {
      booster.dispose();
    }
  }, 300_000);

  it("refuses gblinear and unsupported objectives, and checks its input", async () => {
    const booster = await fitModel("linear", "squared_error", 5);
    try {
      expect(() => FastTreeShap.fromXgboostJson(booster.saveJson())).toThrow(
        /booster "gblinear" is not gbtree/,
      );
    } finally {
      booster.dispose();
    }
    const tree = await fitModel("gbtree", "squared_error", 2);
    try {
      const model = JSON.parse(tree.saveJson()) as { learner: { objective: { name: string } } };
      model.learner.objective.name = "binary:logistic";
      expect(() => FastTreeShap.fromXgboostJson(model)).toThrow(/objective "binary:logistic"/);
      const fast = FastTreeShap.fromXgboostJson(tree.saveJson());
      expect(() => fast.contributions(new Float32Array(NUM_FEATURES), 1, NUM_FEATURES - 1)).toThrow(/^cols/);
      expect(() => fast.contributions(new Float32Array(NUM_FEATURES), 2, NUM_FEATURES)).toThrow(/^data/);
    } finally {
      tree.dispose();
    }
  }, 300_000);
});
