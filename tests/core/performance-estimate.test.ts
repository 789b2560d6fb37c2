/**
 * Direct loss estimation (core/drift/performance-estimate.ts): the estimated error must follow the
 * inputs — hours whose true error is larger get a larger estimate — and the estimated RMSE of a
 * window must be close to its realised RMSE when the window is like the fitting data.
 */
import { describe, expect, it } from "vitest";
import {
  estimateAbsoluteErrors,
  estimatePerformance,
  fitPerformanceEstimator,
  type LossInputs,
} from "../../core/drift/index.js";

function seeded(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

const normal = (random: () => number) =>
  Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());

/**
 * Hours whose error scale depends on the inputs: a "rush" feature (0/1) multiplies the noise by 6,
 * and the noise also grows with the prediction, as counts do.
 */
function synthetic(rows: number, seed: number, rushShare = 0.3) {
  const random = seeded(seed);
  const names = ["rush", "temp"];
  const features = new Float32Array(rows * 2);
  const predictions = new Float64Array(rows);
  const actuals = new Float64Array(rows);
  const scale = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    const rush = random() < rushShare ? 1 : 0;
    const temp = random();
    features[i * 2] = rush;
    features[i * 2 + 1] = temp;
    predictions[i] = 50 + 200 * temp;
    scale[i] = (rush ? 60 : 10) * (0.5 + temp);
    actuals[i] = (predictions[i] as number) + (scale[i] as number) * normal(random);
  }
  return { x: { names, features, predictions } as LossInputs, actuals, scale };
}

const realisedRmse = (p: ArrayLike<number>, a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < p.length; i++) s += ((p[i] as number) - (a[i] as number)) ** 2;
  return Math.sqrt(s / p.length);
};

describe("direct loss estimation", () => {
  const fit = synthetic(2000, 1);
  const estimator = fitPerformanceEstimator(fit.x, fit.actuals, "synthetic");

  it("estimates a larger error on the hours whose true error is larger", () => {
    const live = synthetic(1000, 2);
    const est = estimateAbsoluteErrors(estimator, live.x);
    const mean = (pick: (i: number) => boolean) => {
      let s = 0;
      let n = 0;
      for (let i = 0; i < est.length; i++) {
        if (pick(i)) {
          s += est[i] as number;
          n++;
        }
      }
      return s / n;
    };
    const rush = mean((i) => live.x.features[i * 2] === 1);
    const calm = mean((i) => live.x.features[i * 2] === 0);
    expect(rush).toBeGreaterThan(3 * calm);
    // The estimate follows the true scale hour by hour, not only the rush flag.
    let agree = 0;
    let pairs = 0;
    for (let i = 0; i + 1 < est.length; i += 2) {
      if (live.scale[i] === live.scale[i + 1]) continue;
      pairs++;
      if (
        (live.scale[i] as number) > (live.scale[i + 1] as number) ===
        (est[i] as number) > (est[i + 1] as number)
      )
        agree++;
    }
    expect(agree / pairs).toBeGreaterThan(0.75);
  });

  it("estimates a window's RMSE from its inputs alone, and a riskier window higher", () => {
    const like = synthetic(1000, 3);
    const risky = synthetic(1000, 4, 0.8);
    const a = estimatePerformance(estimator, like.x);
    const b = estimatePerformance(estimator, risky.x);
    const trueA = realisedRmse(like.x.predictions, like.actuals);
    const trueB = realisedRmse(risky.x.predictions, risky.actuals);
    expect(Math.abs(a.rmse - trueA) / trueA).toBeLessThan(0.15);
    expect(Math.abs(b.rmse - trueB) / trueB).toBeLessThan(0.15);
    expect(b.rmse).toBeGreaterThan(1.3 * a.rmse);
    expect(a.rows).toBe(1000);
  });

  it("refuses inputs that do not match the estimator, naming what differs", () => {
    const live = synthetic(10, 5);
    expect(() => estimateAbsoluteErrors(estimator, { ...live.x, names: ["temp", "rush"] })).toThrow(
      /inputs temp, rush differ/,
    );
    expect(() => fitPerformanceEstimator(fit.x, fit.actuals.subarray(0, 10), "short")).toThrow(
      /actuals has 10 values/,
    );
    const bad = Float64Array.from(fit.x.predictions);
    bad[3] = Number.NaN;
    expect(() => fitPerformanceEstimator({ ...fit.x, predictions: bad }, fit.actuals, "nan")).toThrow(
      /predictions\[3\]/,
    );
  });

  it("survives a JSON round trip, as it is stored with the model version", () => {
    const live = synthetic(200, 6);
    const copy = JSON.parse(JSON.stringify(estimator));
    expect(estimatePerformance(copy, live.x)).toEqual(estimatePerformance(estimator, live.x));
  });

  it("records its own estimate over the rows it was fitted on, the baseline live estimates are compared with", () => {
    // Exactly what estimatePerformance says of those rows: the estimated_rmse rule divides one by the
    // other, so any bias of the loss model (shrinkage towards the mean error) is in both.
    expect(estimator.fittedOn.estimatedRmse).toBeCloseTo(estimatePerformance(estimator, fit.x).rmse, 9);
    const realised = realisedRmse(fit.x.predictions, fit.actuals);
    expect(estimator.fittedOn.rmse).toBeCloseTo(realised, 9);
    // Close to the realised RMSE there, but not the same figure (it is an estimate).
    expect(Math.abs((estimator.fittedOn.estimatedRmse as number) - realised) / realised).toBeLessThan(0.15);
    expect(estimator.fittedOn.estimatedRmse).not.toBe(realised);
  });
});
