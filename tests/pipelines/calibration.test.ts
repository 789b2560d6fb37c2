import { beforeAll, describe, expect, it } from "vitest";
import { FEATURE_NAMES } from "../../core/features/index.js";
import { Booster } from "../../core/xgboost/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import {
  candidateSpecs,
  type FinalModel,
  finalizeWinner,
  fitCalibration,
  fitCandidate,
  HOUR_BAND_NAMES,
  hourBand,
  IntervalLevelError,
  intervalBounds,
  intervalRowsOf,
  type LabelledMatrix,
  type PreparedData,
  prepareData,
} from "../../pipelines/training/candidates.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

const HR = FEATURE_NAMES.indexOf("hr");

/** Coverage and mean width per hour band of [lower, upper] on `m`'s labels. */
function byBand(m: LabelledMatrix, lower: ArrayLike<number>, upper: ArrayLike<number>) {
  const bands = HOUR_BAND_NAMES.map(() => ({ covered: 0, width: 0, rows: 0 }));
  let covered = 0;
  for (let r = 0; r < m.rows; r++) {
    const y = m.labels[r] as number;
    const hit = y >= (lower[r] as number) && y <= (upper[r] as number);
    const band = bands[hourBand(m.data[r * m.cols + HR] as number)] as (typeof bands)[number];
    band.covered += hit ? 1 : 0;
    band.width += (upper[r] as number) - (lower[r] as number);
    band.rows++;
    covered += hit ? 1 : 0;
  }
  return {
    coverage: covered / m.rows,
    bands: bands.map((b) => ({ coverage: b.covered / b.rows, width: b.width / b.rows })),
  };
}

/**
 * What 90% intervals must do on held-out hours: about 90% overall, every hour band within [70%, 97%]
 * (neither starved at the peaks nor wasted at night), and not one width. Measured on this split: 84.7%
 * overall, bands 71.7–89.8%; a fixed band of the pooled quantile covers 99.7% at night and 64.5% at
 * 16–19 h. The model is fitted on six months only, so the bound is looser than the benchmark's goal.
 */
function holds(result: ReturnType<typeof byBand>): boolean {
  const widths = result.bands.map((b) => b.width);
  return (
    result.coverage >= 0.8 &&
    result.coverage <= 0.97 &&
    result.bands.every((b) => b.coverage >= 0.7 && b.coverage <= 0.97) &&
    Math.max(...widths) > 3 * Math.min(...widths)
  );
}

// A small split of 2011 only (train Jan–Jun, calibration = validation Jul–Aug, holdout Sep–Dec 2011):
// not the benchmark's window (split T test, Sep–Dec 2012).
let data: PreparedData;
let final: FinalModel;
let holdout: Float32Array;
beforeAll(async () => {
  data = prepareData(await loadHourly(HOUR_CSV), { until: "2012-01-01" });
  const [spec] = candidateSpecs({ families: ["gbtree"], trials: 0 });
  if (!spec) throw new Error("no gbtree baseline");
  const winner = await fitCandidate(spec, data, { nthread: 2 });
  final = await finalizeWinner(winner, data, { nthread: 2 });
  const booster = Booster.loadJson(final.nativeJson);
  holdout = booster.predict(data.test);
  booster.dispose();
}, 180_000);

