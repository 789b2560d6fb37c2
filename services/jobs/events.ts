import { EventEmitter } from "node:events";
import type { JobState } from "./store.js";

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

/**
 * Progress of jobs as a stream. Events are kept per job (bounded) so that a watcher who
 * connects late still sees the whole story, then follows live until the job ends.
 */
export class JobEvents {
  private readonly history = new Map<string, JobEvent[]>();
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: JobEvent): void {
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
    try {
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
      this.emitter.off(jobId, onEvent);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
