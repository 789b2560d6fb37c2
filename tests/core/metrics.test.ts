import { describe, expect, it } from "vitest";
import { mae, r2, regressionReport, rmse, rmsle, within20Percent } from "../../core/metrics/index.js";

describe("regression metrics", () => {
  const actual = [10, 20, 30, 40];
  const predicted = [12, 18, 33, 40];

  it("computes RMSE, MAE and R² against hand-worked values", () => {
    // errors 2, -2, 3, 0 → squares 4, 4, 9, 0
    expect(rmse(actual, predicted)).toBeCloseTo(Math.sqrt(17 / 4), 12);
    expect(mae(actual, predicted)).toBeCloseTo(7 / 4, 12);
    // mean 25, SS_tot = 225+25+25+225 = 500
    expect(r2(actual, predicted)).toBeCloseTo(1 - 17 / 500, 12);
  });

  it("computes RMSLE, counting negative predictions as zero demand", () => {
    const expected = Math.sqrt(
      ((Math.log1p(0) - Math.log1p(3)) ** 2 + (Math.log1p(5) - Math.log1p(5)) ** 2) / 2,
    );
    expect(rmsle([3, 5], [-4, 5])).toBeCloseTo(expected, 12);
    expect(() => rmsle([-1], [1])).toThrow(/non-negative/);
  });

  it("counts predictions within ±20% of the actual count", () => {
    // 12 vs 10: 20% → hit; 18 vs 20: 10% → hit; 33 vs 30: 10% → hit; 40 vs 40 → hit
    expect(within20Percent(actual, predicted)).toBe(1);
    expect(within20Percent([100, 100, 0, 0], [121, 80, 0.5, 2])).toBe(0.5);
  });

  it("rejects empty and mismatched inputs instead of returning NaN", () => {
    expect(() => rmse([], [])).toThrow(/at least one/);
    expect(() => mae([1, 2], [1])).toThrow(/2 values but predicted has 1/);
    expect(() => r2([3, 3], [3, 3])).toThrow(/undefined/);
  });

  it("bundles all metrics in one report", () => {
    const report = regressionReport(actual, predicted);
    expect(report).toMatchObject({ n: 4, within20: 1 });
    expect(report.rmse).toBeCloseTo(rmse(actual, predicted), 12);
  });
});
