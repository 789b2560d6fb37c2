import { performance } from "node:perf_hooks";
import { FEATURE_NAMES, FEATURE_SCHEMA_VERSION } from "../../core/features/index.js";
import { xgboostVersion } from "../../core/xgboost/index.js";
import type { JobExecutor } from "../../pipelines/jobs/tasks.js";
import type { CandidateSpec } from "../../pipelines/training/candidates.js";
import type { TrainingInput, TrainingProgress, TrainingRequest } from "../../pipelines/training/job.js";
import {
  ARTIFACT_CALIBRATION,
  ARTIFACT_CARD,
  ARTIFACT_NATIVE,
  ARTIFACT_ONNX,
  ARTIFACT_REFERENCE,
  type ModelCard,
} from "../registry/model-card.js";
import { type ModelVersion, type Registry, RegistryError } from "../registry/registry.js";
import {
  cancelledBy,
  type JobContext,
  type JobHandler,
  type JobRun,
  jobRunner,
  withDeps,
} from "./lifecycle.js";
import type { FinishResult, StoredJob } from "./store.js";

/** What a training job stores: the request; its outcome is the run, version and promotion. */
export type TrainingJob = StoredJob<"train", TrainingRequest, never>;

export interface TrainingDeps {
  registry: Registry;
  /** Where the computing half of the job runs: a child process of the server, or BullMQ workers. */
  executor: JobExecutor;
  dataPath: string;
  modelName: string;
  /** XGBoost threads; 0 = every core. */
  nthread: number;
  sourceCommit?: string;
}

export type TrainingContext = JobContext & TrainingDeps;

/** The production version's ONNX model, when its features are the ones this server computes. */
async function championOf(
  registry: Registry,
  version: ModelVersion,
): Promise<TrainingInput["champion"] | undefined> {
  const card = JSON.parse(
    (await registry.readArtifact(version.runId, ARTIFACT_CARD)).toString("utf8"),
  ) as ModelCard;
  if (JSON.stringify(card.featureNames) !== JSON.stringify(FEATURE_NAMES)) return undefined;
  return { version: version.version, onnx: await registry.readArtifact(version.runId, ARTIFACT_ONNX) };
}

/**
 * Records candidates as runs while the job computes. Progress arrives as messages; the writes are
 * chained so they happen in order and one at a time, and the first failure is kept for the end.
 */
class CandidateRecorder {
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown;
  private readonly open = new Map<string, string>();

  constructor(
    private readonly ctx: TrainingDeps,
    private readonly experiment: string,
    private readonly jobId: string,
  ) {}

  private enqueue(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((error: unknown) => {
      this.failure ??= error;
    });
  }

  /** A new attempt of the job (e.g. on another worker) leaves the previous attempt's runs behind. */
  restart(): void {
    this.enqueue(() => this.closeOpen("failed"));
  }

  started(spec: CandidateSpec, dataFingerprint: string): void {
    this.enqueue(async () => {
      const previous = this.open.get(spec.id);
      if (previous) await this.ctx.registry.endRun(previous, "failed");
      const run = await this.ctx.registry.createRun({
        experiment: this.experiment,
        name: spec.id,
        tags: { family: spec.family, objective: spec.objective, job_id: this.jobId, role: "candidate" },
        dataFingerprint,
        ...(this.ctx.sourceCommit ? { sourceCommit: this.ctx.sourceCommit } : {}),
      });
      await this.ctx.registry.logRunData(run.id, {
        params: Object.fromEntries(Object.entries(spec.params).map(([k, v]) => [k, String(v)])),
      });
      this.open.set(spec.id, run.id);
    });
  }

