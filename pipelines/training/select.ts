/**
 * Choosing among trained candidates and turning the winner into a servable model.
 *
 * This module also holds the types shared with candidates.ts and the few primitives both need (how a
 * spec becomes XGBoost parameters, how dates are masked), so the dependency runs one way:
 * candidates.ts → select.ts. Import the public API from candidates.ts, which re-exports all of it.
 */
import { DATE_FEATURE_NAMES, FEATURE_NAMES, FEATURE_SCHEMA_VERSION } from "../../core/features/index.js";
import { type RegressionReport, regressionReport } from "../../core/metrics/index.js";
import { OnnxModel, xgboostToOnnx } from "../../core/onnx/index.js";
import { type Booster, type DenseMatrix, type RoundEvaluation, train } from "../../core/xgboost/index.js";
import { seededRandom } from "./splits.js";

// ---------------------------------------------------------------------------------------------------
// Types

export type Family = "gbtree" | "random_forest" | "linear";
export type ObjectiveName = "squared_error" | "poisson" | "tweedie";

export interface CandidateSpec {
  /** e.g. "gbtree#0" (each family's baseline comes first). */
  id: string;
  family: Family;
  objective: ObjectiveName;
  /**
   * XGBoost parameters (booster, objective, hyperparameters, seed), plus the pipeline's own
   * `date_mask_share` (see DATE_MASK_SHARE), which is not passed to XGBoost. `nthread` is not here:
   * it belongs to the machine (hooks.nthread), not to the model.
   */
  params: Record<string, string | number>;
}

export type LabelledMatrix = DenseMatrix & { labels: Float32Array };

export interface PreparedData {
  /** Training rows with their dates (the date mask is applied per candidate, from its seed). */
  train: LabelledMatrix;
  /** Validation rows with their dates. */
  valid: LabelledMatrix;
  /** The same validation rows with the date features unknown (NaN), as an old REST client sends them. */
  validWithoutDate: LabelledMatrix;
  /** Test rows with their dates: evaluated once, by finalizeWinner; never used for a choice. */
  test: LabelledMatrix;
  testWithoutDate: LabelledMatrix;
  /** The old stack's random 80/20 split of the same window (comparison only). */
  splitA: { train: LabelledMatrix; test: LabelledMatrix };
  /** train, valid, test, split_a_train, split_a_test */
  rows: Record<string, number>;
  fingerprint: string;
  /** train, valid, test, fitted_on, split_a: human-readable descriptions of the windows. */
  windows: Record<string, string>;
  featureNames: string[];
}

export interface CandidateResult {
  spec: CandidateSpec;
  /** Rounds that early stopping kept (1 for a random forest). */
  bestRounds: number;
  /**
   * On the validation rows twice over, with and without their dates: the model serves clients that
   * send a timestamp and old clients that do not, and must be good for both. This is what early
   * stopping watched and what chooseWinner compares.
   */
  valid: RegressionReport;
  validWithDate: RegressionReport;
  validWithoutDate: RegressionReport;
  history: RoundEvaluation[];
  seconds: number;
}

export interface ReferenceSample {
  featureNames: string[];
  rows: number;
  /** One array per feature (raw fields first, then the derived features), `rows` values each. */
  columns: Record<string, number[]>;
  predictions: number[];
}

export interface FinalModel {
  nativeJson: string;
  onnx: Uint8Array;
  test: RegressionReport;
  testWithoutDate?: RegressionReport;
  splitA: RegressionReport;
  /** Normalised total gain for every feature (sums to 1); for gblinear, |weight| × standard deviation. */
  featureImportance: Record<string, number>;
  rounds: number;
  reference: ReferenceSample;
}

// ---------------------------------------------------------------------------------------------------
// Primitives shared with candidates.ts

/**
 * Share of training rows whose date features are hidden (NaN) during training, so the trees learn
 * where an hour without a date belongs. Measured on split T (docs/modeling.md): with 0 the model is
 * lost without a date (test RMSE ≈ 70); with half of the rows hidden the default search reaches
 * 63.4 with dates and 66.0 without.
 */
export const DATE_MASK_SHARE = 0.5;
/** Pipeline parameters carried in CandidateSpec.params but not passed to XGBoost. */
export const PIPELINE_PARAMS: readonly string[] = ["date_mask_share"];

