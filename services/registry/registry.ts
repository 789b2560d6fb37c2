import { traceMethods } from "../observability/tracing.js";
import type { SqlDatabase } from "../storage/database.js";
import { Aliases, moveAlias } from "./aliases.js";
import { Artifacts } from "./artifacts.js";
import { type ArtifactStore, BlobStore, DatabaseBlobStore } from "./blob-store.js";
import { Experiments } from "./experiments.js";
import { insertVersion, loadVersionOrThrow, Models } from "./models.js";
import { gate, PRODUCTION_ALIAS } from "./promotion-gate.js";
import { Runs } from "./runs.js";
import { migrateRegistry } from "./schema.js";
import type { AliasChange, ModelVersion, RegistryOptions } from "./types.js";
import { checkName, optionalText, requireText } from "./validation.js";

export { DEFAULT_CHUNK_SIZE } from "./artifacts.js";
export { RegistryError, type RegistryErrorCode } from "./errors.js";
export {
  GATE_CHALLENGER_RMSE,
  GATE_CHAMPION_RMSE,
  GATE_CHAMPION_VERSION_TAG,
  PRODUCTION_ALIAS,
} from "./promotion-gate.js";
export type {
  AliasChange,
  Artifact,
  EndStatus,
  Experiment,
  MetricInput,
  MetricPoint,
  ModelVersion,
  RegisteredModel,
  RegistryOptions,
  Run,
  RunStatus,
  SearchRunsQuery,
} from "./types.js";

/**
 * The registry: experiments, runs (params, step-indexed metrics, tags), content-addressed artifacts,
 * registered models, versions and aliases with an audit trail. It replaces MLflow tracking and the
 * MLflow model registry, over one DuckDB file (shared with the rest of the server) and one folder.
 *
 * Every write is one DuckDB transaction, so a crash leaves either all of it or none of it. Artifact
 * bytes live outside the database at `<artifactsDir>/sha256/<2 hex>/<sha256>`: written to a temporary
 * file under `<artifactsDir>/tmp/`, fsynced, renamed into place (atomic), and only then recorded in
 * the database, so a row never points at a missing or partial file. Identical content is stored once.
 * Nothing is cached in memory: every answer is read from the database.
 *
 * This class is the registry's one entry point; each part lives in its own file: validation.ts (input
 * checks), schema.ts (tables and rows), blob-store.ts (artifact bytes), experiments.ts, runs.ts,
 * artifacts.ts (artifact records), models.ts (models and versions), aliases.ts (aliases and their
 * audit trail) and promotion-gate.ts (the champion/challenger gate on `production`). Each method is
 * documented where it is implemented; registerVersion lives here because its one transaction spans
 * models, aliases and the gate.
 */
export class Registry {
  private readonly blobs: ArtifactStore;
  private readonly experiments: Experiments;
  private readonly runs: Runs;
  private readonly artifacts: Artifacts;
  private readonly models: Models;
  private readonly aliases: Aliases;

  private constructor(
    readonly db: SqlDatabase,
    readonly artifactsDir: string,
    options: RegistryOptions,
  ) {
    const maxArtifactBytes = options.maxArtifactBytes ?? 2 * 1024 ** 3;
    // On a shared database every replica must read every artifact: the bytes live in it too.
    this.blobs =
      db.dialect === "postgres"
        ? new DatabaseBlobStore(db, maxArtifactBytes)
        : new BlobStore(artifactsDir, maxArtifactBytes);
    this.experiments = new Experiments(db);
    this.runs = new Runs(db);
    this.artifacts = new Artifacts(db, this.blobs);
    this.models = new Models(db, this.blobs);
    this.aliases = new Aliases(db);
  }

  /**
   * Creates the tables when missing and removes temporary files left by an interrupted upload.
   * Throws when the database was written by a newer schema version.
   */
  static async open(db: SqlDatabase, artifactsDir: string, options: RegistryOptions = {}): Promise<Registry> {
    const registry = new Registry(db, artifactsDir, options);
    await migrateRegistry(db);
    await registry.blobs.prepare();
    return registry;
  }

