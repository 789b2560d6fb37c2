/**
 * Jobs over BullMQ on Redis, for when REDIS_URL is set: the server submits each task to one queue
 * and `bikeshare worker` processes, on any machine, compute it and hand back the outcome. The
 * server alone writes the registry, so a task retried after a worker died still registers once.
 */
import { setTimeout as delay } from "node:timers/promises";
import { context, propagation, ROOT_CONTEXT } from "@opentelemetry/api";
import { Job, Queue, QueueEvents, UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import { rateLimited } from "../rate-limited.js";
import {
  CANCEL_REQUESTED,
  isTaskKind,
  type JobExecutor,
  progressBatches,
  TASKS,
  type Task,
  TaskCancelled,
  type TaskKind,
  type TaskTypes,
} from "./tasks.js";

export const QUEUE_NAME = "bikeshare-jobs";
/** Workers listen here for the ids of jobs to abort: only the process running a job can stop it. */
const CANCEL_CHANNEL = "bikeshare:cancel";
const CANCELLED_REASON = "cancelled by request";
/**
 * Where a worker keeps a task's encoded output before BullMQ marks the job completed. If the
 * worker's lock on the job was lost meanwhile (e.g. Redis away for longer than the lock), BullMQ
 * runs the job again: that attempt returns the kept output instead of computing it all again.
 */
export const outcomeKey = (jobId: string) => `bikeshare:outcome:${jobId}`;
const OUTCOME_TTL_SECONDS = 86_400;

/**
 * Commands wait for Redis through an outage instead of failing after a few retries: BullMQ asks for
 * `maxRetriesPerRequest: null` (its workers warn about any other value and override it).
 */
function connection(url: string) {
  return { url, maxRetriesPerRequest: null };
}

// Task inputs and outputs carry typed arrays (ONNX bytes, matrices), which JSON would turn into
// objects of numbers: they travel as base64.
const TYPED = { Uint8Array, Float32Array, Float64Array } as const;
type TypedName = keyof typeof TYPED;

export function encodePayload(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string) {
    // The holder's own value: a Buffer's toJSON has already turned `v` into {type, data} here.
    const v = this[key];
    for (const [name, type] of Object.entries(TYPED)) {
      if (v instanceof type) {
        return { $typed: name, base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
      }
    }
    return v instanceof Object && "toJSON" in v && typeof v.toJSON === "function" ? v.toJSON(key) : v;
  });
}

export function decodePayload<T>(text: string): T {
  return JSON.parse(text, (_key, v: unknown) => {
    if (v && typeof v === "object" && "$typed" in v && "base64" in v) {
      const { $typed, base64 } = v as { $typed: TypedName; base64: string };
      const bytes = Buffer.from(base64, "base64");
      const copy = new Uint8Array(bytes).buffer; // aligned, and not shared with Buffer's pool
      const type = TYPED[$typed];
      return new type(copy, 0, copy.byteLength / type.BYTES_PER_ELEMENT);
    }
    return v;
  }) as T;
}

/** Which client of the queue reported an error, as the `component` label of its metric. */
export type QueueComponent =
  | "queue"
  | "queue_events"
  | "cancel_publisher"
  | "worker"
  | "cancel_subscriber"
  | "schedule_queue"
  | "schedule_worker"
  | "outcome_store";

/** Gets every error of a queue client: Redis being away is reported on each of them at every retry. */
export type QueueErrorHandler = (component: QueueComponent, error: Error) => void;

/**
 * `count` sees every error; `log` at most one per component every `intervalMs`, with how many
 * were left out since the last one, because ioredis reports an outage at each reconnection attempt.
 * The errors of an interval are logged when it ends, even if no other error follows.
 */
export function rateLimitedQueueErrors(
  count: (component: QueueComponent) => void,
  log: (component: QueueComponent, error: Error, suppressed: number) => void,
  intervalMs = 10_000,
): QueueErrorHandler {
  const limiters = new Map<QueueComponent, (error: Error) => void>();
  return (component, error) => {
    count(component);
    let limited = limiters.get(component);
    if (!limited) {
      // A line stands for `n` errors and shows the latest of them: the other n - 1 were left out.
      limited = rateLimited<Error>(intervalMs, (n, latest) => log(component, latest, n - 1));
      limiters.set(component, limited);
    }
    limited(error);
  };
}