const DATE_FEATURES: readonly number[] = DATE_FEATURE_NAMES.map((n) => FEATURE_NAMES.indexOf(n));

export function specSeed(spec: CandidateSpec): number {
  const seed = Number(spec.params.seed ?? 0);
  return Number.isFinite(seed) ? seed : 0;
}

export function dateMaskShare(spec: CandidateSpec): number {
  const share = Number(spec.params.date_mask_share ?? DATE_MASK_SHARE);
  if (!(share >= 0 && share <= 1)) throw new RangeError(`date_mask_share must be in [0, 1], got ${share}`);
  return share;
}

/** A copy of `m` with the date features of a seeded random `share` of rows set to NaN. */
export function maskDates(m: LabelledMatrix, share: number, seed: number): LabelledMatrix {
  if (share === 0) return m;
  const data = m.data.slice();
  // A stream of its own, so the mask does not shift when XGBoost's seed is reused elsewhere.
  const random = seededRandom((seed ^ 0x5eed_da7e) >>> 0);
  for (let r = 0; r < m.rows; r++) {
    if (random() < share) for (const f of DATE_FEATURES) data[r * m.cols + f] = Number.NaN;
  }
  return { data, rows: m.rows, cols: m.cols, labels: m.labels };
}

/** The same rows with every date feature NaN. */
export function withoutDates(m: LabelledMatrix): LabelledMatrix {
  const data = m.data.slice();
  for (let r = 0; r < m.rows; r++) for (const f of DATE_FEATURES) data[r * m.cols + f] = Number.NaN;
  return { data, rows: m.rows, cols: m.cols, labels: m.labels };
}

export function concatRows(a: LabelledMatrix, b: LabelledMatrix): LabelledMatrix {
  if (a.cols !== b.cols) throw new RangeError(`cannot stack ${a.cols} and ${b.cols} columns`);
  const data = new Float32Array(a.data.length + b.data.length);
  data.set(a.data);
  data.set(b.data, a.data.length);
  const labels = new Float32Array(a.rows + b.rows);
  labels.set(a.labels);
  labels.set(b.labels, a.rows);
  return { data, rows: a.rows + b.rows, cols: a.cols, labels };
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

// ---------------------------------------------------------------------------------------------------
// Selection

/**
 * The candidate with the lowest validation RMSE (`valid.rmse`: with and without dates); ties go to
 * fewer rounds (a cheaper, less fitted model), then to the earlier spec. The test window plays no part.
 */
export function chooseWinner(results: readonly CandidateResult[]): CandidateResult {
  let best: CandidateResult | undefined;
  for (const r of results) {
    if (!Number.isFinite(r.valid.rmse)) continue;
    if (
      best === undefined ||
      r.valid.rmse < best.valid.rmse ||
      (r.valid.rmse === best.valid.rmse && r.bestRounds < best.bestRounds)
    ) {
      best = r;
    }
  }
  if (best === undefined) throw new Error("chooseWinner: no candidate with a finite validation RMSE");
  return best;
}

// ---------------------------------------------------------------------------------------------------
// Finalisation

/** Maximum |ONNX − native| allowed, relative to max(1, |native|). */
export const ONNX_TOLERANCE = 1e-3;
const REFERENCE_ROWS = 5000;

function normalised(scores: Record<string, number>): Record<string, number> {
  const total = Object.values(scores).reduce((a, b) => a + b, 0);
  return Object.fromEntries(FEATURE_NAMES.map((n) => [n, total > 0 ? (scores[n] ?? 0) / total : 0]));
}

/** total_gain for trees; for gblinear (which has no gain) |weight| × the feature's standard deviation. */
function importanceOf(booster: Booster, nativeJson: string, fitted: LabelledMatrix): Record<string, number> {
  const model = JSON.parse(nativeJson) as {
    learner: { gradient_booster: { name: string; model?: { weights?: number[] } } };
  };
  const gb = model.learner.gradient_booster;
  if (gb.name !== "gblinear") return normalised(booster.featureScore("total_gain"));
  const weights = gb.model?.weights ?? [];
  const scores: Record<string, number> = {};
  FEATURE_NAMES.forEach((name, f) => {
    let n = 0;
    let sum = 0;
    let sq = 0;
    for (let r = 0; r < fitted.rows; r++) {
      const v = fitted.data[r * fitted.cols + f] as number;
      if (Number.isNaN(v)) continue;
      n++;
      sum += v;
      sq += v * v;
    }
    const sd = n > 1 ? Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2)) : 0;
    scores[name] = Math.abs(weights[f] ?? 0) * sd;
  });
  return normalised(scores);
}

