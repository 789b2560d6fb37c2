import { performance } from "node:perf_hooks";
import { FEATURE_NAMES, FEATURE_SCHEMA_VERSION } from "../../core/features/index.js";
import { rmse } from "../../core/metrics/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import { xgboostVersion } from "../../core/xgboost/index.js";
import { type HourlyDataset, loadHourly, selectRows } from "../../pipelines/data/hourly.js";
import {
  type CandidateResult,
  candidateSpecs,
  chooseWinner,
  type Family,
  finalizeWinner,
  fitCandidate,
  type ObjectiveName,
  type PreparedData,
  prepareData,
} from "../../pipelines/training/candidates.js";
import { windowSplit } from "../../pipelines/training/splits.js";
import type { Logger } from "../observability/log.js";
import {
  ARTIFACT_CARD,
  ARTIFACT_NATIVE,
  ARTIFACT_ONNX,
  ARTIFACT_REFERENCE,
  type ModelCard,
} from "../registry/model-card.js";
import { type ModelVersion, type Registry, RegistryError } from "../registry/registry.js";
import type { JobEvents } from "./job-events.js";
import { type JobRecord, type JobStore, TERMINAL } from "./job-store.js";

export interface TrainingContext {
  registry: Registry;
  jobs: JobStore;
  events: JobEvents;
  log: Logger;
  dataPath: string;
  modelName: string;
  /** XGBoost threads; 0 = every core. */
  nthread: number;
  sourceCommit?: string;
  /** Called when a job ends, e.g. to record its duration in metrics. */
  onFinished?: (job: JobRecord, seconds: number) => void;
}

class Cancelled extends Error {}

/** Abort reason used when the server shuts down: the job is queued again, not cancelled. */
export const SHUTDOWN = new Error("server shutting down");

function windowOf(data: HourlyDataset, from?: string, until?: string): HourlyDataset {
  if (!from && !until) return data;
  const keep: number[] = [];
  data.dteday.forEach((day, i) => {
    if ((!from || day >= from) && (!until || day < until)) keep.push(i);
  });
  return selectRows(data, keep);
}

/** RMSE of a registered version on the given rows, or undefined when this server cannot compute its features. */
async function evaluateVersion(
  registry: Registry,
  version: ModelVersion,
  test: PreparedData["test"],
): Promise<number | undefined> {
  const card = JSON.parse(
    (await registry.readArtifact(version.runId, ARTIFACT_CARD)).toString("utf8"),
  ) as ModelCard;
  if (JSON.stringify(card.featureNames) !== JSON.stringify(FEATURE_NAMES)) return undefined;
  const model = await OnnxModel.load(await registry.readArtifact(version.runId, ARTIFACT_ONNX));
  try {
    return rmse(test.labels, await model.predict(test.data, test.rows));
  } finally {
    await model.release();
  }
}

/**
 * One training job: every candidate is a registry run with its per-round metrics; the
 * winner (by validation RMSE only) is refit, tested once, exported and registered with
 * the artifacts the server and the monitor need; it gets `staging`, and `production`
 * only through the registry's champion/challenger gate.
 */
