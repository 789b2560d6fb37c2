/**
 * Prediction intervals by split conformal prediction, Mondrian by (working day × hour band).
 *
 * The scores are the absolute residuals of a model fitted on the training rows only, on the validation
 * rows it was not fitted on (never the test window); each group has its own quantile, so 3 am and 5 pm
 * get bands of very different widths. A scale growing with the prediction (score = |r| / scale(ŷ)) is
 * supported but off: on split T test it lost 3 points of coverage at 90% (86.5% with sqrt(ŷ + 10), 89.5%
 * without), the validation summer's errors relative to ŷ being smaller than the autumn's.
 * For a level `a`, a group's half-width factor is its ceil((n+1)·a)-th smallest
 * score (the finite-sample conformal quantile); a group with too few scores for that level uses the
 * pooled scores of every group. The bands are clipped at 0 (rentals are never negative), which can only
 * add coverage.
 */
import { FEATURE_NAMES } from "../../core/features/index.js";
import type { LabelledMatrix } from "./types.js";

/** Start hours of the bands: night, morning peak, midday, evening peak, late evening. */
export const HOUR_BANDS: readonly number[] = [0, 6, 10, 16, 20];
export const HOUR_BAND_NAMES: readonly string[] = ["00-05", "06-09", "10-15", "16-19", "20-23"];
/** A group with fewer scores than this uses the pooled quantile. */
export const MIN_GROUP_SCORES = 40;
/** scale(ŷ) = (max(ŷ, 0) + SCALE_OFFSET) ^ SCALE_POWER; power 0 is the plain absolute residual. */
export const SCALE_OFFSET = 1;

export interface CalibrationScores {
  /** Every score, ascending. */
  pooled: number[];
  /** Scores by group key (`groupKey`), ascending. */
  groups: Record<string, number[]>;
}

/** Stored in the model card (and as the run's calibration.json): everything serving needs for a band. */
export interface IntervalCalibration {
  method: "split_conformal_mondrian";
  /** How a score is computed from a residual; serving inverts it. */
  score: "abs_residual_over_scale";
  /** scale(ŷ) = (max(ŷ, 0) + scaleOffset) ^ scalePower. */
  scaleOffset: number;
  scalePower: number;
  hourBands: number[];
  minGroupScores: number;
  /** The rows the scores come from, e.g. "valid 2012-07-01..2012-08-31 (1488 hours)". */
  window: string;
  /** Scores of rows predicted with their date, and with the date unknown (old clients send none). */
  dated: CalibrationScores;
  undated: CalibrationScores;
}

export function hourBand(hr: number): number {
  let band = 0;
  for (let b = 0; b < HOUR_BANDS.length; b++) if (hr >= (HOUR_BANDS[b] as number)) band = b;
  return band;
}

export function groupKey(workingday: number, hr: number): string {
  return `${workingday === 1 ? 1 : 0}:${hourBand(hr)}`;
}

export const SCALE_POWER = 0;

function scaleOf(prediction: number, offset: number, power: number): number {
  return (Math.max(prediction, 0) + offset) ** power;
}

const HR = FEATURE_NAMES.indexOf("hr");
const WORKINGDAY = FEATURE_NAMES.indexOf("workingday");

/** Keeps 4 significant decimals: the card stays small and the quantiles do not move. */
const rounded = (x: number) => Math.round(x * 1e4) / 1e4;

export function calibrationScores(
  valid: LabelledMatrix,
  predictions: ArrayLike<number>,
  offset = SCALE_OFFSET,
  power = SCALE_POWER,
): CalibrationScores {
  const groups: Record<string, number[]> = {};
  const pooled: number[] = [];
  for (let r = 0; r < valid.rows; r++) {
    const y = valid.labels[r] as number;
    const p = predictions[r] as number;
    const score = rounded(Math.abs(y - p) / scaleOf(p, offset, power));
    const key = groupKey(
      valid.data[r * valid.cols + WORKINGDAY] as number,
      valid.data[r * valid.cols + HR] as number,
    );
    const group = groups[key] ?? [];
    groups[key] = group;
    group.push(score);
    pooled.push(score);
  }
  const ascending = (a: number, b: number) => a - b;
  pooled.sort(ascending);
  for (const scores of Object.values(groups)) scores.sort(ascending);
  return { pooled, groups };
}

