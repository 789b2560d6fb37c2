import { EventEmitter } from "node:events";
import type { JobRecord, JobState } from "./store.js";

export interface JobEvent {
  jobId: string;
  state: JobState;
  stage: string;
  candidate?: string;
  round?: number;
  trainMetric?: number;
  validMetric?: number;
  message: string;
  time: Date;
}

const TERMINAL = new Set<JobState>(["succeeded", "failed", "cancelled"]);
const MAX_EVENTS_PER_JOB = 20_000;

/** The event that ends a job's stream, the same whether its runner published it or its row shows it. */
export function outcomeEvent(job: Pick<JobRecord, "id" | "state" | "error" | "finishedAt">): JobEvent {
  return {
    jobId: job.id,
    state: job.state,
    stage: job.state,
    message: job.state === "failed" ? `failed: ${job.error}` : job.state,
    time: job.finishedAt ?? new Date(),
  };
}

/** What the events need on a database several processes share (`across-processes.ts` provides it). */
export interface SharedJobEvents {
  /** Sends an event this process published to the other processes, which `receive` it. */
  send(event: JobEvent): void;
  /** The job's row, read by watchers every `pollMs`. */
  read(jobId: string): Promise<JobRecord | undefined>;
  pollMs: number;
}

/**
 * Progress of jobs as a stream. Events are kept per job (bounded) so that a watcher who
 * connects late still sees the whole story, then follows live until the job ends.
 *
 * On a shared database the job may run in another process, whose events arrive by NOTIFY, which is
 * only a hint: one sent while a session was down is lost for good. So a watcher there also reads the
 * job's row every `pollMs`, and ends with the outcome the row shows if the terminal event was not
 * heard. That is exact without storing every event: the runner stores the outcome before it publishes
 * it, a stream ends at its first terminal event (no duplicate), and the row never misses one. What a
 * lost notification can cost is progress events, which the row's stage and progress sum up anyway.
 */
export class JobEvents {
  private readonly history = new Map<string, JobEvent[]>();
  private readonly emitter = new EventEmitter();

  constructor(private readonly shared?: SharedJobEvents) {
    this.emitter.setMaxListeners(0);
  }

  publish(event: JobEvent): void {
    this.record(event);
    this.shared?.send(event);
  }

  /**
   * An event another process published. Its job's history is dropped at its end: a watcher who comes
   * later reads the outcome from the job's row (TrainService.WatchJob), so every process need not keep
   * the story of every job.
   */
  receive(event: JobEvent): void {
    this.record(event);
    if (TERMINAL.has(event.state)) this.history.delete(event.jobId);
  }

  private record(event: JobEvent): void {
    const list = this.history.get(event.jobId) ?? [];
    if (list.length >= MAX_EVENTS_PER_JOB) list.splice(0, list.length - MAX_EVENTS_PER_JOB + 1);
    list.push(event);
    this.history.set(event.jobId, list);
    this.emitter.emit(event.jobId, event);
  }

  /** Past events of the job, then live ones, ending after a terminal event or when `signal` aborts. */
  async *watch(jobId: string, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    const pending: JobEvent[] = [...(this.history.get(jobId) ?? [])];
    let wake: (() => void) | undefined;
    const onEvent = (event: JobEvent) => {
      pending.push(event);
      wake?.();
    };
    const onAbort = () => wake?.();
    this.emitter.on(jobId, onEvent);
    signal?.addEventListener("abort", onAbort);
    const { shared } = this;
    let polling: NodeJS.Timeout | undefined;
    let ended = false;
    try {
      if (shared) {
        // Subscribed first, then read: an event published meanwhile is not missed, only maybe preceded
        // by the row's summary of the job so far (what a watcher of a job that runs elsewhere starts from).
        const heardBefore = pending.length > 0;
        const job = await shared.read(jobId).catch(() => undefined);
        if (job && !heardBefore) pending.unshift(summaryOf(job));
        const poll = async () => {
          const now = await shared.read(jobId).catch(() => undefined);
          if (ended) return;
          if (now && TERMINAL.has(now.state)) {
            pending.push(outcomeEvent(now));
            wake?.();
          } else polling = setTimeout(() => void poll(), shared.pollMs);
        };
        polling = setTimeout(() => void poll(), shared.pollMs);
      }
      for (;;) {
        while (pending.length > 0) {
          const event = pending.shift() as JobEvent;
          yield event;
          if (TERMINAL.has(event.state)) return;
        }
        if (signal?.aborted) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      ended = true;
      clearTimeout(polling);
      this.emitter.off(jobId, onEvent);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function summaryOf(job: JobRecord): JobEvent {
  if (TERMINAL.has(job.state)) return outcomeEvent(job);
  const message =
    job.state === "queued" ? `queued: ${job.reason}` : `${job.stage} (${Math.round(job.progress * 100)}%)`;
  return { jobId: job.id, state: job.state, stage: job.stage, message, time: new Date() };
}
