/**
 * The types the training pieces share: candidate specs, prepared data, fitted candidates and the final
 * model.
 */
import type { ShapImportance } from "../../core/explain/index.js";
import type { RegressionReport } from "../../core/metrics/index.js";
import type { DenseMatrix, RoundEvaluation } from "../../core/xgboost/index.js";
import type { IntervalCalibration } from "./calibration.js";

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
  /** Conformal scores of the searched winner on the validation rows: the final model's intervals. */
  calibration: IntervalCalibration;
  /** Mean |SHAP| on (a seeded sample of) the validation window: the global importance of explanations. */
  shapImportance: ShapImportance & { window: string };
}
