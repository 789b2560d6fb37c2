import { beforeAll, describe, expect, it } from "vitest";
import { DATE_FEATURE_NAMES, FEATURE_NAMES, NUM_FEATURES } from "../../core/features/index.js";
import type { RegressionReport } from "../../core/metrics/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import { Booster } from "../../core/xgboost/index.js";
import { type HourlyDataset, loadHourly } from "../../pipelines/data/hourly.js";
import {
  type CandidateResult,
  type CandidateSpec,
  candidateSpecs,
  chooseWinner,
  type Family,
  finalizeWinner,
  fitCandidate,
  type PreparedData,
  prepareData,
  trainAndSelect,
} from "../../pipelines/training/candidates.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

let dataset: HourlyDataset;
let data: PreparedData;
beforeAll(async () => {
  dataset = await loadHourly(HOUR_CSV);
  data = prepareData(dataset);
});

describe("candidate specs", () => {
  it("are reproducible for a seed and differ between seeds", () => {
    const a = candidateSpecs({ seed: 7 });
    expect(candidateSpecs({ seed: 7 })).toEqual(a);
    expect(candidateSpecs({ seed: 8 })).not.toEqual(a);
    // Defaults: 3 families × squared error × (baseline + 4 trials).
    expect(a.map((s) => s.id)).toEqual([
      ...["gbtree#0", "gbtree#1", "gbtree#2", "gbtree#3", "gbtree#4"],
      ...["random_forest#0", "random_forest#1", "random_forest#2", "random_forest#3", "random_forest#4"],
      ...["linear#0", "linear#1", "linear#2", "linear#3", "linear#4"],
    ]);
    expect(new Set(a.map((s) => s.params.seed))).toEqual(new Set([7]));
    // Baselines do not depend on the seed, draws do.
    expect(candidateSpecs({ seed: 8 })[0]?.params).toEqual({ ...a[0]?.params, seed: 8 });
  });

  it("respect the families and objectives asked for, and map them to XGBoost", () => {
    const specs = candidateSpecs({
      families: ["random_forest", "linear"],
      objectives: ["poisson", "tweedie"],
      trials: 2,
    });
    expect(specs).toHaveLength(2 * 2 * 3);
    expect(new Set(specs.map((s) => s.family))).toEqual(new Set(["random_forest", "linear"]));
    expect(
      specs.filter((s) => s.objective === "poisson").every((s) => s.params.objective === "count:poisson"),
    ).toBe(true);
    const tweedie = specs.filter((s) => s.objective === "tweedie");
    expect(tweedie.every((s) => s.params.objective === "reg:tweedie")).toBe(true);
    for (const s of tweedie) {
      expect(s.params.tweedie_variance_power).toBeGreaterThanOrEqual(1.1);
      expect(s.params.tweedie_variance_power).toBeLessThanOrEqual(1.9);
    }
    for (const s of specs) {
      expect(s.params.eval_metric).toBe("rmse");
      if (s.family === "linear")
        expect(s.params).toMatchObject({ booster: "gblinear", updater: "coord_descent" });
      else expect(s.params).toMatchObject({ booster: "gbtree", tree_method: "hist", eta: 1 });
    }
    expect(specs.filter((s) => s.family === "random_forest").map((s) => s.id)).toEqual(
      Array.from({ length: 6 }, (_, i) => `random_forest#${i}`),
    );
  });

  it("draw each family × objective from its own stream, so adding one does not move the others", () => {
    const alone = candidateSpecs({ families: ["random_forest"], trials: 3 });
    const together = candidateSpecs({ families: ["gbtree", "random_forest"], trials: 3 });
    expect(together.filter((s) => s.family === "random_forest")).toEqual(alone);
  });

  it("apply overrides to every candidate, converting numeric strings", () => {
    const specs = candidateSpecs({
      overrides: { max_depth: "9", grow_policy: "lossguide", date_mask_share: 0 },
    });
    for (const s of specs) {
      expect(s.params.max_depth).toBe(9);
      expect(s.params.grow_policy).toBe("lossguide");
      expect(s.params.date_mask_share).toBe(0);
    }
  });

  it("reject a bad override with an error naming it", () => {
    expect(() => candidateSpecs({ overrides: { eta: "fast" } })).toThrow(
      /override eta must be a number, got "fast"/,
    );
    expect(() => candidateSpecs({ overrides: { max_depth: "" } })).toThrow(/max_depth/);
    expect(() => candidateSpecs({ overrides: { date_mask_share: 1.5 } })).toThrow(/date_mask_share/);
    expect(() => candidateSpecs({ overrides: { objective: "reg:gamma" } })).toThrow(/objective.*objectives/);
    expect(() => candidateSpecs({ overrides: { nthread: 4 } })).toThrow(/nthread/);
    expect(() => candidateSpecs({ families: ["svm" as Family] })).toThrow(/unknown family "svm"/);
    expect(() => candidateSpecs({ trials: -1 })).toThrow(/trials/);
  });
});

