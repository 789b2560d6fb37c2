import { type Context, context } from "@opentelemetry/api";
import { CANCEL_REQUESTED } from "./cancelled.js";

/**
 * Where accepted jobs wait in the server, and how many run at once. The server always has this
 * in-process queue, BullMQ or not: what it runs is the server's job function (claim, follow, record),
 * and that function hands the computation to a JobExecutor, a child process or, when REDIS_URL is
 * set, BullMQ workers (`bullmq.ts`'s `BullExecutor`). BullMQ is therefore an executor, not a queue
 * behind this interface.
 */
export type RunJob = (jobId: string, signal: AbortSignal) => Promise<void>;

export interface JobQueue {
  /** Accepts a job; resolves once it is durably queued (not when it has run). */
  enqueue(jobId: string): Promise<void>;
  /** Stops a waiting job from starting, or aborts a running one (its task stops at its next check). */
  cancel(jobId: string): boolean;
  /** Aborts running jobs with `reason` and waits for them to settle; waiting jobs stay queued for the next start. */
  close(reason?: unknown): Promise<void>;
}

/**
 * Runs up to `concurrency` jobs at once in this process: one by default (training in a child process
 * uses every core); the server allows more when BullMQ workers compute.
 */
export class InProcessQueue implements JobQueue {
  private readonly waiting: string[] = [];
  /** The trace context of whoever queued each job (e.g. the StartTraining call), for the job's spans. */
  private readonly origins = new Map<string, Context>();
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private closed = false;

  constructor(
    private readonly handler: RunJob,
    private readonly concurrency = 1,
    private readonly onError: (jobId: string, error: unknown) => void = () => {},
  ) {}

  async enqueue(jobId: string): Promise<void> {
    if (this.closed) throw new Error("the job queue is closed");
    if (this.waiting.includes(jobId) || this.running.has(jobId)) return;
    this.waiting.push(jobId);
    this.origins.set(jobId, context.active());
    this.pump();
  }

  cancel(jobId: string): boolean {
    const index = this.waiting.indexOf(jobId);
    if (index >= 0) {
      this.waiting.splice(index, 1);
      return true;
    }
    const job = this.running.get(jobId);
    if (!job) return false;
    job.controller.abort(CANCEL_REQUESTED);
    return true;
  }

  get depth(): number {
    return this.waiting.length + this.running.size;
  }

  async close(reason: unknown = new Error("queue closed")): Promise<void> {
    this.closed = true;
    this.waiting.length = 0;
    for (const job of this.running.values()) job.controller.abort(reason);
    await Promise.allSettled([...this.running.values()].map((j) => j.done));
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.concurrency && this.waiting.length > 0) {
      const jobId = this.waiting.shift() as string;
      const controller = new AbortController();
      const origin = this.origins.get(jobId) ?? context.active();
      this.origins.delete(jobId);
      const done = context
        .with(origin, () => this.handler(jobId, controller.signal))
        .catch((error: unknown) => this.onError(jobId, error))
        .finally(() => {
          this.running.delete(jobId);
          this.pump();
        });
      this.running.set(jobId, { controller, done });
    }
  }
}
