import { performance } from "node:perf_hooks";
import type { JobQueue } from "../../pipelines/jobs/queue.js";
import { CANCEL_REQUESTED, TaskCancelled } from "../../pipelines/jobs/tasks.js";
import type { Logger } from "../observability/log.js";
import { withSpan } from "../observability/tracing.js";
import type { CancelsAcrossProcesses } from "./across-processes.js";
import { type JobEvent, type JobEvents, outcomeEvent } from "./events.js";
import type { JobFieldsInit } from "./job-message.js";
import { type FinishResult, type JobRecord, type JobStore, type StoredJob, TERMINAL } from "./store.js";

/**
 * One lifecycle for every kind of job: claim (queued or resumed -> running), progress, the outcome
 * (succeeded, failed, cancelled), and requeue on shutdown. What a job computes is its kind's handler,
 * listed in `kinds.ts`.
 */

/** Abort reason used when the server shuts down: the job is queued again, not cancelled. */
export const SHUTDOWN = new Error("server shutting down");

export interface JobContext {
  jobs: JobStore;
  events: JobEvents;
  log: Logger;
  /** Called when a job ends, e.g. to record its duration in metrics. */
  onFinished?: (job: JobRecord, seconds: number) => void;
}

/** What a handler gets while its job runs. */
export interface JobRun {
  readonly jobId: string;
  readonly log: Logger;
  /** A progress event for watchers (not stored). */
  publish(stage: string, message: string, extra?: Partial<JobEvent>): void;
  /** Stores the stage and the fraction done. */
  progress(stage: string, fraction: number): Promise<void>;
  /** Stores the stage and progress, then publishes and logs `message`. */
  stage(name: string, progress: number, message: string): Promise<void>;
  /**
   * Queues a write made while the task computes (from its progress callback): writes run in order,
   * and the first failure (e.g. a full disk) is kept for `written`, never left as a rejection nobody
   * handles (which would end the server).
   */
  write(step: () => Promise<void>): void;
  /** Waits for the queued writes; throws the first failure. */
  written(): Promise<void>;
}

/**
 * A kind of job, in its own file: what its jobs compute once running, given the server's `Deps`
 * (registry, executor, …), and how the API shows their kind's own fields. Its requests are stored
 * by `JobStore.add(kind, …)`; `kinds.ts` lists the handlers the server runs.
 */
export interface JobHandler<J extends StoredJob = StoredJob, Deps = never> {
  kind: J["kind"];
  /** Names the job's span and its failure log line, e.g. "training job". */
  label: string;
  /** Does the job's work once it is running; resolves with what its success records. */
  run(job: J, run: JobRun, signal: AbortSignal, deps: Deps): Promise<FinishResult<J["result"]>>;
  /** The error text stored for a failed job. */
  failureMessage?(error: unknown, deps: Deps): string;
  /** The kind's own fields of the API's `Job` message (e.g. a scoring job's files and row counts). */
  toProto?(job: J): JobFieldsInit;
}

/** A handler with its dependencies, ready for `jobRunner`. */
export interface BoundJobHandler {
  kind: string;
  label: string;
  run(job: StoredJob, run: JobRun, signal: AbortSignal): Promise<FinishResult>;
  failureMessage?(error: unknown): string;
}

/** Binds a handler to what it needs from the server. */
export function withDeps<J extends StoredJob, Deps>(
  handler: JobHandler<J, Deps>,
  deps: Deps,
): BoundJobHandler {
  const { failureMessage } = handler;
  return {
    kind: handler.kind,
    label: handler.label,
    // The job's kind is this handler's, so its request and result are the handler's own types.
    run: (job, run, signal) => handler.run(job as J, run, signal, deps),
    ...(failureMessage ? { failureMessage: (error: unknown) => failureMessage(error, deps) } : {}),
  };
}

/** The job stopped because it was cancelled by request (not by a shutdown, not by failing). */
export function cancelledBy(error: unknown, signal: AbortSignal): boolean {
  return (signal.aborted && signal.reason === CANCEL_REQUESTED) || error instanceof TaskCancelled;
}

/** The queue's job function: reads the job and runs it with the handler of its kind. */
export function jobRunner(ctx: JobContext, handlers: readonly BoundJobHandler[]) {
  const byKind = new Map(handlers.map((h) => [h.kind, h]));
  return async (jobId: string, signal: AbortSignal): Promise<void> => {
    const job = await ctx.jobs.get(jobId);
    if (!job || TERMINAL.includes(job.state)) return;
    const handler = byKind.get(job.kind);
    if (!handler) throw new Error(`job ${jobId} is of kind ${job.kind}, which has no handler here`);
    await withSpan(handler.label, { "job.id": jobId }, () => runWith(ctx, handler, job, signal));
  };
}