function referenceSample(fitted: LabelledMatrix, predictions: Float32Array, seed: number): ReferenceSample {
  const order = Array.from({ length: fitted.rows }, (_, i) => i);
  const random = seededRandom((seed ^ 0x0005_a3b1) >>> 0);
  const take = Math.min(REFERENCE_ROWS, fitted.rows);
  // Partial Fisher–Yates: the first `take` entries are a uniform sample; kept in data order.
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random() * (fitted.rows - i));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const rows = order.slice(0, take).sort((a, b) => a - b);
  const columns: Record<string, number[]> = {};
  FEATURE_NAMES.forEach((name, f) => {
    columns[name] = rows.map((r) => fitted.data[r * fitted.cols + f] as number);
  });
  return {
    featureNames: [...FEATURE_NAMES],
    rows: take,
    columns,
    predictions: rows.map((r) => predictions[r] as number),
  };
}

async function checkOnnxParity(onnx: Uint8Array, booster: Booster, sets: LabelledMatrix[]): Promise<void> {
  const model = await OnnxModel.load(onnx);
  try {
    for (const m of sets) {
      const native = booster.predict(m);
      const exported = await model.predict(m.data, m.rows);
      for (let i = 0; i < m.rows; i++) {
        const n = native[i] as number;
        const diff = Math.abs((exported[i] as number) - n);
        if (!(diff <= ONNX_TOLERANCE * Math.max(1, Math.abs(n)))) {
          throw new Error(
            `ONNX export disagrees with the native model on test row ${i}: ${exported[i]} vs ${n} (|diff| ${diff})`,
          );
        }
      }
    }
  } finally {
    await model.release();
  }
}

/**
 * Refits the winner on train+valid for its bestRounds (dates masked as in its search), evaluates the
 * test window once (with and without dates), fits split A with the same params and rounds for
 * comparison, exports ONNX and checks it against the native model on the test rows.
 */
export async function finalizeWinner(
  winner: CandidateResult,
  data: PreparedData,
  hooks: { signal?: AbortSignal; nthread?: number } = {},
): Promise<FinalModel> {
  const { spec, bestRounds: rounds } = winner;
  const nthread = checkNthread(hooks.nthread);
  const seed = specSeed(spec);
  const share = dateMaskShare(spec);
  const signal = hooks.signal ? { signal: hooks.signal } : {};

  const fitted = concatRows(data.train, data.valid);
  const refitSet = maskDates(fitted, share, seed);
  const final = await train({
    params: xgboostParams(spec, refitSet.labels, nthread),
    rounds,
    train: refitSet,
    ...signal,
  });
  const booster = final.booster;
  try {
    booster.setFeatureNames([...FEATURE_NAMES]);
    const test = regressionReport(data.test.labels, booster.predict(data.test));
    const testWithoutDate = regressionReport(
      data.testWithoutDate.labels,
      booster.predict(data.testWithoutDate),
    );

    const aTrain = maskDates(data.splitA.train, share, seed);
    const aModel = await train({
      params: xgboostParams(spec, aTrain.labels, nthread),
      rounds,
      train: aTrain,
      ...signal,
    });
    let splitA: RegressionReport;
    try {
      splitA = regressionReport(data.splitA.test.labels, aModel.booster.predict(data.splitA.test));
    } finally {
      aModel.booster.dispose();
    }

    const nativeJson = booster.saveJson();
    const onnx = xgboostToOnnx(nativeJson, {
      featureNames: [...FEATURE_NAMES],
      metadata: {
        feature_schema_version: String(FEATURE_SCHEMA_VERSION),
        data_fingerprint: data.fingerprint,
      },
    });
    await checkOnnxParity(onnx, booster, [data.test, data.testWithoutDate]);
    const featureImportance = importanceOf(booster, nativeJson, refitSet);
    const reference = referenceSample(fitted, booster.predict(fitted), seed);
    return { nativeJson, onnx, test, testWithoutDate, splitA, featureImportance, rounds, reference };
  } finally {
    booster.dispose();
  }
}