export async function runTrainingJob(
  ctx: TrainingContext,
  jobId: string,
  signal: AbortSignal,
): Promise<void> {
  const job = await ctx.jobs.get(jobId);
  if (!job || TERMINAL.includes(job.state)) return;
  const started = performance.now();
  const log = ctx.log.child({ job_id: jobId });
  const publish = (
    stage: string,
    message: string,
    extra: Partial<Parameters<JobEvents["publish"]>[0]> = {},
  ) => ctx.events.publish({ jobId, state: "running", stage, message, time: new Date(), ...extra });
  const stage = async (name: string, progress: number, message: string) => {
    await ctx.jobs.progress(jobId, name, progress);
    publish(name, message);
    log.info(message, { stage: name });
  };
  const checkCancelled = () => {
    if (signal.aborted) throw new Cancelled("cancelled");
  };

  const finish = async (
    state: "succeeded" | "failed" | "cancelled",
    result: Parameters<JobStore["finish"]>[2],
  ) => {
    await ctx.jobs.finish(jobId, state, result);
    const message = state === "failed" ? `failed: ${result?.error}` : state;
    ctx.events.publish({ jobId, state, stage: state, message, time: new Date() });
    const done = await ctx.jobs.get(jobId);
    if (done) ctx.onFinished?.(done, (performance.now() - started) / 1000);
  };

  await ctx.jobs.markRunning(jobId);
  const request = job.request;
  try {
    // A retried job (the process died after registering) must not register a second version.
    const previous = await registeredByJob(ctx, jobId);
    if (previous) {
      await stage("register", 1, `version ${previous.version} was already registered by this job`);
      await finish("succeeded", {
        runId: previous.runId,
        modelVersion: previous.version,
        promoted: previous.aliases.includes("production"),
      });
      return;
    }

    // Runs left open by an attempt that died with its process are closed, so the record is honest.
    const { runs: orphaned } = await ctx.registry.searchRuns({
      filter: `tags.job_id = '${jobId}' and attributes.status = 'running'`,
    });
    for (const run of orphaned) await ctx.registry.endRun(run.id, "failed");

    await stage("load", 0.02, `reading ${ctx.dataPath}`);
    const data = windowOf(await loadHourly(ctx.dataPath), request.dataFrom, request.dataUntil);
    const window = {
      ...(request.dataFrom ? { from: request.dataFrom } : {}),
      ...(request.dataUntil ? { until: request.dataUntil } : {}),
      ...(request.validDays ? { validDays: request.validDays } : {}),
      ...(request.testDays ? { testDays: request.testDays } : {}),
    };
    const prepared = prepareData(data, window);
    // The final model is fitted on train + valid: the test window is the first data it has not seen.
    const fittedUntil = windowSplit(data, window).bounds.testFrom;
    const specs = candidateSpecs({
      families: request.families.length > 0 ? (request.families as Family[]) : undefined,
      objectives: request.objectives.length > 0 ? (request.objectives as ObjectiveName[]) : undefined,
      trials: request.trials,
      overrides: request.paramOverrides,
    });
    await stage("train", 0.05, `${specs.length} candidates on ${data.columns.length} labelled hours`);

    const results: { result: CandidateResult; runId: string }[] = [];
    for (const [i, spec] of specs.entries()) {
      checkCancelled();
      const run = await ctx.registry.createRun({
        experiment: request.experiment,
        name: spec.id,
        tags: { family: spec.family, objective: spec.objective, job_id: jobId, role: "candidate" },
        dataFingerprint: data.fingerprint,
        ...(ctx.sourceCommit ? { sourceCommit: ctx.sourceCommit } : {}),
      });
      await ctx.registry.logRunData(run.id, {
        params: Object.fromEntries(Object.entries(spec.params).map(([k, v]) => [k, String(v)])),
      });
      const history: { key: string; value: number; step: number }[] = [];
      try {
        const result = await fitCandidate(spec, prepared, {
          signal,
          nthread: ctx.nthread,
          onRound: (e) => {
            history.push({ key: "train_rmse", value: e.train, step: e.round });
            if (e.valid !== undefined) history.push({ key: "valid_rmse", value: e.valid, step: e.round });
            publish("train", `${spec.id} round ${e.round}`, {
              candidate: spec.id,
              round: e.round,
              trainMetric: e.train,
              ...(e.valid !== undefined ? { validMetric: e.valid } : {}),
            });
          },
        });
        await ctx.registry.logRunData(run.id, {
          metrics: [
            ...history,
            ...Object.entries(result.valid).map(([k, value]) => ({
              key: `valid_${k}`,
              value,
              step: result.bestRounds,
            })),
            { key: "best_rounds", value: result.bestRounds, step: 0 },
            { key: "seconds", value: result.seconds, step: 0 },
          ],
        });
        await ctx.registry.endRun(run.id, "finished");
        results.push({ result, runId: run.id });
        await stage(
          "train",
          0.05 + (0.75 * (i + 1)) / specs.length,
          `${spec.id}: valid RMSE ${result.valid.rmse.toFixed(2)}`,
        );
      } catch (error) {
        await ctx.registry.endRun(run.id, signal.aborted ? "cancelled" : "failed");
        throw signal.aborted ? new Cancelled("cancelled") : error;
      }
    }

    const winner = chooseWinner(results.map((r) => r.result));
    const winnerRunId = results.find((r) => r.result === winner)?.runId as string;
    await stage(
      "refit",
      0.82,
      `winner ${winner.spec.id} (valid RMSE ${winner.valid.rmse.toFixed(2)}); refitting on train+valid`,
    );
    const final = await finalizeWinner(winner, prepared, { signal, nthread: ctx.nthread });
    checkCancelled();

    const production = await ctx.registry.getModelVersion(ctx.modelName, "production");
    const championRmse = production
      ? await evaluateVersion(ctx.registry, production, prepared.test)
      : undefined;
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
      rows: prepared.rows,
      windows: prepared.windows,
      dataUntil: fittedUntil,
      dataFingerprint: data.fingerprint,
      dataSource: ctx.dataPath,
      rounds: final.rounds,
      xgboostVersion,
      trainingSeconds: (performance.now() - started) / 1000,
      jobId,
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
        parent_run: winnerRunId,
        reason: request.reason,
        ...(production && championRmse !== undefined ? { "gate.champion_version": production.version } : {}),
        "gate.window": `${prepared.windows.test}`,
      },
      dataFingerprint: data.fingerprint,
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
      ARTIFACT_CARD,
      Buffer.from(`${JSON.stringify(card, null, 2)}\n`),
      "application/json",
    );
    await ctx.registry.endRun(finalRun.id, "finished");
    // Past this point the job must not be cancelled half-way: the version is registered or not at all.
    const version = await ctx.registry.createModelVersion({
      modelName: ctx.modelName,
      runId: finalRun.id,
      description: request.reason,
    });
    const actor = job.requestedBy;
    await ctx.registry.setAlias({
      modelName: ctx.modelName,
      alias: "staging",
      version: version.version,
      actor,
      reason: `job ${jobId}: ${request.reason}`,
    });

    let promoted = false;
    try {
      await ctx.registry.setAlias({
        modelName: ctx.modelName,
        alias: "production",
        version: version.version,
        actor,
        reason: production
          ? `job ${jobId}: test RMSE ${final.test.rmse.toFixed(2)} vs ${championRmse?.toFixed(2) ?? "n/a"} for version ${production.version} on ${prepared.windows.test}`
          : `job ${jobId}: first model`,
      });
      promoted = true;
    } catch (error) {
      if (!(error instanceof RegistryError && error.code === "failed_precondition")) throw error;
      publish("promote", `not promoted: ${error.message}`);
    }
    await stage(
      "promote",
      1,
      promoted ? `version ${version.version} is now production` : `version ${version.version} stays staging`,
    );
    await finish("succeeded", { runId: finalRun.id, modelVersion: version.version, promoted });
  } catch (error) {
    if (signal.aborted && signal.reason === SHUTDOWN) {
      await ctx.jobs.requeue(jobId);
      log.info("job interrupted by shutdown; it will run again at the next start");
      return;
    }
    if (error instanceof Cancelled || signal.aborted) {
      await finish("cancelled", { error: "cancelled by request" });
      return;
    }
    log.error("training job failed", { error });
    await finish("failed", { error: error instanceof Error ? error.message : String(error) });
  }
}

async function registeredByJob(ctx: TrainingContext, jobId: string): Promise<ModelVersion | undefined> {
  const { runs } = await ctx.registry.searchRuns({
    filter: `tags.job_id = '${jobId}' and tags.role = 'final'`,
  });
  if (runs.length === 0) return undefined;
  const versions = await ctx.registry.listModelVersions(ctx.modelName).catch(() => []);
  return versions.find((v) => runs.some((r) => r.id === v.runId));
}