  finished(progress: Extract<TrainingProgress, { type: "candidate-end" }>): void {
    this.enqueue(async () => {
      const runId = this.open.get(progress.spec.id);
      if (!runId) return; // its start was recorded by an earlier server process: nothing to attach to
      const { result } = progress;
      await this.ctx.registry.logRunData(runId, {
        metrics: [
          ...result.history.flatMap((e) => [
            { key: "train_rmse", value: e.train, step: e.round },
            ...(e.valid !== undefined ? [{ key: "valid_rmse", value: e.valid, step: e.round }] : []),
          ]),
          ...Object.entries(result.valid).map(([k, value]) => ({
            key: `valid_${k}`,
            value,
            step: result.bestRounds,
          })),
          { key: "best_rounds", value: result.bestRounds, step: 0 },
          { key: "seconds", value: result.seconds, step: 0 },
        ],
      });
      await this.ctx.registry.endRun(runId, "finished");
      this.open.delete(progress.spec.id);
    });
  }

  runOf(specId: string): string | undefined {
    return this.open.get(specId);
  }

  private async closeOpen(status: "failed" | "cancelled"): Promise<void> {
    for (const runId of this.open.values()) await this.ctx.registry.endRun(runId, status);
    this.open.clear();
  }

  /** Waits for every write; ends runs still open with `status` when given. */
  async settle(status?: "failed" | "cancelled"): Promise<void> {
    if (status) this.enqueue(() => this.closeOpen(status));
    await this.chain;
    if (this.failure) throw this.failure;
  }
}

/**
 * Training jobs: the executor computes (candidates, choice on validation only, refit, test); the
 * handler records every candidate as a registry run with its per-round metrics, registers the
 * winner with the artifacts the server and the monitor need, gives it `staging`, and `production`
 * only through the registry's champion/challenger gate.
 */
export const trainingJobs: JobHandler<TrainingJob, TrainingDeps> = {
  kind: "train",
  label: "training job",
  run: (job, run, signal, deps) => trainingJob(deps, job, run, signal),
  failureMessage,
};

/** Runs one training job (for tools and tests that have no queue). */
export function runTrainingJob(ctx: TrainingContext, jobId: string, signal: AbortSignal): Promise<void> {
  return jobRunner(ctx, [withDeps(trainingJobs, ctx)])(jobId, signal);
}

