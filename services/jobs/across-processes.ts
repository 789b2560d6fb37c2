import { randomUUID } from "node:crypto";
import { type JobEvent, JobEvents } from "./events.js";
import type { JobStore } from "./store.js";

/**
 * Jobs on a database several control processes share (docs/deployment.md, "Roles"): a client reaches
 * any of them, but a job runs in the one that accepted it (or resumed it). Its events and the cancels
 * asked for it travel by PostgreSQL NOTIFY on the session each process already LISTENs on for alias
 * moves, and polling of the jobs' rows makes sure of what a lost notification would miss. On the
 * embedded database none of this exists: one process, which runs every job.
 */

export const JOB_EVENTS_CHANNEL = "bikeshare_job_events";
export const JOB_CANCELS_CHANNEL = "bikeshare_job_cancels";

/** Within the ~2 s a cancel or an outcome may take to be seen through another process. */
export const ACROSS_POLL_MS = 1000;

/** NOTIFY payloads stop at 8,000 bytes: a long failure message is cut (the job's row keeps it whole). */
const MAX_MESSAGE_CHARS = 2000;

/** The notification session (services/control/alias-notifications.ts's `DatabaseNotifications`). */
export interface Notifications {
  listen(channel: string, onMessage: (payload: string) => void, onResume?: () => void): void;
  notify(channel: string, payload: string): void;
}

interface Wire {
  origin: string;
  event: Omit<JobEvent, "time"> & { time: string };
}

/**
 * Job events that every process hears: each sends what it publishes, and receives what the others
 * send (its own come back from PostgreSQL too, and are skipped). Watchers poll the job's row as well
 * (see `JobEvents`): that is what makes them end.
 */
export function sharedJobEvents(channel: Notifications, jobs: JobStore, pollMs = ACROSS_POLL_MS): JobEvents {
  const origin = randomUUID();
  const events = new JobEvents({
    send(event) {
      const wire: Wire = {
        origin,
        event: {
          ...event,
          message: event.message.slice(0, MAX_MESSAGE_CHARS),
          time: event.time.toISOString(),
        },
      };
      channel.notify(JOB_EVENTS_CHANNEL, JSON.stringify(wire));
    },
    read: (jobId) => jobs.get(jobId),
    pollMs,
  });
  channel.listen(JOB_EVENTS_CHANNEL, (payload) => {
    let wire: Wire;
    try {
      wire = JSON.parse(payload) as Wire;
    } catch {
      return; // not ours: someone else NOTIFYing on the channel
    }
    if (wire.origin === origin || typeof wire.event?.jobId !== "string") return;
    events.receive({ ...wire.event, time: new Date(wire.event.time) });
  });
  return events;
}

/**
 * Cancels asked through any process, for the jobs this one runs. The request is stored on the job's
 * row first (`JobStore.requestCancel`), then announced: the announcement stops the job at once, and
 * the row, read every `pollMs` while this process runs jobs (never when it runs none), stops it when
 * the announcement was lost.
 */
export class CancelsAcrossProcesses {
  private readonly running = new Map<string, () => void>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly channel: Notifications,
    private readonly jobs: JobStore,
    private readonly pollMs = ACROSS_POLL_MS,
  ) {
    channel.listen(
      JOB_CANCELS_CHANNEL,
      (jobId) => this.running.get(jobId)?.(),
      () => void this.poll(),
    );
  }

  /** Tells whichever process runs the job that its cancel was asked for (after `requestCancel`). */
  announce(jobId: string): void {
    this.channel.notify(JOB_CANCELS_CHANNEL, jobId);
  }

  /** Runs `work`, the job's run in this process, calling `cancel` if its cancel is asked for elsewhere. */
  async follow<T>(jobId: string, cancel: () => void, work: () => Promise<T>): Promise<T> {
    this.running.set(jobId, cancel);
    this.timer ??= setInterval(() => void this.poll(), this.pollMs).unref();
    try {
      return await work();
    } finally {
      this.running.delete(jobId);
      if (this.running.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }
  }

  private async poll(): Promise<void> {
    if (this.polling || this.running.size === 0) return;
    this.polling = true;
    try {
      // An unreachable database is read again at the next tick.
      const asked = await this.jobs.cancelRequested([...this.running.keys()]).catch(() => []);
      for (const jobId of asked) this.running.get(jobId)?.();
    } finally {
      this.polling = false;
    }
  }
}