describe("conformal intervals calibrated on the validation window", () => {
  it("are calibrated on the validation rows, not on the holdout", () => {
    expect(data.windows.test).toContain("2011-09-01");
    expect(final.calibration.window).toContain(data.windows.valid as string);
    expect(final.calibration.dated.pooled).toHaveLength(data.valid.rows);
    expect(final.calibration.undated.pooled).toHaveLength(data.validWithoutDate.rows);
  });

  it("hold 90% coverage on the 2011 holdout in every hour band, with widths that follow the hour", () => {
    const { lower, upper } = intervalBounds(final.calibration, intervalRowsOf(data.test, true), holdout, 0.9);
    const result = byBand(data.test, lower, upper);
    expect(result.coverage).toBeGreaterThanOrEqual(0.8);
    expect(result.coverage).toBeLessThanOrEqual(0.97);
    for (const band of result.bands) {
      expect(band.coverage).toBeGreaterThanOrEqual(0.7);
      expect(band.coverage).toBeLessThanOrEqual(0.97);
    }
    const night = result.bands[0]?.width as number;
    const evening = result.bands[3]?.width as number;
    expect(evening).toBeGreaterThan(3 * night);
    expect(holds(result)).toBe(true);
    for (let i = 0; i < data.test.rows; i++) expect(lower[i]).toBeGreaterThanOrEqual(0);
  });

  it("a fixed band of the same pooled quantile would fail the same check", () => {
    const pooled = final.calibration.dated.pooled;
    const q = pooled[Math.ceil((pooled.length + 1) * 0.9) - 1] as number;
    const lower = Array.from(holdout, (p) => Math.max(0, p - q));
    const upper = Array.from(holdout, (p) => p + q);
    const fixed = byBand(data.test, lower, upper);
    expect(holds(fixed)).toBe(false);
    // On coverage alone, not only on width: starved at the evening peak, wasted at night.
    expect(fixed.bands[3]?.coverage).toBeLessThan(0.7);
    expect(fixed.bands[0]?.coverage).toBeGreaterThan(0.97);
  });

  it("are nested: a higher level is never narrower", () => {
    const rows = intervalRowsOf(data.test, true);
    const at80 = intervalBounds(final.calibration, rows, holdout, 0.8);
    const at95 = intervalBounds(final.calibration, rows, holdout, 0.95);
    for (let i = 0; i < data.test.rows; i++) {
      expect(at95.upper[i]).toBeGreaterThanOrEqual(at80.upper[i] as number);
      expect(at95.lower[i]).toBeLessThanOrEqual(at80.lower[i] as number);
    }
  });

  it("use the undated scores for rows without a date", () => {
    const dated = intervalBounds(final.calibration, intervalRowsOf(data.test, true), holdout, 0.9);
    const undated = intervalBounds(final.calibration, intervalRowsOf(data.test, false), holdout, 0.9);
    let differ = 0;
    for (let i = 0; i < data.test.rows; i++) if (dated.upper[i] !== undated.upper[i]) differ++;
    expect(differ).toBeGreaterThan(0);
  });
});

describe("intervalBounds on hand-made scores", () => {
  // 10 validation hours at 17:00 on a working day with residuals 1..10, and 50 at 03:00 with residual 2.
  const rows = 60;
  const cols = FEATURE_NAMES.length;
  const matrix: LabelledMatrix = {
    data: new Float32Array(rows * cols),
    rows,
    cols,
    labels: new Float32Array(rows),
  };
  const predictions = new Float32Array(rows).fill(100);
  for (let r = 0; r < rows; r++) {
    const evening = r < 10;
    matrix.data[r * cols + HR] = evening ? 17 : 3;
    matrix.data[r * cols + FEATURE_NAMES.indexOf("workingday")] = 1;
    matrix.labels[r] = 100 + (evening ? r + 1 : 2);
  }
  const calibration = fitCalibration("hand-made", { matrix, predictions }, { matrix, predictions });
  const one = (hr: number) => ({ length: 1, hr: [hr], workingday: [1], day: [15_000] });

  it("takes a group's own conformal quantile when it has enough scores", () => {
    // 50 scores of 2 at 03:00: the quantile is 2 at any level up to 50/51.
    const { lower, upper } = intervalBounds(calibration, one(3), [100], 0.9);
    expect([lower[0], upper[0]]).toEqual([98, 102]);
  });

  it("falls back to the pooled quantile where a group has too few scores", () => {
    // 10 scores at 17:00 (< MIN_GROUP_SCORES): the pooled 60 scores (1, 51 × 2, 3..10), ceil(61 × 0.9) = 55th = 5.
    const { upper } = intervalBounds(calibration, one(17), [100], 0.9);
    expect(upper[0]).toBe(105);
  });

  it("refuses a level outside (0, 1) or beyond what the scores support", () => {
    expect(() => intervalBounds(calibration, one(3), [100], 1)).toThrow(IntervalLevelError);
    expect(() => intervalBounds(calibration, one(3), [100], 0)).toThrow(IntervalLevelError);
    expect(() => intervalBounds(calibration, one(3), [100], 0.999)).toThrow(/highest level/);
  });

  it("never goes below 0", () => {
    const { lower } = intervalBounds(calibration, one(17), [2], 0.9);
    expect(lower[0]).toBe(0);
  });
});
