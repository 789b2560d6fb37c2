import { BikeshareError } from "../../core/errors.js";
import { type Explanation, explainContributions, explanationSpace } from "../../core/explain/index.js";
import { FEATURE_NAMES, featureMatrix, NUM_FEATURES, type RawColumns } from "../../core/features/index.js";
import { CompiledModel, OnnxModel, OnnxWorkerModel } from "../../core/onnx/index.js";
import { Booster, TreeShapDeclined, TreeShapTables } from "../../core/xgboost/index.js";
import { IntervalLevelError, intervalBounds } from "../../pipelines/training/calibration.js";
import { RegistryError } from "../registry/errors.js";
import { ARTIFACT_CARD, ARTIFACT_NATIVE, ARTIFACT_ONNX, type ModelCard } from "../registry/model-card.js";
import type { ModelVersion, Registry } from "../registry/registry.js";

/**
 * Rows above which a request is predicted on a worker thread. onnxruntime-node runs a session on the
 * calling thread: ~9 µs a row, so a full 10,000-row batch would hold the event loop (and every other
 * request) for ~90 ms; 512 rows stay under ~5 ms, and small requests skip the hop to the worker.
 */
export const WORKER_BATCH_ROWS = 512;

/**
 * Rows up to which the compiled evaluator predicts instead of ONNX Runtime. It has no fixed cost per run
 * but costs ~20% more per row: for 600 trees, one row 8.5 vs 13.7 µs, two 17 vs 20, four 34 vs 29
 * (bench/model-compute.ts, docs/benchmarks.md).
 */
export const COMPILED_MAX_ROWS = 2;

/**
 * Rows one request may ask explanations for. XGBoost's TreeSHAP costs milliseconds a row for a forest or
 * a 600-tree model (bench/explain.ts), and it answers while a version's tables are being built or when
 * they are declined, so a larger batch would hold a thread-pool thread for seconds.
 */
export const EXPLAIN_MAX_ROWS = 100;

/**
 * Rows up to which explanations are evaluated from the version's TreeSHAP tables (TreeShapTables, the
 * same values as XGBoost's) on the event loop: ~0.75 ms of CPU a row for the 600-tree gbtree, so four
 * rows stay within a few milliseconds and skip the hop to the thread pool; larger batches are evaluated
 * from the same tables on the thread pool.
 */
export const FAST_EXPLAIN_MAX_ROWS = 4;

/**
 * Work that must not take the whole libuv thread pool: its 4 threads also write the prediction spool,
 * which every answer waits for, so four long explanations there would stall every prediction. `limit`
 * run at once, `queue` more wait, and the rest are refused with resource_exhausted (retry later).
 */