describe("data preparation", () => {
  it("is split T by default, with dates, and the same rows without them", () => {
    expect(data.rows).toEqual({
      train: 13_003,
      valid: 1488,
      test: 2888,
      split_a_train: 13_903,
      split_a_test: 3476,
    });
    expect(data.windows).toMatchObject({
      train: "2011-01-01 <= dteday < 2012-07-01",
      valid: "2012-07-01 <= dteday < 2012-09-01",
      test: "2012-09-01 <= dteday < 2013-01-01",
    });
    expect(data.featureNames).toEqual([...FEATURE_NAMES]);
    expect(data.test.cols).toBe(NUM_FEATURES);
    const f = FEATURE_NAMES.indexOf(DATE_FEATURE_NAMES[0] as string);
    const column = (m: PreparedData["test"]) =>
      Array.from({ length: m.rows }, (_, r) => m.data[r * m.cols + f]);
    expect(column(data.test).every((v) => Number.isFinite(v))).toBe(true);
    expect(column(data.testWithoutDate).every((v) => Number.isNaN(v))).toBe(true);
    expect(data.testWithoutDate.labels).toBe(data.test.labels);
  });

  it("splits a custom window [from, until) into train, the validDays and the last testDays", () => {
    const w = prepareData(dataset, { from: "2011-03-01", until: "2012-05-01", validDays: 30, testDays: 61 });
    expect(w.windows).toMatchObject({
      train: "2011-03-01 <= dteday < 2012-01-31",
      valid: "2012-01-31 <= dteday < 2012-03-01",
      test: "2012-03-01 <= dteday < 2012-05-01",
    });
    const count = (from: string, until: string) =>
      dataset.dteday.filter((d) => d >= from && d < until).length;
    expect(w.rows).toMatchObject({
      train: count("2011-03-01", "2012-01-31"),
      valid: count("2012-01-31", "2012-03-01"),
      test: count("2012-03-01", "2012-05-01"),
    });
    expect((w.rows.split_a_train as number) + (w.rows.split_a_test as number)).toBe(
      count("2011-03-01", "2012-05-01"),
    );
    // Defaults of a window: 62 + 122 days before the end of the data, i.e. split T on hour.csv.
    expect(prepareData(dataset, {}).windows).toEqual(data.windows);
    expect(() => prepareData(dataset, { from: "2012-06-01", until: "2012-09-01" })).toThrow(/too short/);
  });
});

