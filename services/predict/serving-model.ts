import { FEATURE_NAMES, featureMatrix, type RawColumns } from "../../core/features/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import { ARTIFACT_ONNX, type ModelMetadata, type ModelStore } from "../registry/model-store.js";

/** A registered model version loaded into ONNX Runtime, ready to answer. */
export class ServingModel {
  private constructor(
    readonly metadata: ModelMetadata,
    private readonly onnx: OnnxModel,
  ) {}

  static async load(
    store: ModelStore,
    metadata: ModelMetadata,
    intraOpThreads: number,
  ): Promise<ServingModel> {
    // A model trained on other features would read columns in the wrong order: refuse it.
    if (JSON.stringify(metadata.featureNames) !== JSON.stringify(FEATURE_NAMES)) {
      throw new Error(
        `model ${metadata.name} v${metadata.version} expects features ${metadata.featureNames.join(",")}, ` +
          `this server computes ${FEATURE_NAMES.join(",")}`,
      );
    }
    const bytes = await store.readArtifact(metadata.version, ARTIFACT_ONNX);
    const onnx = await OnnxModel.load(bytes, { intraOpThreads });
    return new ServingModel(metadata, onnx);
  }

  get version(): string {
    return this.metadata.version;
  }

  async predict(columns: RawColumns): Promise<Float32Array> {
    if (columns.length === 0) return new Float32Array(0);
    return this.onnx.predict(featureMatrix(columns), columns.length);
  }

  async release(): Promise<void> {
    await this.onnx.release();
  }
}
