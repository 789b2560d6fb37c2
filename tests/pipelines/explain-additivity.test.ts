import { beforeAll, describe, expect, it } from "vitest";
import { explainContributions, explanationSpace } from "../../core/explain/index.js";
import { dayColumn, featureMatrix, NUM_FEATURES, withDays } from "../../core/features/index.js";
import { type Booster, train } from "../../core/xgboost/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import { maskDates } from "../../pipelines/training/matrices.js";
import { candidateSpecs } from "../../pipelines/training/search-space.js";
import type { Family, LabelledMatrix, ObjectiveName } from "../../pipelines/training/types.js";
import { xgboostParams } from "../../pipelines/training/xgboost-params.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

// Additivity of explanations (core/explain over Booster.predictContribs). Real models of each family, fitted with the pipeline's own family parameters on all of hour.csv
// (half the rows with their date hidden, as training does), smaller than production ones so that
// explaining all 17,379 rows stays within a test's time: TreeSHAP costs milliseconds a row.
const WIDTH = NUM_FEATURES + 1;

let all: LabelledMatrix;

async function fitModel(
  family: Family,
  objective: ObjectiveName,
  rounds: number,
  overrides: Record<string, number> = {},
): Promise<Booster> {
  const spec = candidateSpecs({ families: [family], objectives: [objective], trials: 0, overrides })[0];
  if (!spec) throw new Error("no spec");
  const { booster } = await train({ params: xgboostParams(spec, all.labels, 2), rounds, train: all });
  return booster;
}

/** Largest |bias + Σ contributions − the booster's own prediction| (in margin space for a log link). */
async function additivityError(booster: Booster, objective: string, m: LabelledMatrix) {
  const predictions = booster.predict(m);
  const contribs = await booster.predictContribsAsync(m);
  const space = explanationSpace(objective);
  const explanations = explainContributions(contribs, m.rows, space);
  let worst = 0;
  explanations.forEach((e, r) => {
    const sum = e.bias + e.contributions.reduce((a, c) => a + c.value, 0);
    const p = predictions[r] as number;
    worst = Math.max(worst, Math.abs(space === "log" ? sum - Math.log(p) : sum - p));
    // The named-field total is the same number as XGBoost's own feature total.
    expect(Math.abs(e.prediction - (space === "log" ? Math.exp(sum) : sum))).toBeLessThan(
      1e-9 * Math.max(1, p),
    );
  });
  return { worst, explanations, contribs };
}

beforeAll(async () => {
  const data = await loadHourly(HOUR_CSV);
  const full: LabelledMatrix = {
    data: featureMatrix(withDays(data.columns, dayColumn(data.dteday))),
    rows: data.columns.length,
    cols: NUM_FEATURES,
    labels: Float32Array.from(data.cnt),
  };
  all = maskDates(full, 0.5, 42);
}, 60_000);

describe("explanations add up to the prediction on all 17,379 hours of hour.csv", () => {
  it("gbtree (squared error): bias + contributions = prediction within 1e-3", async () => {
    expect(all.rows).toBe(17_379);
    const booster = await fitModel("gbtree", "squared_error", 150);
    try {
      const { worst } = await additivityError(booster, "reg:squarederror", all);
      expect(worst).toBeLessThan(1e-3);
    } finally {
      booster.dispose();
    }
  }, 600_000);

  it("random forest (squared error): bias + contributions = prediction within 1e-3", async () => {
    const booster = await fitModel("random_forest", "squared_error", 1, {
      num_parallel_tree: 20,
      max_depth: 8,
    });
    try {
      const { worst } = await additivityError(booster, "reg:squarederror", all);
      expect(worst).toBeLessThan(1e-3);
    } finally {
      booster.dispose();
    }
  }, 600_000);

  it("linear: each contribution is weight × value (0 for a missing value), and they add up", async () => {
    const booster = await fitModel("linear", "squared_error", 100);
    try {
      const { worst, contribs } = await additivityError(booster, "reg:squarederror", all);
      expect(worst).toBeLessThan(1e-3);
      const model = JSON.parse(booster.saveJson()) as {
        learner: { gradient_booster: { model: { weights: number[] } } };
      };
      const weights = model.learner.gradient_booster.model.weights;
      let missing = 0;
      for (let r = 0; r < all.rows; r += 97) {
        for (let f = 0; f < NUM_FEATURES; f++) {
          const x = all.data[r * NUM_FEATURES + f] as number;
          const expected = Number.isNaN(x) ? 0 : Math.fround(x * (weights[f] as number));
          if (Number.isNaN(x)) missing++;
          expect(contribs[r * WIDTH + f]).toBeCloseTo(expected, 4);
        }
      }
      // Half the rows have no date: the missing-value case was exercised, not assumed.
      expect(missing).toBeGreaterThan(0);
    } finally {
      booster.dispose();
    }
  }, 600_000);

  it("Poisson gbtree: contributions add up to log(prediction) and say space `log`", async () => {
    const booster = await fitModel("gbtree", "poisson", 100);
    try {
      const { worst, explanations } = await additivityError(booster, "count:poisson", all);
      expect(worst).toBeLessThan(1e-3);
      expect(explanations[0]?.space).toBe("log");
    } finally {
      booster.dispose();
    }
  }, 600_000);
});
