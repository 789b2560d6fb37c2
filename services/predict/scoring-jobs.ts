import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { HandlerContext } from "@connectrpc/connect";
import type { StartScoringRequest, StartScoringResponse } from "../../gen/bikeshare/v1/predict_pb.js";
import type { JobQueue } from "../../pipelines/jobs/queue.js";
import { CANCEL_REQUESTED, type JobExecutor, TaskCancelled } from "../../pipelines/jobs/tasks.js";
import { actorOf } from "../auth/principal.js";
import type { Logger } from "../observability/log.js";
import { withSpan } from "../observability/tracing.js";
import { ARTIFACT_ONNX } from "../registry/model-card.js";
import type { Registry } from "../registry/registry.js";
import type { JobEvents } from "../train/job-events.js";
import { type JobRecord, type JobStore, TERMINAL } from "../train/job-store.js";
import { jobToProto } from "../train/train-service.js";
import { invalidArgument } from "./predict-service.js";
import { checkScoringPath } from "./scoring-paths.js";

const INPUT_EXTENSIONS = [".arrow", ".arrows", ".feather", ".ipc", ".parquet", ".csv"];
const OUTPUT_EXTENSIONS = [".arrow", ".arrows", ".parquet"];

export interface ScoringJobDeps {
  jobs: JobStore;
  queue: JobQueue;
  scoringDir: string;
}

/** PredictService.StartScoring: validates the files, stores the job, queues it. */
export function startScoringHandler(deps: ScoringJobDeps) {
  return async (req: StartScoringRequest, ctx: HandlerContext): Promise<StartScoringResponse> => {
    const input = await checkScoringPath(deps.scoringDir, "input", req.input, INPUT_EXTENSIONS, "input");
    const output = await checkScoringPath(deps.scoringDir, "output", req.output, OUTPUT_EXTENSIONS, "output");
    const invalidOutput = req.invalidOutput
      ? await checkScoringPath(deps.scoringDir, "invalid_output", req.invalidOutput, [".csv"], "output")
      : undefined;
    const violations = [input.error, output.error, invalidOutput?.error].flatMap((e) => (e ? [e] : []));
    if (violations.length > 0) throw invalidArgument(violations);
    const { job, created } = await deps.jobs.createScoring(
      {
        input: req.input,
        output: req.output,
        invalidOutput: req.invalidOutput || `${req.output}.invalid.csv`,
        reason: req.reason || "manual",
      },
      actorOf(ctx.values),
      req.idempotencyKey || undefined,
    );
    if (created) await deps.queue.enqueue(job.id);
    return { job: jobToProto(job) } as StartScoringResponse;
  };
}

export interface ScoringRunContext {
  registry: Registry;
  jobs: JobStore;
  events: JobEvents;
  log: Logger;
  executor: JobExecutor;
  modelName: string;
  scoringDir: string;
  onFinished?: (job: JobRecord, seconds: number) => void;
}

/** Runs one scoring job with the production model of the moment it starts. */
export function runScoringJob(ctx: ScoringRunContext, jobId: string, signal: AbortSignal): Promise<void> {
  return withSpan("scoring job", { "job.id": jobId }, () => scoringJob(ctx, jobId, signal));
}

async function scoringJob(ctx: ScoringRunContext, jobId: string, signal: AbortSignal): Promise<void> {
  const job = await ctx.jobs.get(jobId);
  if (job?.kind !== "score" || TERMINAL.includes(job.state)) return;
  const started = performance.now();
  const log = ctx.log.child({ job_id: jobId });
  const publish = (state: JobRecord["state"], stage: string, message: string) =>
    ctx.events.publish({ jobId, state, stage, message, time: new Date() });
  const finish = async (
    state: "succeeded" | "failed" | "cancelled",
    result: Parameters<JobStore["finish"]>[2],
  ) => {
    await ctx.jobs.finish(jobId, state, result);
    publish(state, state, state === "failed" ? `failed: ${result?.error}` : state);
    const done = await ctx.jobs.get(jobId);
    if (done) ctx.onFinished?.(done, (performance.now() - started) / 1000);
  };

  try {
    if (!(await ctx.jobs.markRunning(jobId))) return; // cancelled while it was being dequeued
    // Checked again now: a link planted while the job waited in the queue must not lead outside.
    for (const [field, p, extensions, role] of [
      ["input", job.request.input, INPUT_EXTENSIONS, "input"],
      ["output", job.request.output, OUTPUT_EXTENSIONS, "output"],
      ["invalid_output", job.request.invalidOutput, [".csv"], "output"],
    ] as const) {
      const { error } = await checkScoringPath(ctx.scoringDir, field, p, extensions, role);
      if (error) throw new Error(`${field} ${error.description}`);
    }
    const production = await ctx.registry.getModelVersion(ctx.modelName, "production");
    if (!production) throw new Error(`model ${ctx.modelName} has no production version to score with`);
    const onnx = await ctx.registry.readArtifact(production.runId, ARTIFACT_ONNX);
    const path = (p: string) => resolve(ctx.scoringDir, p);
    // Outputs may name sub-folders of the scoring directory, created on demand.
    for (const p of [job.request.output, job.request.invalidOutput]) {
      await mkdir(dirname(path(p)), { recursive: true });
    }
    // Progress writes run while the task computes; a failure (e.g. a full disk) is kept for after
    // it, never left as a rejection nobody handles (which would end the server).
    let writes: Promise<void> = Promise.resolve();
    let writeFailure: unknown;
    const summary = await ctx.executor.run(
      "score",
      jobId,
      {
        input: path(job.request.input),
        output: path(job.request.output),
        invalidOutput: path(job.request.invalidOutput),
        onnx,
      },
      (p) => {
        const message = `${p.rowsScored} rows scored, ${p.rowsInvalid} invalid`;
        const fraction = p.totalRows ? Math.min(1, p.rowsRead / p.totalRows) : 0;
        writes = writes
          .then(() => ctx.jobs.progress(jobId, "score", fraction))
          .catch((error: unknown) => {
            writeFailure ??= error;
          });
        publish("running", "score", message);
      },
      signal,
    );
    await writes;
    if (writeFailure) throw writeFailure;
    const scoring = {
      rowsRead: summary.rowsRead,
      rowsScored: summary.rowsScored,
      rowsInvalid: summary.rowsInvalid,
      modelVersion: production.version,
    };
    log.info("scoring job finished", { ...scoring, seconds: summary.seconds });
    await finish("succeeded", { modelVersion: production.version, scoring });
  } catch (error) {
    if (signal.aborted && signal.reason !== CANCEL_REQUESTED) {
      await ctx.jobs.requeue(jobId);
      return;
    }
    if (error instanceof TaskCancelled || signal.aborted) {
      await finish("cancelled", { error: "cancelled by request" });
      return;
    }
    log.error("scoring job failed", { error });
    await finish("failed", { error: error instanceof Error ? error.message : String(error) });
  }
}
