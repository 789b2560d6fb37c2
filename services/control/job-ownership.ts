import pg from "pg";
import { SERVER_KEEPALIVE_OPTIONS, SESSION_KEEPALIVE } from "../storage/postgres.js";

/**
 * Which process runs a job when several control processes share one database. Jobs carry no owner in
 * the store, and a new leader resumes every job left queued or running: without this, one still
 * running in a live process would run twice. The process that runs a job holds a lock named after it
 * for the whole run; another process that finds the lock held skips the job (its owner is alive),
 * and one that finds it free runs it (nobody else is running it, or its owner died).
 */
export interface JobOwnership {
  /** Runs `work` unless another process runs the job now; false when it skipped it. */
  run(jobId: string, work: () => Promise<void>): Promise<boolean>;
  close(): Promise<void>;
}

/** The embedded database: one process, which owns every job. */
export function soleOwner(): JobOwnership {
  return {
    run: async (_jobId, work) => {
      await work();
      return true;
    },
    close: async () => {},
  };
}

/** pg_try_advisory_lock(int4, int4): "bjob" in ASCII, then the job id's hashtext. */
const JOB_LOCK_CLASS = 0x626a6f62;

/**
 * Session-level advisory locks on a connection of their own: they die with the process, so a job
 * whose owner crashed is free to resume at once. A lost connection releases every lock this process
 * holds; its running jobs go on, and a new leader could start one of them again (it registers its
 * version at most once), which is logged.
 */
export class AdvisoryJobOwnership implements JobOwnership {
  private client: Promise<pg.Client> | undefined;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly onLost: (error: unknown) => void,
  ) {}

  async run(jobId: string, work: () => Promise<void>): Promise<boolean> {
    const client = await this.connection();
    const { rows } = await client.query<{ ok: boolean }>(
      "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok",
      [JOB_LOCK_CLASS, jobId],
    );
    if (!rows[0]?.ok) return false;
    try {
      await work();
    } finally {
      await client
        .query("SELECT pg_advisory_unlock($1, hashtext($2))", [JOB_LOCK_CLASS, jobId])
        .catch(() => undefined); // a dead session released it already
    }
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client;
    this.client = undefined;
    await (await client?.catch(() => undefined))?.end().catch(() => undefined);
  }

  private connection(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new Error("job ownership is closed"));
    this.client ??= (async () => {
      const client = new pg.Client({
        connectionString: this.url,
        ...SESSION_KEEPALIVE,
        options: SERVER_KEEPALIVE_OPTIONS,
        application_name: "bikeshare job locks",
      });
      const forget = (error: unknown) => {
        if (this.client === pending) this.client = undefined;
        if (!this.closed) this.onLost(error);
      };
      client.on("error", forget);
      client.on("end", () => forget(new Error("the job-lock session ended")));
      await client.connect();
      return client;
    })();
    const pending = this.client;
    pending.catch(() => {
      if (this.client === pending) this.client = undefined;
    });
    return pending;
  }
}
