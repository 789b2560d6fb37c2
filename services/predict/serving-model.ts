import { FEATURE_NAMES, featureMatrix, type RawColumns } from "../../core/features/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../registry/model-card.js";
import type { ModelVersion, Registry } from "../registry/registry.js";

/**
 * A registered model version loaded into ONNX Runtime. Counts the predictions in flight so
 * that a version replaced by a hot reload is released only after its last request.
 */
export class ServingModel {
  private inFlight = 0;
  private retired = false;

  private constructor(
    readonly name: string,
    readonly version: string,
    readonly card: ModelCard,
    private readonly onnx: OnnxModel,
  ) {}

  static async load(
    registry: Registry,
    version: ModelVersion,
    intraOpThreads: number,
  ): Promise<ServingModel> {
    const card = JSON.parse(
      (await registry.readArtifact(version.runId, ARTIFACT_CARD)).toString("utf8"),
    ) as ModelCard;
    // A model trained on other features would read columns in the wrong order: refuse it.
    if (JSON.stringify(card.featureNames) !== JSON.stringify(FEATURE_NAMES)) {
      throw new Error(
        `model ${version.modelName} v${version.version} expects features [${card.featureNames.join(", ")}] ` +
          `(schema v${card.featureSchemaVersion}); this server computes [${FEATURE_NAMES.join(", ")}]`,
      );
    }
    const onnx = await OnnxModel.load(await registry.readArtifact(version.runId, ARTIFACT_ONNX), {
      intraOpThreads,
    });
    return new ServingModel(version.modelName, version.version, card, onnx);
  }

  async predict(columns: RawColumns): Promise<Float32Array> {
    if (columns.length === 0) return new Float32Array(0);
    this.inFlight++;
    try {
      return await this.onnx.predict(featureMatrix(columns), columns.length);
    } finally {
      this.inFlight--;
      if (this.retired && this.inFlight === 0) void this.onnx.release();
    }
  }

  /** No new requests reach this model; it is released once the ones in flight finish. */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.inFlight === 0) await this.onnx.release();
  }
}
