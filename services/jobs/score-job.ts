import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { HandlerContext } from "@connectrpc/connect";
import type { StartScoringRequest, StartScoringResponse } from "../../gen/bikeshare/v1/predict_pb.js";
import type { JobQueue } from "../../pipelines/jobs/queue.js";
import type { JobExecutor } from "../../pipelines/jobs/tasks.js";
import type { ScoringTaskInput } from "../../pipelines/scoring/job.js";
import { actorOf } from "../auth/principal.js";
import { invalidArgument } from "../errors.js";
import { checkIntervalLevel } from "../predict/predict-service.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../registry/model-card.js";
import type { Registry } from "../registry/registry.js";
import { jobMessage } from "./job-message.js";
import { type JobContext, type JobHandler, type JobRun, jobRunner, withDeps } from "./lifecycle.js";
import { checkIdempotencyKey, checkText, MAX_REASON_CHARS } from "./request-limits.js";
import { checkScoringPath } from "./scoring-paths.js";
import type { FinishResult, JobStore, StoredJob } from "./store.js";

/** A scoring job: files relative to the server's scoring directory. */
export interface ScoringRequest {
  input: string;
  output: string;
  invalidOutput: string;
  reason: string;
  /** `lower`/`upper` columns at this level (StartScoringRequest.interval_level). */
  intervalLevel?: number;
}

export interface ScoringResult {
  rowsRead: number;
  rowsScored: number;
  rowsInvalid: number;
  modelVersion: string;
}

export type ScoringJob = StoredJob<"score", ScoringRequest, ScoringResult>;

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
    checkText(violations, "reason", req.reason, MAX_REASON_CHARS, { lines: true });
    checkIdempotencyKey(violations, req.idempotencyKey);
    if (violations.length === 0) {
      // The job writes the output and the invalid rows beside their names and reads the input while
      // writing: one file named twice would make the job fail after queueing (score-file.ts).
      const invalidFull = invalidOutput?.full ?? resolve(deps.scoringDir, `${req.output}.invalid.csv`);
      if (output.full === input.full)
        violations.push({
          field: "output",
          type: "range",
          description: `must differ from input, got ${req.output}`,
        });
      if (invalidFull === input.full || invalidFull === output.full)
        violations.push({
          field: "invalid_output",
          type: "range",
          description: `must differ from input and output (three different files), got ${req.invalidOutput}`,
        });
    }
    if (violations.length > 0) throw invalidArgument(violations);
    checkIntervalLevel(req.intervalLevel);
    const request: ScoringRequest = {
      input: req.input,
      output: req.output,
      invalidOutput: req.invalidOutput || `${req.output}.invalid.csv`,
      reason: req.reason || "manual",
      ...(req.intervalLevel !== undefined ? { intervalLevel: req.intervalLevel } : {}),
    };
    const { job, created } = await deps.jobs.add(
      "score",
      request,
      actorOf(ctx.values),
      req.idempotencyKey || undefined,
    );
    if (created) await deps.queue.enqueue(job.id);
    // Keys are scoped by kind (store.ts), so the job found is a scoring job; narrowed for the types.
    const fields = job.kind === "score" ? scoringJobs.toProto?.(job) : undefined;
    return { job: jobMessage(job, fields) } as StartScoringResponse;
  };
}

export interface ScoringDeps {
  registry: Registry;
  executor: JobExecutor;
  modelName: string;
  scoringDir: string;
}

export type ScoringRunContext = JobContext & ScoringDeps;

/** Scoring jobs: a file scored with the production model of the moment the job starts. */
export const scoringJobs: JobHandler<ScoringJob, ScoringDeps> = {
  kind: "score",
  label: "scoring job",
  run: (job, run, signal, deps) => scoringJob(deps, job, run, signal),
  toProto: (job) => ({
    scoring: {
      input: job.request.input,
      output: job.request.output,
      invalidOutput: job.request.invalidOutput,
      rowsRead: BigInt(job.result?.rowsRead ?? 0),
      rowsScored: BigInt(job.result?.rowsScored ?? 0),
      rowsInvalid: BigInt(job.result?.rowsInvalid ?? 0),
      modelVersion: job.result?.modelVersion ?? "",
    },
  }),
};

/** Runs one scoring job (for tools and tests that have no queue). */
export function runScoringJob(ctx: ScoringRunContext, jobId: string, signal: AbortSignal): Promise<void> {
  return jobRunner(ctx, [withDeps(scoringJobs, ctx)])(jobId, signal);
}

async function scoringJob(
  ctx: ScoringDeps,
  job: ScoringJob,
  run: JobRun,
  signal: AbortSignal,
): Promise<FinishResult<ScoringResult>> {
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
  const level = job.request.intervalLevel;
  let interval: ScoringTaskInput["interval"];
  if (level !== undefined) {
    const card = JSON.parse(
      (await ctx.registry.readArtifact(production.runId, ARTIFACT_CARD)).toString("utf8"),
    ) as ModelCard;
    if (card.calibration === undefined) {
      throw new Error(
        `interval_level: model ${ctx.modelName} v${production.version} has no interval calibration (trained before intervals existed); retrain it or score without interval_level`,
      );
    }
    interval = { level, calibration: card.calibration };
  }
  const path = (p: string) => resolve(ctx.scoringDir, p);
  // Outputs may name sub-folders of the scoring directory, created on demand.
  for (const p of [job.request.output, job.request.invalidOutput]) {
    await mkdir(dirname(path(p)), { recursive: true });
  }
  const summary = await ctx.executor.run(
    "score",
    run.jobId,
    {
      input: path(job.request.input),
      output: path(job.request.output),
      invalidOutput: path(job.request.invalidOutput),
      onnx,
      ...(interval ? { interval } : {}),
    },
    (p) => {
      const message = `${p.rowsScored} rows scored, ${p.rowsInvalid} invalid`;
      const fraction = p.totalRows ? Math.min(1, p.rowsRead / p.totalRows) : 0;
      run.write(() => run.progress("score", fraction));
      run.publish("score", message);
    },
    signal,
  );
  await run.written();
  const scoring: ScoringResult = {
    rowsRead: summary.rowsRead,
    rowsScored: summary.rowsScored,
    rowsInvalid: summary.rowsInvalid,
    modelVersion: production.version,
  };
  run.log.info("scoring job finished", { ...scoring, seconds: summary.seconds });
  return { modelVersion: production.version, result: scoring };
}