describe("fitting and finalising", () => {
  // Quick settings: the point here is the mechanics, not the accuracy.
  const quick: Record<Family, Record<string, string | number>> = {
    gbtree: { eta: 0.3 },
    random_forest: { num_parallel_tree: 20 },
    linear: {},
  };
  const specOf = (family: Family): CandidateSpec => {
    const spec = candidateSpecs({ families: [family], trials: 0, overrides: quick[family] })[0];
    if (!spec) throw new Error("no spec");
    return spec;
  };

  it.each(["gbtree", "random_forest", "linear"] as const)(
    "%s trains, refits, and exports ONNX that matches the native model with and without dates",
    async (family) => {
      const result = await fitCandidate(specOf(family), data);
      expect(result.bestRounds).toBeGreaterThanOrEqual(1);
      if (family === "random_forest") expect(result.bestRounds).toBe(1);
      expect(result.history.length).toBeGreaterThanOrEqual(result.bestRounds);
      expect(result.valid.rmse).toBeGreaterThan(0);
      const final = await finalizeWinner(result, data);
      expect(final.rounds).toBe(result.bestRounds);
      expect(Object.keys(final.featureImportance)).toEqual([...FEATURE_NAMES]);
      expect(Object.values(final.featureImportance).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
      expect(final.testWithoutDate?.rmse).toBeGreaterThan(0);
      expect(final.reference.rows).toBe(5000);
      expect(final.reference.featureNames).toEqual([...FEATURE_NAMES]);
      for (const name of FEATURE_NAMES) expect(final.reference.columns[name]).toHaveLength(5000);
      expect(final.reference.predictions).toHaveLength(5000);

      // finalizeWinner already checked parity; check it independently, on every hour of both test sets.
      const native = Booster.loadJson(final.nativeJson);
      const onnx = await OnnxModel.load(final.onnx);
      try {
        for (const m of [data.test, data.testWithoutDate]) {
          const n = native.predict(m);
          const o = await onnx.predict(m.data, m.rows);
          let worst = 0;
          for (let i = 0; i < m.rows; i++) {
            const y = n[i] as number;
            worst = Math.max(worst, Math.abs((o[i] as number) - y) / Math.max(1, Math.abs(y)));
          }
          expect(worst).toBeLessThanOrEqual(1e-3);
        }
      } finally {
        native.dispose();
        await onnx.release();
      }
    },
  );

  it.each(["gbtree", "linear"] as const)(
    "%s gives the same model twice for the same seed and threads",
    async (family) => {
      const spec = specOf(family);
      const [a, b] = [await fitCandidate(spec, data), await fitCandidate(spec, data)];
      expect(b.history).toEqual(a.history);
      expect(b.valid).toEqual(a.valid);
    },
  );

  it("streams every round to onRound and can be aborted", async () => {
    const rounds: number[] = [];
    const result = await fitCandidate(specOf("gbtree"), data, { onRound: (e) => rounds.push(e.round) });
    expect(rounds).toEqual(result.history.map((e) => e.round));
    const controller = new AbortController();
    const aborted = fitCandidate(specOf("gbtree"), data, {
      signal: controller.signal,
      onRound: (e) => {
        if (e.round === 5) controller.abort();
      },
    });
    await expect(aborted).rejects.toMatchObject({ name: "AbortError" });
  });
});

describe("selection", () => {
  const report = (rmse: number): RegressionReport =>
    ({ rmse, mae: rmse, r2: 0, rmsle: 0, within20: 0 }) as RegressionReport;
  const result = (
    id: string,
    valid: number,
    rounds: number,
    extra: { withDate?: number; test?: number } = {},
  ) =>
    ({
      spec: { id, family: "gbtree", objective: "squared_error", params: {} },
      bestRounds: rounds,
      valid: report(valid),
      validWithDate: report(extra.withDate ?? valid),
      validWithoutDate: report(valid),
      history: [],
      seconds: 1,
      // Not part of CandidateResult: what the test window would say, which chooseWinner must not look at.
      test: report(extra.test ?? valid),
    }) as CandidateResult;

  it("chooses by validation RMSE only, whatever the test window or the with-date score says", () => {
    const results = [
      result("a", 62.0, 500, { withDate: 58, test: 60 }),
      result("b", 61.5, 800, { withDate: 61, test: 70 }),
      result("c", 63.0, 300, { test: 55 }),
    ];
    expect(chooseWinner(results).spec.id).toBe("b");
    expect(chooseWinner([...results].reverse()).spec.id).toBe("b");
  });

  it("breaks ties with fewer rounds, ignores non-finite scores, and needs one candidate", () => {
    expect(chooseWinner([result("a", 61, 900), result("b", 61, 400), result("c", 61, 700)]).spec.id).toBe(
      "b",
    );
    expect(chooseWinner([result("nan", Number.NaN, 1), result("x", 90, 10)]).spec.id).toBe("x");
    expect(() => chooseWinner([])).toThrow(/no candidate/);
  });
});

describe("the default search, end to end", () => {
  it("meets the bars: split T test RMSE ≤ 64 with dates and ≤ 66.5 without, split A ≤ 37", async () => {
    const run = await trainAndSelect(dataset);
    expect(run.results).toHaveLength(15);
    expect(new Set(run.results.map((r) => r.spec.family))).toEqual(
      new Set(["gbtree", "random_forest", "linear"]),
    );
    expect(run.winner.valid.rmse).toBe(Math.min(...run.results.map((r) => r.valid.rmse)));
    expect(run.final.test.rmse).toBeLessThanOrEqual(64);
    expect(run.final.testWithoutDate?.rmse).toBeLessThanOrEqual(66.5);
    expect(run.final.splitA.rmse).toBeLessThanOrEqual(37);
    console.info(
      `default search: winner ${run.winner.spec.id} (${run.winner.bestRounds} rounds), test RMSE ${run.final.test.rmse.toFixed(2)} ` +
        `(without date ${run.final.testWithoutDate?.rmse.toFixed(2)}), split A ${run.final.splitA.rmse.toFixed(2)}, ` +
        `${run.seconds.total.toFixed(1)} s`,
    );
  }, 300_000);
});