/** For callers that pass no handler: a warning on stderr, rate-limited as above. */
function warnQueueErrors(): QueueErrorHandler {
  return rateLimitedQueueErrors(
    () => {},
    (component, error, suppressed) =>
      process.emitWarning(
        `job queue ${component}: ${error.message}${suppressed > 0 ? ` (${suppressed} more not shown)` : ""}`,
      ),
  );
}

export interface BullExecutorOptions {
  /** Attempts per task: a worker that dies mid-task leaves it to another one. */
  attempts?: number;
  backoffMs?: number;
  /** How long to wait for a job's finish event before looking at the job itself again. */
  recheckMs?: number;
  /** How long an outcome read from the job itself waits for the job's finish event (and the progress before it). */
  eventGraceMs?: number;
  /** Errors of the queue's Redis clients (e.g. Redis away): they are survivable, but must be seen. */
  onError?: QueueErrorHandler;
}

/** Submits tasks to the queue and follows them: progress through QueueEvents, then the outcome. */
export class BullExecutor implements JobExecutor {
  private readonly queue: Queue;
  private readonly events: QueueEvents;
  private readonly publisher: Redis;
  private readonly progress = new Map<string, (data: unknown) => void>();

  constructor(
    url: string,
    private readonly options: BullExecutorOptions = {},
  ) {
    this.queue = new Queue(QUEUE_NAME, { connection: connection(url) });
    this.events = new QueueEvents(QUEUE_NAME, { connection: connection(url) });
    // Workers send progress in batches (see progressBatches).
    this.events.on("progress", ({ jobId, data }) => {
      const report = this.progress.get(jobId);
      if (report && Array.isArray(data)) for (const progress of data) report(progress);
    });
    this.publisher = new Redis(url, { maxRetriesPerRequest: null });
    // Redis being away is survivable (jobs wait for it); ioredis reports it as errors on every client,
    // and an "error" event nobody listens to would end the process.
    // Every job being followed listens on both (one listener each): as many as the server runs at once.
    this.queue.setMaxListeners(0);
    this.events.setMaxListeners(0);
    const report = options.onError ?? warnQueueErrors();
    this.queue.on("error", (error) => report("queue", error));
    this.events.on("error", (error) => report("queue_events", error));
    this.publisher.on("error", (error) => report("cancel_publisher", error));
  }

