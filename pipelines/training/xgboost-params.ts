/**
 * How a candidate spec becomes XGBoost parameters: the pipeline's own parameters taken out, the
 * machine's thread count and a base score put in.
 */
import type { CandidateSpec } from "./types.js";

/**
 * Share of training rows whose date features are hidden (NaN) during training, so the trees learn
 * where an hour without a date belongs. Measured on split T (docs/modeling.md): with 0 the model is
 * lost without a date (test RMSE ≈ 70); with half of the rows hidden the default search reaches
 * 63.4 with dates and 66.0 without.
 */
export const DATE_MASK_SHARE = 0.5;
/** Pipeline parameters carried in CandidateSpec.params but not passed to XGBoost. */
export const PIPELINE_PARAMS: readonly string[] = ["date_mask_share"];

export function specSeed(spec: CandidateSpec): number {
  const seed = Number(spec.params.seed ?? 0);
  return Number.isFinite(seed) ? seed : 0;
}

export function dateMaskShare(spec: CandidateSpec): number {
  const share = Number(spec.params.date_mask_share ?? DATE_MASK_SHARE);
  if (!(share >= 0 && share <= 1)) throw new RangeError(`date_mask_share must be in [0, 1], got ${share}`);
  return share;
}

function mean(values: Float32Array): number {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/**
 * What XGBoost receives for a spec: its params without the pipeline's own, the machine's thread
 * count, and (unless the spec sets one) base_score = mean label of the rows being fitted. XGBoost 1.7
 * starts from 0.5 otherwise, which a random forest (one round) or a Poisson model (one bounded Newton
 * step per round) never recovers from.
 */
export function xgboostParams(
  spec: CandidateSpec,
  labels: Float32Array,
  nthread: number,
): Record<string, string | number> {
  const params: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(spec.params)) if (!PIPELINE_PARAMS.includes(k)) params[k] = v;
  params.base_score ??= Math.max(1e-3, mean(labels));
  params.nthread = nthread;
  return params;
}

/** Threads when the caller does not say: fixed, because results are reproducible only for a fixed count. */
export const DEFAULT_NTHREAD = 2;

export function checkNthread(nthread: number | undefined): number {
  const n = nthread ?? DEFAULT_NTHREAD;
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`nthread must be a non-negative integer, got ${n}`);
  return n;
}