  /** Where the bytes of `sha256` live. */
  blobPath(sha256: string): string {
    if (!(this.blobs instanceof BlobStore))
      throw new Error("artifacts are stored in the database, not in files");
    return this.blobs.path(sha256);
  }

  // -------------------------------------------------------------------------------------------
  // experiments

  createExperiment(
    ...args: Parameters<Experiments["createExperiment"]>
  ): ReturnType<Experiments["createExperiment"]> {
    return this.experiments.createExperiment(...args);
  }

  ensureExperiment(
    ...args: Parameters<Experiments["ensureExperiment"]>
  ): ReturnType<Experiments["ensureExperiment"]> {
    return this.experiments.ensureExperiment(...args);
  }

  getExperiment(...args: Parameters<Experiments["getExperiment"]>): ReturnType<Experiments["getExperiment"]> {
    return this.experiments.getExperiment(...args);
  }

  listExperiments(
    ...args: Parameters<Experiments["listExperiments"]>
  ): ReturnType<Experiments["listExperiments"]> {
    return this.experiments.listExperiments(...args);
  }

  // -------------------------------------------------------------------------------------------
  // runs

  createRun(...args: Parameters<Runs["createRun"]>): ReturnType<Runs["createRun"]> {
    return this.runs.createRun(...args);
  }

  logRunData(...args: Parameters<Runs["logRunData"]>): ReturnType<Runs["logRunData"]> {
    return this.runs.logRunData(...args);
  }

  endRun(...args: Parameters<Runs["endRun"]>): ReturnType<Runs["endRun"]> {
    return this.runs.endRun(...args);
  }

  getRun(...args: Parameters<Runs["getRun"]>): ReturnType<Runs["getRun"]> {
    return this.runs.getRun(...args);
  }

  metricHistory(...args: Parameters<Runs["metricHistory"]>): ReturnType<Runs["metricHistory"]> {
    return this.runs.metricHistory(...args);
  }

  searchRuns(...args: Parameters<Runs["searchRuns"]>): ReturnType<Runs["searchRuns"]> {
    return this.runs.searchRuns(...args);
  }

  // -------------------------------------------------------------------------------------------
  // artifacts

  putArtifact(...args: Parameters<Artifacts["putArtifact"]>): ReturnType<Artifacts["putArtifact"]> {
    return this.artifacts.putArtifact(...args);
  }

  listArtifacts(...args: Parameters<Artifacts["listArtifacts"]>): ReturnType<Artifacts["listArtifacts"]> {
    return this.artifacts.listArtifacts(...args);
  }

  readArtifact(...args: Parameters<Artifacts["readArtifact"]>): ReturnType<Artifacts["readArtifact"]> {
    return this.artifacts.readArtifact(...args);
  }

  openArtifact(...args: Parameters<Artifacts["openArtifact"]>): ReturnType<Artifacts["openArtifact"]> {
    return this.artifacts.openArtifact(...args);
  }

  // -------------------------------------------------------------------------------------------
  // registered models and versions

  createRegisteredModel(
    ...args: Parameters<Models["createRegisteredModel"]>
  ): ReturnType<Models["createRegisteredModel"]> {
    return this.models.createRegisteredModel(...args);
  }

  getRegisteredModel(
    ...args: Parameters<Models["getRegisteredModel"]>
  ): ReturnType<Models["getRegisteredModel"]> {
    return this.models.getRegisteredModel(...args);
  }

  listRegisteredModels(
    ...args: Parameters<Models["listRegisteredModels"]>
  ): ReturnType<Models["listRegisteredModels"]> {
    return this.models.listRegisteredModels(...args);
  }

  createModelVersion(
    ...args: Parameters<Models["createModelVersion"]>
  ): ReturnType<Models["createModelVersion"]> {
    return this.models.createModelVersion(...args);
  }

  getModelVersion(...args: Parameters<Models["getModelVersion"]>): ReturnType<Models["getModelVersion"]> {
    return this.models.getModelVersion(...args);
  }

