import pg from "pg";
import type { Logger } from "../observability/log.js";
import { SERVER_KEEPALIVE_OPTIONS, SESSION_KEEPALIVE } from "../storage/postgres.js";

/**
 * Which process runs the work that must happen once for the whole deployment: scheduled monitoring
 * checks and the retraining they decide, resuming jobs an earlier process left unfinished, and the
 * first-start bootstrap training. Every control process serves RPCs; only the leader runs these.
 */
export interface Leadership {
  readonly isLeader: boolean;
  /** Asks the database right now, just before acting as the leader: `isLeader` may be up to one check old. */
  confirm(): Promise<boolean>;
  /** Called on every change, after `isLeader` changed. Returns an unsubscribe. */
  onChange(listener: (leader: boolean) => void): () => void;
  close(): Promise<void>;
}

/** The embedded database: only one process can open its file, so that process always leads. */
export function soleLeader(): Leadership {
  return { isLeader: true, confirm: async () => true, onChange: () => () => {}, close: async () => {} };
}

/** A predict replica: it serves, and never runs the control plane's once-per-deployment work. */
export function notLeader(): Leadership {
  return { isLeader: false, confirm: async () => false, onChange: () => () => {}, close: async () => {} };
}

/** The lock's key in pg_try_advisory_lock(int4, int4): "bike" in ASCII, then 1 for the control leader. */
const LOCK_KEY: readonly [number, number] = [0x62696b65, 1];

export interface AdvisoryLockOptions {
  /** How often a follower tries the lock and the leader checks that its session is alive. */
  retryMs?: number;
}

/**
 * Leadership held as a PostgreSQL session-level advisory lock on a connection of its own, kept open.
 * The lock dies with its session, so a leader that crashes, is killed or loses its network frees it
 * without any lease to expire: the server sees the connection close and a follower's next try (every
 * `retryMs`, 2 s) wins. The leader checks its own session as often; when the check fails it steps
 * down at once, before anyone else can take the lock, so two leaders never act at the same time as far
 * as this process can tell.
 */
export class AdvisoryLockLeadership implements Leadership {
  isLeader = false;
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private ticking: Promise<void> = Promise.resolve();
  private readonly listeners = new Set<(leader: boolean) => void>();
  private readonly retryMs: number;

  private constructor(
    private readonly url: string,
    private readonly log: Logger,
    options: AdvisoryLockOptions,
  ) {
    this.retryMs = options.retryMs ?? 2000;
  }

  /** Resolves after the first try, so that a lone process knows it leads before it starts its schedulers. */
  static async start(
    url: string,
    log: Logger,
    options: AdvisoryLockOptions = {},
  ): Promise<AdvisoryLockLeadership> {
    const leadership = new AdvisoryLockLeadership(url, log, options);
    await leadership.tick();
    return leadership;
  }

  onChange(listener: (leader: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  async confirm(): Promise<boolean> {
    if (!this.isLeader || !this.client) return false;
    await this.checkSession(this.client);
    return this.isLeader;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.ticking;
    // Ending the session releases the lock: a follower takes over at its next try, not after a timeout.
    await this.drop();
  }

  private tick(): Promise<void> {
    this.ticking = this.attempt().finally(() => {
      if (!this.closed) this.timer = setTimeout(() => void this.tick(), this.retryMs).unref();
    });
    return this.ticking;
  }

  private async attempt(): Promise<void> {
    try {
      const client = this.client ?? (await this.connect());
      if (this.isLeader) {
        await this.checkSession(client);
        return;
      }
      const { rows } = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [
        ...LOCK_KEY,
      ]);
      if (rows[0]?.ok && !this.closed) this.set(true);
    } catch {
      await this.drop();
    }
  }

  /** The lock lives as long as the session: a session that no longer answers means it is gone. */
  private async checkSession(client: pg.Client): Promise<void> {
    try {
      await client.query("SELECT 1");
    } catch (error) {
      if (this.isLeader)
        this.log.error("lost the control-plane leadership: its database session failed", { error });
      await this.drop();
    }
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.url,
      connectionTimeoutMillis: this.retryMs * 2,
      // A leader cut off from the server must notice before a follower could have taken the lock.
      query_timeout: this.retryMs * 2,
      ...SESSION_KEEPALIVE,
      options: SERVER_KEEPALIVE_OPTIONS,
      application_name: "bikeshare leader election",
    });
    // An idle connection that breaks emits here; the next tick's query fails and steps down.
    client.on("error", () => {});
    this.client = client;
    await client.connect();
    return client;
  }

  private async drop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.set(false);
    await client?.end().catch(() => undefined);
  }

  private set(leader: boolean): void {
    if (leader === this.isLeader) return;
    this.isLeader = leader;
    this.log.info(leader ? "leading the control plane" : "no longer leading the control plane", {
      pid: process.pid,
    });
    for (const listener of [...this.listeners]) listener(leader);
  }
}