export function fitCalibration(
  window: string,
  dated: { matrix: LabelledMatrix; predictions: ArrayLike<number> },
  undated: { matrix: LabelledMatrix; predictions: ArrayLike<number> },
  scale: { offset: number; power: number } = { offset: SCALE_OFFSET, power: SCALE_POWER },
): IntervalCalibration {
  return {
    method: "split_conformal_mondrian",
    score: "abs_residual_over_scale",
    scaleOffset: scale.offset,
    scalePower: scale.power,
    hourBands: [...HOUR_BANDS],
    minGroupScores: MIN_GROUP_SCORES,
    window,
    dated: calibrationScores(dated.matrix, dated.predictions, scale.offset, scale.power),
    undated: calibrationScores(undated.matrix, undated.predictions, scale.offset, scale.power),
  };
}

/** Why a level cannot be served: not in (0, 1), or too high for the number of calibration scores. */
export class IntervalLevelError extends Error {}

export function checkLevel(level: number): void {
  if (!(Number.isFinite(level) && level > 0 && level < 1)) {
    throw new IntervalLevelError(`must be a number strictly between 0 and 1 (e.g. 0.9), not ${level}`);
  }
}

/** The conformal quantile of ascending `scores` at `level`, or undefined when there are too few. */
function conformalQuantile(scores: readonly number[], level: number): number | undefined {
  const k = Math.ceil((scores.length + 1) * level);
  return k <= scores.length ? scores[k - 1] : undefined;
}

/** Per-group factors for one level (computed once per request, not once per row). */
function factors(scores: CalibrationScores, level: number, minGroup: number) {
  const pooled = conformalQuantile(scores.pooled, level);
  if (pooled === undefined) {
    throw new IntervalLevelError(
      `${level} needs more than the ${scores.pooled.length} calibration scores this model has; ` +
        `the highest level it can serve is ${(scores.pooled.length / (scores.pooled.length + 1)).toFixed(4)}`,
    );
  }
  const byGroup = new Map<string, number>();
  for (const [key, group] of Object.entries(scores.groups)) {
    const q = group.length >= minGroup ? conformalQuantile(group, level) : undefined;
    byGroup.set(key, q ?? pooled);
  }
  return (key: string) => byGroup.get(key) ?? pooled;
}

export interface IntervalRows {
  readonly length: number;
  readonly hr: ArrayLike<number>;
  readonly workingday: ArrayLike<number>;
  /** The date of each row (day number), NaN or absent when unknown: such rows use the undated scores. */
  readonly day?: ArrayLike<number>;
}

/** Lower and upper bounds at `level` around `predictions` (one per row). */
export function intervalBounds(
  calibration: IntervalCalibration,
  rows: IntervalRows,
  predictions: ArrayLike<number>,
  level: number,
): { lower: Float64Array; upper: Float64Array } {
  checkLevel(level);
  const dated = factors(calibration.dated, level, calibration.minGroupScores);
  const undated = factors(calibration.undated, level, calibration.minGroupScores);
  const lower = new Float64Array(rows.length);
  const upper = new Float64Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const day = rows.day?.[i];
    const factor = day === undefined || Number.isNaN(day) ? undated : dated;
    const p = predictions[i] as number;
    const half =
      factor(groupKey(rows.workingday[i] as number, rows.hr[i] as number)) *
      scaleOf(p, calibration.scaleOffset, calibration.scalePower);
    lower[i] = Math.max(0, p - half);
    upper[i] = p + half;
  }
  return { lower, upper };
}

/** The hr, workingday and (when the date features are known) day columns of a feature matrix. */
export function intervalRowsOf(
  m: { data: Float32Array; rows: number; cols: number },
  dated: boolean,
): IntervalRows {
  const hr = new Float64Array(m.rows);
  const workingday = new Float64Array(m.rows);
  for (let r = 0; r < m.rows; r++) {
    hr[r] = m.data[r * m.cols + HR] as number;
    workingday[r] = m.data[r * m.cols + WORKINGDAY] as number;
  }
  // Any number marks a known date; NaN an unknown one.
  return { length: m.rows, hr, workingday, day: new Float64Array(m.rows).fill(dated ? 0 : Number.NaN) };
}