  listModelVersions(
    ...args: Parameters<Models["listModelVersions"]>
  ): ReturnType<Models["listModelVersions"]> {
    return this.models.listModelVersions(...args);
  }

  /**
   * Registers a finished run as the next version, points `staging` at it and offers it to the
   * champion/challenger gate for `production`, all in one transaction: a crash leaves either none
   * of it or all of it, never a version that skipped the gate.
   */
  async registerVersion(input: {
    modelName: string;
    runId: string;
    description?: string;
    actor: string;
    /** Reason recorded with the `staging` move. */
    reason: string;
    /** Reason recorded with the `production` move when the gate lets it through. */
    promotionReason: string;
  }): Promise<{ version: ModelVersion; promoted: boolean; refusal?: string }> {
    const modelName = checkName(input.modelName, "model_name", "model");
    const runId = requireText(input.runId, "run_id", 64);
    const description = optionalText(input.description, "description", 5000);
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const promotionReason = requireText(input.promotionReason, "promotion_reason", 2000);
    const changes: AliasChange[] = [];
    const outcome = await this.db.transaction(async (tx) => {
      const created = await insertVersion(tx, this.blobs, modelName, runId, description);
      const version = Number(created.version);
      changes.push(await moveAlias(tx, modelName, "staging", version, actor, reason, false));
      const [current] = await tx.all<{ version: number }>(
        "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
        [modelName, PRODUCTION_ALIAS],
      );
      const refusal = await gate(tx, modelName, version, current?.version);
      if (refusal === undefined) {
        changes.push(
          await moveAlias(tx, modelName, PRODUCTION_ALIAS, version, actor, promotionReason, false),
        );
      }
      return {
        version: await loadVersionOrThrow(tx, modelName, version),
        promoted: refusal === undefined,
        ...(refusal !== undefined ? { refusal } : {}),
      };
    });
    this.aliases.emit(changes);
    return outcome;
  }

  // -------------------------------------------------------------------------------------------
  // aliases

  setAlias(...args: Parameters<Aliases["setAlias"]>): ReturnType<Aliases["setAlias"]> {
    return this.aliases.setAlias(...args);
  }

  deleteAlias(...args: Parameters<Aliases["deleteAlias"]>): ReturnType<Aliases["deleteAlias"]> {
    return this.aliases.deleteAlias(...args);
  }

  transitionStage(...args: Parameters<Aliases["transitionStage"]>): ReturnType<Aliases["transitionStage"]> {
    return this.aliases.transitionStage(...args);
  }

  aliasHistory(...args: Parameters<Aliases["aliasHistory"]>): ReturnType<Aliases["aliasHistory"]> {
    return this.aliases.aliasHistory(...args);
  }

  onAliasChange(...args: Parameters<Aliases["onAliasChange"]>): ReturnType<Aliases["onAliasChange"]> {
    return this.aliases.onAliasChange(...args);
  }
}

// A span for every registry write, so that a trace shows what an RPC or a training job registered.
traceMethods(Registry, "registry", {
  createRun: (input) => ({ "registry.experiment": input.experiment, "registry.run_name": input.name ?? "" }),
  logRunData: (runId, data) => ({
    "registry.run_id": runId,
    "registry.params": Object.keys(data.params ?? {}).length,
    "registry.metrics": data.metrics?.length ?? 0,
    "registry.tags": Object.keys(data.tags ?? {}).length,
  }),
  putArtifact: (runId, path) => ({ "registry.run_id": runId, "registry.artifact_path": path }),
  createModelVersion: (input) => ({ "registry.model_name": input.modelName, "registry.run_id": input.runId }),
  registerVersion: (input) => ({ "registry.model_name": input.modelName, "registry.run_id": input.runId }),
  setAlias: (input) => ({
    "registry.model_name": input.modelName,
    "registry.alias": input.alias,
    "registry.version": input.version,
    "registry.forced": input.force === true,
  }),
});