async function runWith(
  ctx: JobContext,
  handler: BoundJobHandler,
  job: StoredJob,
  signal: AbortSignal,
): Promise<void> {
  const jobId = job.id;
  const started = performance.now();
  const log = ctx.log.child({ job_id: jobId });
  const publish: JobRun["publish"] = (stage, message, extra = {}) =>
    ctx.events.publish({ jobId, state: "running", stage, message, time: new Date(), ...extra });
  let writes: Promise<void> = Promise.resolve();
  let writeFailure: unknown;
  const run: JobRun = {
    jobId,
    log,
    publish,
    progress: (stage, fraction) => ctx.jobs.progress(jobId, stage, fraction),
    async stage(name, progress, message) {
      await ctx.jobs.progress(jobId, name, progress);
      publish(name, message);
      log.info(message, { stage: name });
    },
    write(step) {
      writes = writes.then(step).catch((error: unknown) => {
        writeFailure ??= error;
      });
    },
    async written() {
      await writes;
      if (writeFailure) throw writeFailure;
    },
  };
  const finish = async (state: "succeeded" | "failed" | "cancelled", result: FinishResult) => {
    await ctx.jobs.finish(jobId, state, result);
    ctx.events.publish(outcomeEvent({ id: jobId, state, error: result.error, finishedAt: new Date() }));
    const done = await ctx.jobs.get(jobId);
    if (done) ctx.onFinished?.(done, (performance.now() - started) / 1000);
  };

  try {
    if (!(await ctx.jobs.markRunning(jobId))) {
      // Cancelled while it was being dequeued. On a shared database the cancel may have been asked for
      // while no process ran it (left running by a process that stopped): then it ends here, once.
      if (await ctx.jobs.endCancelled(jobId, "cancelled by request")) {
        const ended = await ctx.jobs.get(jobId);
        if (ended) ctx.events.publish(outcomeEvent(ended));
      }
      return;
    }
    await finish("succeeded", await handler.run(job, run, signal));
  } catch (error) {
    if (signal.aborted && signal.reason !== CANCEL_REQUESTED) {
      await ctx.jobs.requeue(jobId);
      log.info("job interrupted by shutdown; it will run again at the next start");
      return;
    }
    if (cancelledBy(error, signal)) {
      await finish("cancelled", { error: "cancelled by request" });
      return;
    }
    log.error(`${handler.label} failed`, { error });
    const message =
      handler.failureMessage?.(error) ?? (error instanceof Error ? error.message : String(error));
    await finish("failed", { error: message });
  }
}

/**
 * Stops a job: a waiting one ends here as cancelled; a running one is aborted and its runner records
 * the cancellation. The caller checks first that the job has not ended.
 */
export async function cancelJob(
  deps: { jobs: JobStore; events: JobEvents; queue: JobQueue; across?: CancelsAcrossProcesses },
  job: StoredJob,
  reason: string,
): Promise<void> {
  if (deps.across) {
    // Another process may run the job or hold it in its queue: the request goes on its row, which
    // markRunning honours and whoever runs it reads. A queued job ends here (endCancelled records it
    // once, should its runner find it first), a running one where it runs.
    const why = reason || "cancelled before it started";
    const state = await deps.jobs.requestCancel(job.id, why);
    deps.queue.cancel(job.id);
    if (state === "running") deps.across.announce(job.id);
    else if (state === "queued" && (await deps.jobs.endCancelled(job.id, why)))
      deps.events.publish(
        outcomeEvent({ id: job.id, state: "cancelled", error: why, finishedAt: new Date() }),
      );
    return;
  }
  const wasQueued = job.state === "queued";
  deps.queue.cancel(job.id);
  if (wasQueued) {
    await deps.jobs.finish(job.id, "cancelled", { error: reason || "cancelled before it started" });
    deps.events.publish({
      jobId: job.id,
      state: "cancelled",
      stage: "cancelled",
      message: "cancelled",
      time: new Date(),
    });
  }
}

/** Queues again the jobs a previous process accepted but did not finish, in order; returns them. */
export async function resumeUnfinished(jobs: JobStore, queue: JobQueue, log: Logger): Promise<JobRecord[]> {
  const unfinished = await jobs.unfinished();
  for (const job of unfinished) {
    log.info("resuming a job accepted before the restart", { job_id: job.id, state: job.state });
    await queue.enqueue(job.id);
  }
  return unfinished;
}
