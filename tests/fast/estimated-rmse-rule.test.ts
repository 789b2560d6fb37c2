/**
 * The estimated_rmse rule (services/monitor/checks.ts): its threshold is a multiple of the estimator's
 * own estimate over its test window (so the loss model's bias cancels), and a violation needs the
 * estimate above it over this window and over the window a day earlier.
 */
import { describe, expect, it } from "vitest";
import type { PerformanceEstimator } from "../../core/drift/index.js";
import {
  DEFAULT_MONITOR_POLICY,
  estimatedRmseThreshold,
  estimatedRmseViolated,
} from "../../services/monitor/checks.js";

function estimatorWith(estimatedRmse: number | undefined): PerformanceEstimator {
  return {
    kind: "direct-loss-estimation",
    version: 1,
    inputs: ["temp", "prediction"],
    base: 10,
    learningRate: 0.1,
    trees: [],
    kappa: 1.2,
    fittedOn: {
      rows: 336,
      rmse: 80,
      mae: 50,
      description: "test window",
      ...(estimatedRmse !== undefined ? { estimatedRmse } : {}),
    },
  };
}

const est = (rmse: number, rows = 168) => ({ rmse, rows, mae: rmse / 1.4 });
const policy = { minDriftRows: 48, estimatedRmsePersistHours: 24 };

describe("estimated_rmse threshold", () => {
  it("is the factor times the estimator's own estimate over its test window, not the realised test RMSE", () => {
    // Realised test RMSE 80, the estimator's own estimate there 60: a live estimate of 80 is 1.33 × the
    // like-for-like baseline, and would have been only 1.0 × the realised one.
    const t = estimatedRmseThreshold(1.25, estimatorWith(60), 80);
    expect(t).toEqual({ threshold: 75, baseline: 60, basis: "its estimate over the test window" });
  });

  it("falls back to the test RMSE for an estimator stored before it recorded its own estimate", () => {
    expect(estimatedRmseThreshold(1.25, estimatorWith(undefined), 80)).toEqual({
      threshold: 100,
      baseline: 80,
      basis: "test RMSE",
    });
    expect(estimatedRmseThreshold(1.25, undefined, 80)?.threshold).toBe(100);
    expect(estimatedRmseThreshold(1.25, estimatorWith(0), 80)?.basis).toBe("test RMSE");
    expect(estimatedRmseThreshold(1.25, undefined, undefined)).toBeUndefined();
  });

  it("refuses a factor that is not a positive number, naming the field", () => {
    expect(() => estimatedRmseThreshold(0, estimatorWith(60), 80)).toThrow(/estimatedRmseFactor/);
    expect(() => estimatedRmseThreshold(Number.NaN, estimatorWith(60), 80)).toThrow(/estimatedRmseFactor/);
  });

  it("is what the server runs by default: 1.25 × the baseline, over two windows a day apart", () => {
    expect(DEFAULT_MONITOR_POLICY.estimatedRmseFactor).toBe(1.25);
    expect(DEFAULT_MONITOR_POLICY.estimatedRmsePersistHours).toBe(24);
    expect(DEFAULT_MONITOR_POLICY.importanceWeighted).toBe(true);
  });
});

describe("estimated_rmse violation", () => {
  it("needs this window and the one a day earlier above the threshold", () => {
    expect(estimatedRmseViolated(est(80), est(76), 75, policy, true)).toBe(true);
    // One window above, the previous one not: one unusual day, not a shift.
    expect(estimatedRmseViolated(est(80), est(70), 75, policy, true)).toBe(false);
    // No earlier window served by this version (it was promoted today).
    expect(estimatedRmseViolated(est(80), undefined, 75, policy, true)).toBe(false);
    // The earlier window above, this one not.
    expect(estimatedRmseViolated(est(74), est(90), 75, policy, true)).toBe(false);
    // Equal is not above.
    expect(estimatedRmseViolated(est(75), est(90), 75, policy, true)).toBe(false);
  });

  it("judges this window alone without persistence, or before the earlier one is looked up", () => {
    expect(
      estimatedRmseViolated(est(80), undefined, 75, { ...policy, estimatedRmsePersistHours: 0 }, true),
    ).toBe(true);
    expect(estimatedRmseViolated(est(80), undefined, 75, policy, false)).toBe(true);
    expect(estimatedRmseViolated(est(70), undefined, 75, policy, false)).toBe(false);
  });

  it("ignores a window with fewer served hours than a drift report needs", () => {
    expect(estimatedRmseViolated(est(200, 47), est(200), 75, policy, true)).toBe(false);
    expect(estimatedRmseViolated(est(200), est(200, 47), 75, policy, true)).toBe(false);
  });
});
