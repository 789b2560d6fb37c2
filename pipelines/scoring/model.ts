import { FEATURE_NAMES, type RawColumns } from "../../core/features/index.js";
import { type OnnxModel, OnnxWorkerModel } from "../../core/onnx/index.js";
import type { Booster } from "../../core/xgboost/index.js";

/**
 * What scoring needs of a model: the features it reads and a batch predict over a row-major float32
 * matrix [rows × features]. An ONNX session and the native booster both fit; so can a test double.
 */
export interface ScoringModel {
  /** The model's inputs in order; scoring refuses a model whose features differ from FEATURE_NAMES. */
  readonly featureNames: readonly string[];
  predict(features: Float32Array, rows: number): Promise<Float32Array>;
}

/**
 * A model behind something that computes the features itself from the validated raw fields, such as
 * PredictService.PredictStream on a server (remote scoring).
 */
export interface RawRowsModel {
  predictRows(columns: RawColumns): Promise<Float32Array>;
}

/**
 * ONNX Runtime; the feature names come from the model's metadata unless given (e.g. from its card).
 * Files are scored through onnxFileScorer, whose workers predict while chunks are read and written.
 */
export function onnxScoringModel(
  onnx: OnnxModel | OnnxWorkerModel,
  featureNames?: readonly string[],
): ScoringModel {
  const names = featureNames ?? onnx.featureNames;
  if (names === undefined)
    throw new Error("the ONNX model stores no feature_names; pass the names from its model card");
  return { featureNames: names, predict: (features, rows) => onnx.predict(features, rows) };
}

/**
 * ONNX Runtime for scoring a file on `threads` threads: one single-threaded session per thread, each
 * predicting its own chunk, so `concurrency` chunks are in flight (see OnnxWorkerModel for why).
 */
export async function onnxFileScorer(
  bytes: Uint8Array,
  threads: number,
  featureNames?: readonly string[],
): Promise<{ model: ScoringModel; concurrency: number; release: () => Promise<void> }> {
  const onnx = await OnnxWorkerModel.load(bytes, { workers: threads });
  try {
    return {
      model: onnxScoringModel(onnx, featureNames),
      concurrency: threads,
      release: () => onnx.release(),
    };
  } catch (error) {
    await onnx.release();
    throw error;
  }
}

/** The native XGBoost booster, predicting on the libuv pool (off the event loop). */
export function boosterScoringModel(
  booster: Booster,
  featureNames: readonly string[] = FEATURE_NAMES,
): ScoringModel {
  const cols = featureNames.length;
  return { featureNames, predict: (data, rows) => booster.predictAsync({ data, rows, cols }) };
}