async function trainingJob(
  ctx: TrainingDeps,
  job: TrainingJob,
  run: JobRun,
  signal: AbortSignal,
): Promise<FinishResult<never>> {
  const { jobId, publish, stage } = run;
  const started = performance.now();
  const request = job.request;
  const recorder = new CandidateRecorder(ctx, request.experiment, jobId);
  try {
    // A retried job (the process died after registering) must not register a second version.
    let previous = await registeredByJob(ctx, jobId);
    const stored = previous ? undefined : await storedFinalRun(ctx, jobId);
    if (stored) {
      // Killed after its artifacts were stored and before the version: register those, as the
      // unkilled run would have, instead of training again.
      await stage(
        "register",
        0.95,
        `registering the final model stored by an earlier attempt (run ${stored})`,
      );
      previous = (await register(ctx, job, stored)).version;
    }
    if (previous) {
      await stage("register", 1, `version ${previous.version} was already registered by this job`);
      return {
        runId: previous.runId,
        modelVersion: previous.version,
        promoted: previous.aliases.includes("production"),
      };
    }

    // Runs left open by an attempt that died with its process are closed, so the record is honest.
    const { runs: orphaned } = await ctx.registry.searchRuns({
      filter: `tags.job_id = '${jobId}' and attributes.status = 'RUNNING'`,
    });
    for (const orphan of orphaned) await ctx.registry.endRun(orphan.id, "failed");

    const production = await ctx.registry.getModelVersion(ctx.modelName, "production");
    const champion = production ? await championOf(ctx.registry, production) : undefined;
    const outcome = await ctx.executor.run(
      "train",
      jobId,
      { request, dataPath: ctx.dataPath, nthread: ctx.nthread, ...(champion ? { champion } : {}) },
      (p) => {
        switch (p.type) {
          case "stage":
            if (p.stage === "load") recorder.restart();
            run.write(() => stage(p.stage, p.progress, p.message));
            break;
          case "round":
            publish("train", `${p.candidate} round ${p.round}`, {
              candidate: p.candidate,
              round: p.round,
              trainMetric: p.train,
              ...(p.valid !== undefined ? { validMetric: p.valid } : {}),
            });
            break;
          case "candidate-start":
            recorder.started(p.spec, p.dataFingerprint);
            break;
          case "candidate-end":
            recorder.finished(p);
            break;
        }
      },
      signal,
    );
    await run.written();
    await recorder.settle();

    const { winner, final, championRmse } = outcome;
    const winnerRunId = recorder.runOf(winner.spec.id) ?? (await lastRunOf(ctx, jobId, winner.spec.id));
    const metrics: Record<string, number> = {
      ...Object.fromEntries(Object.entries(winner.valid).map(([k, v]) => [`valid_${k}`, v])),
      ...Object.fromEntries(Object.entries(final.test).map(([k, v]) => [`test_${k}`, v])),
      ...(final.testWithoutDate
        ? Object.fromEntries(Object.entries(final.testWithoutDate).map(([k, v]) => [`test_nodate_${k}`, v]))
        : {}),
      ...Object.fromEntries(Object.entries(final.splitA).map(([k, v]) => [`split_a_test_${k}`, v])),
      "gate.challenger_rmse": final.test.rmse,
      ...(championRmse !== undefined ? { "gate.champion_rmse": championRmse } : {}),
    };
    const card: ModelCard = {
      family: winner.spec.family,
      objective: String(winner.spec.params.objective ?? winner.spec.objective),
      params: winner.spec.params,
      featureNames: [...FEATURE_NAMES],
      featureSchemaVersion: FEATURE_SCHEMA_VERSION,
      featureImportance: final.featureImportance,
      metrics,
      rows: outcome.rows,
      windows: outcome.windows,
      dataUntil: outcome.fittedUntil,
      dataFingerprint: outcome.dataFingerprint,
      dataSource: ctx.dataPath,
      rounds: final.rounds,
      xgboostVersion,
      trainingSeconds: (performance.now() - started) / 1000,
      jobId,
      calibration: final.calibration,
      shapImportance: final.shapImportance,
    };

    await stage("register", 0.9, "storing artifacts");
    const finalRun = await ctx.registry.createRun({
      experiment: request.experiment,
      name: `final ${winner.spec.id}`,
      tags: {
        family: winner.spec.family,
        objective: winner.spec.objective,
        job_id: jobId,
        role: "final",
        ...(winnerRunId ? { parent_run: winnerRunId } : {}),
        reason: request.reason,
        ...(production && championRmse !== undefined ? { "gate.champion_version": production.version } : {}),
        "gate.window": `${outcome.windows.test}`,
      },
      dataFingerprint: outcome.dataFingerprint,
      ...(ctx.sourceCommit ? { sourceCommit: ctx.sourceCommit } : {}),
    });
    await ctx.registry.logRunData(finalRun.id, {
      params: Object.fromEntries(
        Object.entries({ ...winner.spec.params, rounds: final.rounds }).map(([k, v]) => [k, String(v)]),
      ),
      metrics: Object.entries(metrics).map(([key, value]) => ({ key, value, step: 0 })),
    });
    await ctx.registry.putArtifact(
      finalRun.id,
      ARTIFACT_NATIVE,
      Buffer.from(final.nativeJson),
      "application/json",
    );
    await ctx.registry.putArtifact(finalRun.id, ARTIFACT_ONNX, final.onnx, "application/onnx");
    await ctx.registry.putArtifact(
      finalRun.id,
      ARTIFACT_REFERENCE,
      Buffer.from(JSON.stringify(final.reference)),
      "application/json",
    );
    await ctx.registry.putArtifact(
      finalRun.id,
      ARTIFACT_CALIBRATION,
      Buffer.from(JSON.stringify(final.calibration)),
      "application/json",
    );
    await ctx.registry.putArtifact(
      finalRun.id,
      ARTIFACT_CARD,
      Buffer.from(`${JSON.stringify(card, null, 2)}\n`),
      "application/json",
    );
    await ctx.registry.endRun(finalRun.id, "finished");
    // Past this point the job must not be cancelled half-way: the version is registered or not at all.
    const { version, promoted, refusal } = await register(ctx, job, finalRun.id, {
      ...(production ? { production: production.version } : {}),
      testRmse: final.test.rmse,
      ...(championRmse !== undefined ? { championRmse } : {}),
      window: `${outcome.windows.test}`,
    });
    if (refusal) publish("promote", `not promoted: ${refusal}`);
    await stage(
      "promote",
      1,
      promoted ? `version ${version.version} is now production` : `version ${version.version} stays staging`,
    );
    return { runId: finalRun.id, modelVersion: version.version, promoted };
  } catch (error) {
    await recorder
      .settle(cancelledBy(error, signal) ? "cancelled" : "failed")
      .catch((recordError: unknown) =>
        run.log.error("could not close the job's runs", { error: recordError }),
      );
    throw error;
  }
}

