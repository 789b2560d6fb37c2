import { FEATURE_NAMES, featureMatrix, type RawColumns } from "../../core/features/index.js";
import { OnnxModel, OnnxWorkerModel } from "../../core/onnx/index.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../registry/model-card.js";
import type { ModelVersion, Registry } from "../registry/registry.js";

/**
 * Rows above which a request is predicted on a worker thread. onnxruntime-node runs a session on the
 * calling thread: ~9 µs a row, so a full 10,000-row batch would hold the event loop (and every other
 * request) for ~90 ms; 512 rows stay under ~5 ms, and small requests skip the hop to the worker.
 */
export const WORKER_BATCH_ROWS = 512;

/**
 * A registered model version loaded into ONNX Runtime, twice: a session on the event loop's thread for
 * small requests and one on a worker thread for large batches. Counts the predictions in flight so
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
    private readonly onnxWorker: OnnxWorkerModel,
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
    const bytes = await registry.readArtifact(version.runId, ARTIFACT_ONNX);
    const onnx = await OnnxModel.load(bytes, { intraOpThreads });
    const onnxWorker = await OnnxWorkerModel.load(bytes, { intraOpThreads }).catch(async (error: unknown) => {
      await onnx.release();
      throw error;
    });
    return new ServingModel(version.modelName, version.version, card, onnx, onnxWorker);
  }

  async predict(columns: RawColumns): Promise<Float32Array> {
    if (columns.length === 0) return new Float32Array(0);
    this.inFlight++;
    try {
      const session = columns.length > WORKER_BATCH_ROWS ? this.onnxWorker : this.onnx;
      return await session.predict(featureMatrix(columns), columns.length);
    } finally {
      this.inFlight--;
      if (this.retired && this.inFlight === 0) void this.release();
    }
  }

  /** No new requests reach this model; it is released once the ones in flight finish. */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.inFlight === 0) await this.release();
  }

  private async release(): Promise<void> {
    await Promise.all([this.onnx.release(), this.onnxWorker.release()]);
  }
}
