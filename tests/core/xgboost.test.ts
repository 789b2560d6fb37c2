import { describe, expect, it } from "vitest";
import { seededRandom } from "../../core/random/index.js";
import {
  Booster,
  type DenseMatrix,
  type RoundEvaluation,
  train,
  xgboostVersion,
} from "../../core/xgboost/index.js";

// Real addon, real libxgboost: these tests fail if `npm run build:addon` has not been run.

type Labelled = DenseMatrix & { labels: Float32Array };

/** y = 3*x0 + x1^2 + N(0, 0.5^2); the remaining columns are pure noise features. */
function regression(rows: number, cols: number, seed: number): Labelled {
  const rand = seededRandom(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const data = new Float32Array(rows * cols);
  const labels = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) data[r * cols + c] = rand() * 4 - 2;
    const x0 = data[r * cols] as number;
    const x1 = data[r * cols + 1] as number;
    labels[r] = 3 * x0 + x1 * x1 + 0.5 * gauss();
  }
  return { data, rows, cols, labels };
}

function std(values: Float32Array): number {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
}

function rmse(labels: Float32Array, predictions: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) sum += ((labels[i] as number) - (predictions[i] as number)) ** 2;
  return Math.sqrt(sum / labels.length);
}

function argBest(history: RoundEvaluation[], higherIsBetter = false): number {
  let best = 0;
  history.forEach((e, i) => {
    const v = e.valid as number;
    const b = history[best]?.valid as number;
    if (higherIsBetter ? v > b : v < b) best = i;
  });
  return best;
}

function treeCount(json: string): number {
  const model = JSON.parse(json) as {
    learner: { gradient_booster: { model: { trees: unknown[]; gbtree_model_param: { num_trees: string } } } };
  };
  const { trees, gbtree_model_param } = model.learner.gradient_booster.model;
  expect(Number(gbtree_model_param.num_trees)).toBe(trees.length);
  return trees.length;
}

// nthread 1 keeps most tests deterministic and immune to OpenMP spin-waiting on a loaded 2-core box;
// the event-loop test below trains with nthread 2.
const PARAMS = {
  tree_method: "hist",
  max_depth: 4,
  eta: 0.1,
  objective: "reg:squarederror",
  eval_metric: "rmse",
  nthread: 1,
  seed: 0,
};

const trainSet = regression(4000, 4, 1);
const validSet = regression(1000, 4, 2);

