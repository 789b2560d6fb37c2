import type { ShapImportance } from "../../core/explain/index.js";
import type { IntervalCalibration } from "../../pipelines/training/calibration.js";

/**
 * metadata.json, stored beside model.json and model.onnx in every final run: what a server
 * needs to know to serve the model, and what a person needs to trust it.
 */
export interface ModelCard {
  family: string;
  objective: string;
  params: Record<string, string | number>;
  featureNames: string[];
  featureSchemaVersion: number;
  /** Normalised total gain per feature (sums to 1). */
  featureImportance: Record<string, number>;
  /** valid_*, test_*, test_nodate_*, split_a_test_* and gate figures. */
  metrics: Record<string, number>;
  rows: Record<string, number>;
  windows: Record<string, string>;
  /** First day the model has not been fitted on (YYYY-MM-DD): later days are out of sample for it. */
  dataUntil: string;
  dataFingerprint: string;
  dataSource: string;
  rounds: number;
  xgboostVersion: string;
  trainingSeconds: number;
  jobId?: string;
  /**
   * Conformal scores on the validation window (pipelines/training/calibration.ts): what prediction
   * intervals are computed from. Absent in versions trained before intervals existed: they serve none.
   */
  calibration?: IntervalCalibration;
  /**
   * Mean |SHAP| of the final model per input field and per feature on the validation window
   * (pipelines/training/select.ts). Absent in versions trained before explanations existed.
   */
  shapImportance?: ShapImportance & { window: string };
}

export const ARTIFACT_NATIVE = "model.json";
export const ARTIFACT_ONNX = "model.onnx";
export const ARTIFACT_CARD = "metadata.json";
export const ARTIFACT_REFERENCE = "reference.json";
/** The card's calibration on its own, for tools that read the intervals without the rest. */
export const ARTIFACT_CALIBRATION = "calibration.json";