/** The last run recorded for a candidate of this job (its start may predate this server process). */
async function lastRunOf(ctx: TrainingDeps, jobId: string, specId: string): Promise<string | undefined> {
  const { runs } = await ctx.registry.searchRuns({
    filter: `tags.job_id = '${jobId}' and tags.role = 'candidate' and attributes.run_name = '${specId}'`,
    orderBy: ["attributes.start_time DESC"],
    pageSize: 1,
  });
  return runs[0]?.id;
}

async function registeredByJob(ctx: TrainingDeps, jobId: string): Promise<ModelVersion | undefined> {
  const { runs } = await ctx.registry.searchRuns({
    filter: `tags.job_id = '${jobId}' and tags.role = 'final'`,
  });
  if (runs.length === 0) return undefined;
  let versions: ModelVersion[];
  try {
    versions = await ctx.registry.listModelVersions(ctx.modelName);
  } catch (error) {
    // Only "the model does not exist yet" means nothing was registered; any other failure must
    // fail the job, or a retry would register a second version.
    if (error instanceof RegistryError && error.code === "not_found") return undefined;
    throw error;
  }
  return versions.find((v) => runs.some((r) => r.id === v.runId));
}

/**
 * The version, its `staging` alias and the gate's decision on `production`, in one registry
 * transaction. `gate` describes the comparison for the audit trail (absent when resuming a stored run).
 */
async function register(
  ctx: TrainingDeps,
  job: TrainingJob,
  runId: string,
  gate?: { production?: string; testRmse: number; championRmse?: number; window: string },
): Promise<{ version: ModelVersion; promoted: boolean; refusal?: string }> {
  const comparison = gate
    ? gate.production
      ? `test RMSE ${gate.testRmse.toFixed(2)} vs ${gate.championRmse?.toFixed(2) ?? "n/a"} for version ${gate.production} on ${gate.window}`
      : "first model"
    : "champion/challenger gate on the stored run's metrics";
  return ctx.registry.registerVersion({
    modelName: ctx.modelName,
    runId,
    description: job.request.reason,
    actor: job.requestedBy,
    reason: `job ${job.id}: ${job.request.reason}`,
    promotionReason: `job ${job.id}: ${comparison}`,
  });
}

/** A final run of this job that finished (all artifacts stored) but never became a version. */
async function storedFinalRun(ctx: TrainingDeps, jobId: string): Promise<string | undefined> {
  const { runs } = await ctx.registry.searchRuns({
    filter: `tags.job_id = '${jobId}' and tags.role = 'final' and attributes.status = 'FINISHED'`,
    orderBy: ["attributes.start_time DESC"],
    pageSize: 1,
  });
  return runs[0]?.id;
}

/** The job's error for its record: a full disk is named as such, with where the bytes were going. */
function failureMessage(error: unknown, ctx: TrainingDeps): string {
  const message = error instanceof Error ? error.message : String(error);
  if ((error as NodeJS.ErrnoException)?.code === "ENOSPC") {
    return `no space left on device for the model artifacts under ${ctx.registry.artifactsDir}: ${message}`;
  }
  return message;
}
