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
    const intraOpNumThreads = opts.intraOpThreads ?? 1;
    if (!Number.isInteger(intraOpNumThreads) || intraOpNumThreads < 0) {
      throw new Error(
        `OnnxModel.load: intraOpThreads must be a non-negative integer, got ${intraOpNumThreads}`,
      );
    }
    const metadata = decodeModelSummary(bytes).metadata;
    const session = await InferenceSession.create(bytes, {
      intraOpNumThreads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
    });
    try {
      if (session.inputNames.length !== 1 || session.outputNames.length !== 1) {
        throw new Error(
          `OnnxModel.load: expected exactly 1 input and 1 output, model has inputs [${session.inputNames.join(", ")}] ` +
            `and outputs [${session.outputNames.join(", ")}]`,
        );
      }
      const input = session.inputMetadata[0];
      const inputName = session.inputNames[0] as string;
      const outputName = session.outputNames[0] as string;
      if (input === undefined || !input.isTensor || input.type !== "float32") {
        throw new Error(`OnnxModel.load: input "${inputName}" must be a float32 tensor`);
      }
      const f = input.shape[1];
      if (input.shape.length !== 2 || typeof f !== "number" || !(f > 0)) {
        throw new Error(
          `OnnxModel.load: input "${inputName}" must have shape [N, F] with a fixed F, got [${input.shape.join(", ")}]`,
        );
      }
      return new OnnxModel(session, inputName, outputName, f, metadata);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** Feature names stored by the exporter, or undefined when the model has none. */
  get featureNames(): string[] | undefined {
    const raw = this.metadata.feature_names;
    if (raw === undefined) return undefined;
    const parsed: unknown = JSON.parse(raw);
    return Array.isArray(parsed) ? parsed.map(String) : undefined;
  }

  /**
   * Predicts `rows` rows of row-major float32 features (`data.length === rows * numFeatures`).
   * Returns one value per row. NaN marks a missing value.
   */
  async predict(data: Float32Array, rows: number): Promise<Float32Array> {
    if (this.released) throw new Error("OnnxModel.predict: model has been released");
    if (!Number.isInteger(rows) || rows < 0) {
      throw new Error(`OnnxModel.predict: rows must be a non-negative integer, got ${rows}`);
    }
    const expected = rows * this.numFeatures;
    if (data.length !== expected) {
      throw new Error(
        `OnnxModel.predict: feature count mismatch: got ${data.length} values for ${rows} rows, expected ` +
          `${expected} (${rows} rows x ${this.numFeatures} features)`,
      );
    }
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