export class PoolGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly queue: number,
    private readonly what: string,
  ) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      if (this.waiting.length >= this.queue) {
        throw new BikeshareError(
          "resource_exhausted",
          `too many ${this.what} at once (${this.limit} running, ${this.queue} waiting): retry later`,
        );
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await work();
    } finally {
      // The slot passes to the next waiter as it is; it is freed only when nobody waits.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** Explanations on the thread pool (tables or XGBoost), for every version of this process. */
const poolExplains = new PoolGate(1, 8, "explanations on the thread pool");

/**
 * A registered model version loaded into ONNX Runtime, twice: a session on the event loop's thread for
 * small requests and one on a worker thread for large batches; the fewest rows go to the same graph
 * compiled in TypeScript (`CompiledModel`) when it can evaluate it. Counts the predictions in flight so
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
    private readonly compiled: CompiledModel | undefined,
    /** Why the compiled evaluator declined this model (its few-row requests then run on ONNX Runtime). */
    readonly compiledDeclined: string | undefined,
    /** The version's XGBoost model JSON, read for its TreeSHAP tables and, until they are ready, XGBoost. */
    private readonly readNative: () => Promise<Buffer>,
  ) {}

  /**
   * The native booster, loaded on the thread pool by the first explanation that finds no tables (they
   * are still being built, or declined): once they are ready it is never needed.
   */
  private native: Promise<Booster> | undefined;

  /** The version's TreeSHAP tables once built: they answer every explanation from then on. */
  private tables: TreeShapTables | undefined;

  /** The build in flight or done; unset again when reading the model failed, so it is retried. */
  private tablesBuild: Promise<void> | undefined;

  private released = false;

  /** Why the tables were not built (a model they do not cover, or too large): XGBoost explains it all. */
  explainTablesDeclined: string | undefined;

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
    let compiled: CompiledModel | undefined;
    let declined: string | undefined;
    try {
      compiled = CompiledModel.fromOnnx(bytes);
    } catch (error) {
      // Not an error: ONNX Runtime serves every request. The caller says so (LiveModel logs it once).
      declined = (error as Error).message;
    }
    const model = new ServingModel(
      version.modelName,
      version.version,
      card,
      onnx,
      onnxWorker,
      compiled,
      declined,
      () => registry.readArtifact(version.runId, ARTIFACT_NATIVE),
    );
    // Not awaited: the version serves predictions (and XGBoost its explanations) meanwhile.
    void model.explainTablesReady();
    return model;
  }

  /**
   * Builds the version's TreeSHAP tables on the thread pool, once (again after a failed read of the
   * model, which the next explanation retries). Resolves when they are ready, declined or unavailable;
   * never rejects: XGBoost answers, and reports, whatever the tables cannot.
   */
  explainTablesReady(): Promise<void> {
    this.tablesBuild ??= (async () => {
      try {
        explanationSpace(this.card.objective);
      } catch (error) {
        this.explainTablesDeclined = (error as Error).message;
        return;
      }
      let bytes: Buffer;
      try {
        bytes = await this.readNative();
      } catch {
        // nativeBooster reads the artifact again and reports the failure to the request.
        this.tablesBuild = undefined;
        return;
      }
      try {
        const tables = await TreeShapTables.build(bytes);
        if (this.released) tables.dispose();
        else this.tables = tables;
      } catch (error) {
        // Declined (or a model the tables cannot read): XGBoost, the reference, explains every request.
        this.explainTablesDeclined =
          error instanceof TreeShapDeclined
            ? error.message
            : `cannot read the model: ${(error as Error).message}`;
      }
    })();
    return this.tablesBuild;
  }

  /**
   * Per-row contributions of every input field to the forecast (core/explain): XGBoost's TreeSHAP values
   * on the version's native model, from its precomputed tables once they are built (a few rows on the
   * event loop, more on the thread pool), from XGBoost itself on the thread pool until then or when the
   * tables are declined. `dateField` is what the caller's transport calls the hour's date (`hour` in RPCs).
   */
  async explain(columns: RawColumns, dateField?: string): Promise<Explanation[]> {
    if (columns.length === 0) return [];
    let space: ReturnType<typeof explanationSpace>;
    try {
      space = explanationSpace(this.card.objective);
    } catch (error) {
      throw new BikeshareError(
        "failed_precondition",
        `model ${this.name} v${this.version} cannot be explained: ${(error as Error).message}`,
      );
    }
    this.inFlight++;
    try {
      const m = { data: featureMatrix(columns), rows: columns.length, cols: NUM_FEATURES };
      void this.explainTablesReady();
      const tables = this.tables;
      const contribs =
        tables !== undefined && m.rows <= FAST_EXPLAIN_MAX_ROWS
          ? tables.contributions(m)
          : await poolExplains.run(async () =>
              tables !== undefined
                ? tables.contributionsAsync(m)
                : (await this.nativeBooster()).predictContribsAsync(m),
            );
      return explainContributions(contribs, columns.length, space, dateField);
    } finally {
      this.inFlight--;
      if (this.retired && this.inFlight === 0) void this.release();
    }
  }

  private nativeBooster(): Promise<Booster> {
    this.native ??= this.readNative().then(
      async (json) => {
        const booster = await Booster.loadJsonAsync(json);
        // One OpenMP thread: explanations run on the thread pool beside other requests, and one row
        // (the usual request) cannot use a second thread anyway (XGBoost parallelises over rows).
        booster.setParam("nthread", 1);
        return booster;
      },
      (error: unknown) => {
        // A read that failed (a missing artifact, or the database briefly away) is tried again next time.
        this.native = undefined;
        // A missing artifact is the version's lasting state; anything else (the database or disk away) may
        // pass, and its text (paths, hosts) is for the log, not the client.
        const missing = error instanceof RegistryError && error.code === "not_found";
        throw new BikeshareError(
          missing ? "failed_precondition" : "unavailable",
          missing
            ? `model ${this.name} v${this.version} cannot be explained: it has no native model (${ARTIFACT_NATIVE})`
            : `model ${this.name} v${this.version} cannot be explained now: its native model (${ARTIFACT_NATIVE}) could not be read; retry later`,
          { cause: error },
        );
      },
    );
    return this.native;
  }

  async predict(columns: RawColumns): Promise<Float32Array> {
    if (columns.length === 0) return new Float32Array(0);
    this.inFlight++;
    try {
      const features = featureMatrix(columns);
      if (this.compiled !== undefined && columns.length <= COMPILED_MAX_ROWS) {
        return this.compiled.predict(features, columns.length);
      }
      const session = columns.length > WORKER_BATCH_ROWS ? this.onnxWorker : this.onnx;
      return await session.predict(features, columns.length);
    } finally {
      this.inFlight--;
      if (this.retired && this.inFlight === 0) void this.release();
    }
  }

  /**
   * The calibrated interval at `level` around `predictions` of `columns`. A version without a
   * calibration refuses (failed_precondition) rather than invent a band; a level outside (0, 1), or
   * beyond what its calibration scores support, is invalid_argument. Both name `field`.
   */
  interval(
    columns: RawColumns,
    predictions: ArrayLike<number>,
    level: number,
    field = "interval_level",
  ): { lower: Float64Array; upper: Float64Array } {
    const calibration = this.card.calibration;
    if (calibration === undefined) {
      throw new BikeshareError(
        "failed_precondition",
        `${field}: model ${this.name} v${this.version} has no interval calibration (trained before intervals existed); retrain it to serve intervals`,
      );
    }
    try {
      return intervalBounds(calibration, columns, predictions, level);
    } catch (error) {
      if (!(error instanceof IntervalLevelError)) throw error;
      throw new BikeshareError("invalid_argument", `${field} ${error.message}`, {
        violations: [{ field, description: error.message }],
      });
    }
  }

  /** No new requests reach this model; it is released once the ones in flight finish. */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.inFlight === 0) await this.release();
  }

  private async release(): Promise<void> {
    this.released = true;
    this.tables?.dispose();
    this.tables = undefined;
    const native = this.native;
    this.native = undefined;
    void native?.then(
      (booster) => booster.dispose(),
      // A failed load was already reported to the request that asked for it; nothing to free.
      () => {},
    );
    await Promise.all([this.onnx.release(), this.onnxWorker.release()]);
  }
}