  async run<K extends TaskKind>(
    kind: K,
    jobId: string,
    input: TaskTypes[K]["input"],
    report: (progress: TaskTypes[K]["progress"]) => void,
    signal: AbortSignal,
  ): Promise<TaskTypes[K]["output"]> {
    this.progress.set(jobId, (data) => report(data as TaskTypes[K]["progress"]));
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        if (signal.reason === CANCEL_REQUESTED) {
          void this.cancel(jobId);
          reject(new TaskCancelled());
        } else {
          // e.g. the server shuts down: the task goes on, and the next start picks up its outcome.
          reject(signal.reason);
        }
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    // Only raced below: an abort after the outcome came back has nobody waiting for it.
    aborted.catch(() => {});
    let stopped = false;
    try {
      const finished = this.outputOf(kind, jobId, input, () => stopped);
      // Raced with `aborted`: when the abort wins, a later failure of the task has nobody waiting for it.
      finished.catch(() => {});
      const output = await Promise.race([finished, aborted]);
      return decodePayload<TaskTypes[K]["output"]>(output);
    } catch (error) {
      if (error instanceof Error && error.message.startsWith(CANCELLED_REASON)) throw new TaskCancelled();
      throw error;
    } finally {
      stopped = true;
      this.progress.delete(jobId);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * The job's return value, or its failure as an error. The job id is ours: a restarted server
   * finds the job it submitted before, finished or not, and a job that Redis lost (e.g. restarted
   * without persistence) is submitted again.
   */
  private async outputOf<K extends TaskKind>(
    kind: K,
    jobId: string,
    input: TaskTypes[K]["input"],
    stopped: () => boolean,
  ): Promise<string> {
    // In Redis' event stream a job's finish event comes after all of its progress. An outcome read
    // from the job itself, before that event got here, waits a little for it; otherwise the last
    // progress (e.g. the end of a candidate, which the registry records) would be lost.
    let eventSeen = false;
    let onFinishEvent = (_event: { jobId: string }) => {};
    const finishEvent = new Promise<void>((resolve) => {
      onFinishEvent = (event) => {
        if (event.jobId !== jobId) return;
        eventSeen = true;
        resolve();
      };
    });
    const waitForFinishEvent = async () => {
      if (!eventSeen)
        await Promise.race([
          finishEvent,
          delay(this.options.eventGraceMs ?? 2000, undefined, { ref: false }),
        ]);
    };
    this.events.on("completed", onFinishEvent);
    this.events.on("failed", onFinishEvent);
    try {
      await this.events.waitUntilReady();
      while (!stopped()) {
        const job = (await Job.fromId(this.queue, jobId)) ?? (await this.submit(kind, jobId, input));
        let output: string;
        try {
          // Reads the job's state and outcome in one Redis script, then waits for its events. The
          // `job` object is a snapshot: one that finished after it was read shows no return value.
          output = (await job.waitUntilFinished(this.events, this.options.recheckMs ?? 5000)) as string;
        } catch (error) {
          // Events missed while Redis was away: look at the job itself again.
          if (error instanceof Error && /timed out before finishing/.test(error.message)) continue;
          await waitForFinishEvent();
          throw error;
        }
        await waitForFinishEvent();
        return output;
      }
      throw new Error("stopped waiting");
    } finally {
      this.events.off("completed", onFinishEvent);
      this.events.off("failed", onFinishEvent);
    }
  }

  private submit<K extends TaskKind>(kind: K, jobId: string, input: TaskTypes[K]["input"]): Promise<Job> {
    // The W3C trace context of the job, so that the worker's spans continue its trace.
    const trace: Record<string, string> = {};
    propagation.inject(context.active(), trace);
    return this.queue.add(
      kind,
      { input: encodePayload(input), trace },
      {
        jobId,
        attempts: this.options.attempts ?? 3,
        backoff: { type: "exponential", delay: this.options.backoffMs ?? 2000 },
        removeOnComplete: { age: 7 * 86_400 },
        removeOnFail: { age: 30 * 86_400 },
      },
    );
  }

  private async cancel(jobId: string): Promise<void> {
    const job = await Job.fromId(this.queue, jobId);
    if (!job) return;
    if (await job.isActive()) {
      await this.publisher.publish(CANCEL_CHANNEL, jobId);
    } else {
      await job.remove().catch(() => this.publisher.publish(CANCEL_CHANNEL, jobId));
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.events.close(), this.queue.close()]);
    this.publisher.disconnect();
  }
}

export interface WorkerOptions {
  concurrency?: number;
  /** How long a job stays locked to a worker without a renewal; a dead worker's job is retried after it. */
  lockDurationMs?: number;
  onStarted?: (kind: TaskKind, jobId: string, attempt: number) => void;
  /** An attempt that found the job's output kept by an earlier attempt, and returned it. */
  onReused?: (kind: TaskKind, jobId: string, attempt: number) => void;
  /** Wraps each task, e.g. in a span; it runs in the trace context the job was submitted from. */
  around?: <T>(kind: TaskKind, jobId: string, task: () => Promise<T>) => Promise<T>;
  onFinished?: (
    kind: TaskKind,
    jobId: string,
    outcome: "succeeded" | "failed" | "cancelled",
    seconds: number,
    error?: unknown,
  ) => void;
  /** BullMQ's own troubles, e.g. a lock it could not renew (the job may then run twice) or Redis away. */
  onError?: QueueErrorHandler;
}

export interface RunningWorker {
  close(): Promise<void>;
}

/** A `bikeshare worker`: takes tasks from the queue and runs them in this process. */
export async function startWorker(url: string, options: WorkerOptions = {}): Promise<RunningWorker> {
  const lockDuration = options.lockDurationMs ?? 30_000;
  const report = options.onError ?? warnQueueErrors();
  const store = new Redis(url, { maxRetriesPerRequest: null });
  store.on("error", (error) => report("outcome_store", error));
  const worker = new Worker(
    QUEUE_NAME,
    async (job, _token, signal) => {
      const kind = job.name;
      if (!isTaskKind(kind)) throw new UnrecoverableError(`unknown task kind ${JSON.stringify(kind)}`);
      const jobId = job.id as string;
      const kept = await store.get(outcomeKey(jobId));
      if (kept !== null) {
        options.onReused?.(kind, jobId, job.attemptsMade + 1);
        return kept;
      }
      const started = performance.now();
      options.onStarted?.(kind, jobId, job.attemptsMade + 1);
      const outcome = (name: "succeeded" | "failed" | "cancelled", error?: unknown) =>
        options.onFinished?.(kind, jobId, name, (performance.now() - started) / 1000, error);
      const abort = signal ?? new AbortController().signal;
      const data = job.data as { input: string; trace?: Record<string, string> };
      const around = options.around ?? ((_kind, _jobId, task) => task());
      try {
        const input = decodePayload<TaskTypes[typeof kind]["input"]>(data.input);
        const progress = progressBatches<unknown>(
          (batch) => void job.updateProgress(batch).catch((error: Error) => report("worker", error)),
        );
        const output = await context
          .with(propagation.extract(ROOT_CONTEXT, data.trace ?? {}), () =>
            around(kind, jobId, () => (TASKS[kind] as Task<typeof kind>)(input, progress.push, abort)),
          )
          .finally(progress.flush);
        const encoded = encodePayload(output);
        await store.set(outcomeKey(jobId), encoded, "EX", OUTCOME_TTL_SECONDS);
        outcome("succeeded");
        return encoded;
      } catch (error) {
        if (error instanceof TaskCancelled || abort.aborted) {
          outcome("cancelled");
          throw new UnrecoverableError(CANCELLED_REASON);
        }
        outcome("failed", error);
        throw error;
      }
    },
    {
      connection: connection(url),
      concurrency: options.concurrency ?? 1,
      lockDuration,
      stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)),
      // A job whose worker died is retried rather than failed at once.
      maxStalledCount: 2,
    },
  );
  worker.on("error", (error) => report("worker", error));
  const subscriber = new Redis(url, { maxRetriesPerRequest: null });
  subscriber.on("error", (error) => report("cancel_subscriber", error));
  subscriber.on("message", (_channel, jobId: string) => worker.cancelJob(jobId, CANCELLED_REASON));
  await subscriber.subscribe(CANCEL_CHANNEL);
  await worker.waitUntilReady();
  return {
    async close() {
      await worker.close();
      subscriber.disconnect();
      store.disconnect();
    },
  };
}

const SCHEDULE_QUEUE = "bikeshare-schedules";

/**
 * Runs `handler` every `everyMs` through a BullMQ job scheduler: one run per period however many
 * server processes share the Redis, and a period missed while every server was down runs when
 * one comes back.
 */
export async function scheduleRepeating(
  url: string,
  name: string,
  everyMs: number,
  handler: () => Promise<void>,
  onError: QueueErrorHandler = warnQueueErrors(),
): Promise<RunningWorker> {
  const queue = new Queue(SCHEDULE_QUEUE, { connection: connection(url) });
  queue.on("error", (error) => onError("schedule_queue", error));
  await queue.upsertJobScheduler(name, { every: everyMs }, { name });
  const worker = new Worker(
    SCHEDULE_QUEUE,
    async (job) => {
      if (job.name === name) await handler();
    },
    { connection: connection(url), concurrency: 1 },
  );
  worker.on("error", (error) => onError("schedule_worker", error));
  return {
    async close() {
      await worker.close();
      await queue.close();
    },
  };
}
