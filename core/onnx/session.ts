/**
 * Thin ONNX Runtime (CPU) wrapper for serving single-input/single-output regression models produced by
 * `xgboostToOnnx`: float32 [N, F] in, float32 [N, 1] out.
 */
import { InferenceSession, Tensor } from "onnxruntime-node";
import { decodeModelSummary } from "./onnx-proto.js";

export interface OnnxModelOptions {
  /** ORT intra-op thread pool size (default 1: serving parallelism comes from concurrent requests). */
  intraOpThreads?: number;
}

/** What a loaded session declares about its inputs and outputs. */
export interface SessionSignature {
  inputNames: readonly string[];
  outputNames: readonly string[];
  inputs: readonly { isTensor: boolean; type?: string; shape?: readonly (number | string)[] }[];
}

/** Session options shared by OnnxModel and OnnxWorkerModel; throws on a bad thread count. */
export function sessionOptions(where: string, opts: OnnxModelOptions): InferenceSession.SessionOptions {
  const intraOpNumThreads = opts.intraOpThreads ?? 1;
  if (!Number.isInteger(intraOpNumThreads) || intraOpNumThreads < 0) {
    throw new Error(`${where}: intraOpThreads must be a non-negative integer, got ${intraOpNumThreads}`);
  }
  return {
    intraOpNumThreads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  };
}

/** Feature names stored by the exporter in the metadata, or undefined when the model has none. */
export function featureNamesOf(metadata: Record<string, string>): string[] | undefined {
  const raw = metadata.feature_names;
  if (raw === undefined) return undefined;
  const parsed: unknown = JSON.parse(raw);
  return Array.isArray(parsed) ? parsed.map(String) : undefined;
}

/** Throws unless `data` holds `rows` rows of `numFeatures` features. */
export function checkPredictInput(
  where: string,
  data: Float32Array,
  rows: number,
  numFeatures: number,
): void {
  if (!Number.isInteger(rows) || rows < 0) {
    throw new Error(`${where}: rows must be a non-negative integer, got ${rows}`);
  }
  const expected = rows * numFeatures;
  if (data.length !== expected) {
    throw new Error(
      `${where}: feature count mismatch: got ${data.length} values for ${rows} rows, expected ` +
        `${expected} (${rows} rows x ${numFeatures} features)`,
    );
  }
}

/** The model's metadata_props; bytes that are not an ONNX model fail here, before any session starts. */
export function modelMetadata(where: string, bytes: Uint8Array): Record<string, string> {
  try {
    return decodeModelSummary(bytes).metadata;
  } catch (error) {
    throw new Error(`${where}: not a valid ONNX model (${(error as Error).message})`);
  }
}

/** The models served here have one float32 input [N, F] with a fixed F, and one output. */
export function checkSignature(
  where: string,
  sig: SessionSignature,
): { inputName: string; outputName: string; numFeatures: number } {
  if (sig.inputNames.length !== 1 || sig.outputNames.length !== 1) {
    throw new Error(
      `${where}: expected exactly 1 input and 1 output, model has inputs [${sig.inputNames.join(", ")}] ` +
        `and outputs [${sig.outputNames.join(", ")}]`,
    );
  }
  const input = sig.inputs[0];
  const inputName = sig.inputNames[0] as string;
  if (input === undefined || !input.isTensor || input.type !== "float32") {
    throw new Error(`${where}: input "${inputName}" must be a float32 tensor`);
  }
  const shape = input.shape ?? [];
  const f = shape[1];
  if (shape.length !== 2 || typeof f !== "number" || !(f > 0)) {
    throw new Error(
      `${where}: input "${inputName}" must have shape [N, F] with a fixed F, got [${shape.join(", ")}]`,
    );
  }
  return { inputName, outputName: sig.outputNames[0] as string, numFeatures: f };
}

export class OnnxModel {
  readonly inputName: string;
  readonly outputName: string;
  readonly numFeatures: number;
  /** ModelProto.metadata_props (includes `feature_names` as a JSON array for exported models). */
  readonly metadata: Record<string, string>;
  private readonly session: InferenceSession;
  private readonly fetches: string[];
  private released = false;

  private constructor(
    session: InferenceSession,
    inputName: string,
    outputName: string,
    numFeatures: number,
    metadata: Record<string, string>,
  ) {
    this.session = session;
    this.inputName = inputName;
    this.outputName = outputName;
    this.numFeatures = numFeatures;
    this.metadata = metadata;
    this.fetches = [outputName];
  }

  static async load(bytes: Uint8Array, opts: OnnxModelOptions = {}): Promise<OnnxModel> {
    const options = sessionOptions("OnnxModel.load", opts);
    const metadata = modelMetadata("OnnxModel.load", bytes);
    const session = await InferenceSession.create(bytes, options);
    try {
      const { inputName, outputName, numFeatures } = checkSignature("OnnxModel.load", {
        inputNames: session.inputNames,
        outputNames: session.outputNames,
        inputs: session.inputMetadata,
      });
      return new OnnxModel(session, inputName, outputName, numFeatures, metadata);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** Feature names stored by the exporter, or undefined when the model has none. */
  get featureNames(): string[] | undefined {
    return featureNamesOf(this.metadata);
  }

  /**
   * Predicts `rows` rows of row-major float32 features (`data.length === rows * numFeatures`).
   * Returns one value per row. NaN marks a missing value.
   */
  async predict(data: Float32Array, rows: number): Promise<Float32Array> {
    if (this.released) throw new Error("OnnxModel.predict: model has been released");
    checkPredictInput("OnnxModel.predict", data, rows, this.numFeatures);
    if (rows === 0) return new Float32Array(0);
    const input = new Tensor("float32", data, [rows, this.numFeatures]);
    const result = await this.session.run({ [this.inputName]: input }, this.fetches);
    const out = result[this.outputName];
    if (out === undefined || !(out.data instanceof Float32Array) || out.data.length !== rows) {
      throw new Error(
        `OnnxModel.predict: output "${this.outputName}" is not a float32 tensor with ${rows} values`,
      );
    }
    return out.data;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}