describe("core/xgboost", () => {
  it("reports the linked libxgboost version", () => {
    expect(xgboostVersion).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("learns a regression; predict, predictAsync and a JSON round trip agree", async () => {
    const result = await train({ params: PARAMS, rounds: 150, train: trainSet, valid: validSet });
    const { booster } = result;
    expect(result.rounds).toBe(150);
    expect(result.bestIteration).toBe(149);
    expect(result.history).toHaveLength(150);

    const predictions = booster.predict(validSet);
    expect(predictions).toBeInstanceOf(Float32Array);
    expect(predictions).toHaveLength(validSet.rows);
    const validRmse = rmse(validSet.labels, predictions);
    // Label std is ~3.7 and the noise floor 0.5; a working model lands near the floor.
    expect(validRmse).toBeLessThan(0.25 * std(validSet.labels));
    // The per-round metric is XGBoost's own evaluation of the same predictions.
    expect(result.history.at(-1)?.valid).toBeCloseTo(validRmse, 3);

    expect(await booster.predictAsync(validSet)).toEqual(predictions);

    const json = booster.saveJson();
    expect(treeCount(json)).toBe(150);
    const loaded = Booster.loadJson(json);
    expect(loaded.predict(validSet)).toEqual(predictions);
    expect(loaded.numFeatures()).toBe(4);
    // Leading whitespace would make XGBoost sniff the buffer as binary.
    expect(Booster.loadJson(`\n  ${json}`).predict(validSet)).toEqual(predictions);
    loaded.dispose();

    // NaN is "missing", not an error, and takes the learned default branch.
    const withMissing = { ...validSet, data: validSet.data.slice() };
    withMissing.data[0] = Number.NaN;
    const missingPrediction = booster.predict(withMissing);
    expect(Number.isFinite(missingPrediction[0])).toBe(true);
    expect(missingPrediction.subarray(1)).toEqual(predictions.subarray(1));

    booster.dispose();
    booster.dispose(); // idempotent
    expect(() => booster.predict(validSet)).toThrow(/disposed/);
    await expect(booster.predictAsync(validSet)).rejects.toThrow(/disposed/);
    expect(() => booster.saveJson()).toThrow(/disposed/);
  });

  it("predictAsync survives dispose() while it is in flight", async () => {
    const { booster } = await train({ params: PARAMS, rounds: 20, train: trainSet });
    const expected = booster.predict(validSet);
    const pending = booster.predictAsync(validSet);
    booster.dispose();
    expect(await pending).toEqual(expected);
  });

  it("early stopping stops at bestIteration + earlyStoppingRounds and keeps only the best rounds", async () => {
    const result = await train({
      params: { ...PARAMS, eta: 0.3, max_depth: 6 },
      rounds: 5000,
      train: trainSet,
      valid: validSet,
      earlyStoppingRounds: 10,
    });
    expect(result.rounds).toBeLessThan(5000);
    expect(result.history).toHaveLength(result.rounds);
    expect(result.history.map((e) => e.round)).toEqual([...Array(result.rounds).keys()]);
    expect(result.bestIteration).toBe(argBest(result.history));
    expect(result.rounds).toBe(result.bestIteration + 11);

    // Sliced: the saved model has exactly the best rounds, and predicts what XGBoost measured at the best round.
    expect(treeCount(result.booster.saveJson())).toBe(result.bestIteration + 1);
    const best = result.history[result.bestIteration]?.valid as number;
    expect(rmse(validSet.labels, result.booster.predict(validSet))).toBeCloseTo(best, 4);
    result.booster.dispose();
  });

  it("early stopping maximises AUC-style metrics", async () => {
    const median = (s: Labelled) => [...s.labels].sort((a, b) => a - b)[s.rows >> 1] as number;
    const binary = (s: Labelled, m: number): Labelled => ({
      ...s,
      labels: s.labels.map((y) => (y > m ? 1 : 0)),
    });
    const m = median(trainSet);
    const result = await train({
      params: { ...PARAMS, objective: "binary:logistic", eval_metric: "auc", eta: 0.5, max_depth: 6 },
      rounds: 2000,
      train: binary(trainSet, m),
      valid: binary(validSet, m),
      earlyStoppingRounds: 10,
    });
    expect(result.rounds).toBeLessThan(2000);
    expect(result.bestIteration).toBe(argBest(result.history, true));
    expect(result.bestIteration).not.toBe(argBest(result.history, false));
    result.booster.dispose();
  });

  it("uses the last metric when eval_metric lists several", async () => {
    const small = regression(300, 4, 3);
    const both = await train({
      params: { ...PARAMS, eval_metric: ["rmse", "mae"] },
      rounds: 5,
      train: small,
      valid: small,
    });
    const maeOnly = await train({
      params: { ...PARAMS, eval_metric: "mae" },
      rounds: 5,
      train: small,
      valid: small,
    });
    expect(both.history).toEqual(maeOnly.history);
    both.booster.dispose();
    maeOnly.booster.dispose();
  });

  it("calls onRound once per round, in order, before the promise resolves", async () => {
    const seen: RoundEvaluation[] = [];
    const result = await train({
      params: PARAMS,
      rounds: 30,
      train: trainSet,
      valid: validSet,
      onRound: (e) => {
        seen.push(e);
      },
    });
    expect(seen.map((e) => e.round)).toEqual([...Array(30).keys()]);
    expect(seen).toEqual(result.history);
    result.booster.dispose();

    const trainOnly: RoundEvaluation[] = [];
    const noValid = await train({
      params: PARAMS,
      rounds: 3,
      train: trainSet,
      onRound: (e) => trainOnly.push(e),
    });
    expect(trainOnly).toHaveLength(3);
    expect(trainOnly.every((e) => !("valid" in e) && Number.isFinite(e.train))).toBe(true);
    noValid.booster.dispose();
  });

  it("aborting from onRound after round 5 rejects with AbortError and stops training", async () => {
    const controller = new AbortController();
    const rounds: number[] = [];
    const promise = train({
      params: PARAMS,
      rounds: 100_000,
      train: trainSet,
      valid: validSet,
      signal: controller.signal,
      onRound: (e) => {
        rounds.push(e.round);
        if (e.round === 5) controller.abort();
      },
    });
    const err = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).name).toBe("AbortError");
    // Stopped between rounds shortly after the abort, not after 100k rounds.
    expect(rounds.length).toBeGreaterThanOrEqual(6);
    expect(rounds.length).toBeLessThan(200);
    expect(rounds).toEqual([...Array(rounds.length).keys()]);
    // Every queued onRound call was made before the rejection; none trickle in afterwards.
    const delivered = rounds.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(rounds).toHaveLength(delivered);

    await expect(
      train({ params: PARAMS, rounds: 10, train: trainSet, signal: AbortSignal.abort() }),
    ).rejects.toMatchObject({ name: "AbortError" });
  });

  it("rejects with the error thrown by onRound and stops training", async () => {
    let calls = 0;
    const boom = new Error("boom");
    await expect(
      train({
        params: PARAMS,
        rounds: 100_000,
        train: trainSet,
        onRound: () => {
          calls++;
          if (calls === 3) throw boom;
        },
      }),
    ).rejects.toBe(boom);
    expect(calls).toBe(3);
  });

  it("reports XGBoost's own error text, prefixed with the C function", async () => {
    await expect(
      train({ params: { ...PARAMS, max_depth: "abc" }, rounds: 2, train: trainSet }),
    ).rejects.toThrow(/^XGBooster\w+: Invalid Parameter format for max_depth expect int but value='abc'$/);
    const badLabels = { ...trainSet, labels: trainSet.labels.slice() };
    badLabels.labels[7] = Number.NaN;
    await expect(train({ params: PARAMS, rounds: 2, train: badLabels })).rejects.toThrow(
      /^XGDMatrixSetFloatInfo: .*Label contains NaN/,
    );
    expect(() => Booster.loadJson("{not a model")).toThrow(/^XGBoosterLoadModelFromBuffer: /);
  });

  it("validates shapes and options in TypeScript, naming the argument", async () => {
    const twelve = regression(12, 4, 4);
    await expect(
      train({ params: PARAMS, rounds: 2, train: { ...twelve, labels: new Float32Array(10) } }),
    ).rejects.toThrow("train.labels length 10 does not match rows 12");
    await expect(train({ params: PARAMS, rounds: 2, train: { ...twelve, rows: 11 } })).rejects.toThrow(
      /train\.data length must equal rows\*cols/,
    );
    await expect(train({ params: PARAMS, rounds: 0, train: twelve })).rejects.toThrow(
      "rounds must be a positive integer",
    );
    await expect(train({ params: PARAMS, rounds: 1.5, train: twelve })).rejects.toThrow(
      "rounds must be a positive integer",
    );
    await expect(train({ params: PARAMS, rounds: 2, train: twelve, earlyStoppingRounds: 5 })).rejects.toThrow(
      /earlyStoppingRounds requires valid/,
    );
    await expect(
      train({ params: PARAMS, rounds: 2, train: twelve, valid: regression(5, 3, 5) }),
    ).rejects.toThrow("valid.cols 3 does not match train.cols 4");
    await expect(train({ params: { ...PARAMS, eta: Number.NaN }, rounds: 2, train: twelve })).rejects.toThrow(
      /params\.eta must be a string or a finite number/,
    );
    await expect(
      train({ params: PARAMS, rounds: 2, train: { ...twelve, data: Array.from(twelve.data) as never } }),
    ).rejects.toThrow("train.data must be a Float32Array");

    const { booster } = await train({ params: PARAMS, rounds: 2, train: twelve });
    expect(() => booster.predict({ data: new Float32Array(7), rows: 2, cols: 4 })).toThrow(
      /matrix\.data length must equal rows\*cols/,
    );
    expect(() => booster.predict({ data: new Float32Array(6), rows: 2, cols: 3 })).toThrow(
      "matrix.cols 3 does not match numFeatures 4",
    );
    expect(booster.predict({ data: new Float32Array(0), rows: 0, cols: 4 })).toHaveLength(0);
    expect(() => booster.setFeatureNames(["a", "b"])).toThrow("names length 2 does not match numFeatures 4");
    expect(() => booster.setFeatureNames(["a", "b", "c", "a"])).toThrow(/names\[3\] duplicates "a"/);
    expect(() => booster.featureScore("bogus" as never)).toThrow(/importanceType must be one of/);
    expect(() => new Booster(Symbol("x") as never, {} as never)).toThrow(/train\(\) or Booster\.loadJson/);
    booster.dispose();
  });

  it("featureScore uses names from setFeatureNames; numFeatures equals cols", async () => {
    const { booster } = await train({ params: PARAMS, rounds: 30, train: trainSet });
    expect(booster.numFeatures()).toBe(trainSet.cols);
    expect(Object.keys(booster.featureScore("weight")).every((k) => /^f[0-3]$/.test(k))).toBe(true);

    const names = ["x0_linear", "x1_square", "noise_a", "noise_b"];
    booster.setFeatureNames(names);
    const gain = booster.featureScore("gain");
    expect(Object.keys(gain).length).toBeGreaterThan(0);
    for (const key of Object.keys(gain)) expect(names).toContain(key);
    // The informative features dominate.
    expect(gain.x0_linear).toBeGreaterThan(gain.noise_a ?? 0);
    expect(gain.x1_square).toBeGreaterThan(gain.noise_b ?? 0);
    for (const type of ["weight", "cover", "total_gain", "total_cover"] as const) {
      expect(Object.keys(booster.featureScore(type)).length).toBeGreaterThan(0);
    }

    // Names travel with the saved model.
    const loaded = Booster.loadJson(booster.saveJson());
    expect(loaded.featureScore("gain")).toEqual(gain);
    loaded.setParam("nthread", 1);
    expect(loaded.predict(validSet)).toEqual(booster.predict(validSet));
    loaded.dispose();
    booster.dispose();
  });

  it("trains gblinear with early stopping (not sliceable: restored from a snapshot)", async () => {
    const result = await train({
      params: {
        booster: "gblinear",
        objective: "reg:squarederror",
        eval_metric: "rmse",
        eta: 0.5,
        nthread: 2,
      },
      rounds: 500,
      train: trainSet,
      valid: validSet,
      earlyStoppingRounds: 5,
    });
    expect(result.bestIteration).toBe(argBest(result.history));
    const best = result.history[result.bestIteration]?.valid as number;
    expect(rmse(validSet.labels, result.booster.predict(validSet))).toBeCloseTo(best, 4);
    result.booster.dispose();
  });

  it("keeps the event loop responsive while training", async () => {
    const big = regression(40_000, 8, 6);
    const gaps: number[] = [];
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      gaps.push(now - last);
      last = now;
    }, 10);
    const started = performance.now();
    try {
      const { booster } = await train({
        params: { ...PARAMS, max_depth: 8, eta: 0.05 },
        rounds: 300,
        train: big,
      });
      booster.dispose();
    } finally {
      clearInterval(timer);
    }
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThan(1000); // long enough for the measurement to mean something
    expect(Math.max(...gaps)).toBeLessThan(200);
    expect(gaps.length).toBeGreaterThan(elapsed / 10 / 3);
  });

  it("does not leak across 1,000 train + predict + dispose cycles", async () => {
    const tiny = regression(1000, 4, 7);
    const params = PARAMS;
    const cycle = async () => {
      const { booster } = await train({ params, rounds: 3, train: tiny, valid: tiny });
      booster.predict(tiny);
      await booster.predictAsync(tiny);
      booster.dispose();
    };
    for (let i = 0; i < 100; i++) await cycle();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 1000; i++) await cycle();
    (globalThis as { gc?: () => void }).gc?.();
    const growth = process.memoryUsage().rss - before;
    expect(growth).toBeLessThan(30 * 1024 * 1024);
  });
});
