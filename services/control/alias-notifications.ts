import pg from "pg";
import { SERVER_KEEPALIVE_OPTIONS, SESSION_KEEPALIVE } from "../storage/postgres.js";

/** The PostgreSQL channel on which services/registry/aliases.ts announces every committed alias move. */
export const ALIAS_MOVES_CHANNEL = "bikeshare_alias_moves";

/**
 * One session per process for PostgreSQL notifications: the alias moves a predict replica follows
 * and the job events and cancels control processes exchange (services/jobs/across-processes.ts).
 */
export interface DatabaseNotifications {
  /**
   * Calls `onMessage` with each payload sent on `channel` by any process, this one included. After
   * the session broke and came back, `onResume` is called: what was sent meanwhile was not heard.
   */
  listen(channel: string, onMessage: (payload: string) => void, onResume?: () => void): void;
  /**
   * Sends on this session, so that one process's notifications arrive in the order it sent them.
   * Dropped while the session is down or `maxPending` are still unsent: a notification is only ever
   * a hint that the listener's own polling makes sure of.
   */
  notify(channel: string, payload: string): void;
  close(): Promise<void>;
}

/**
 * LISTENs on a connection of its own (PostgreSQL delivers a NOTIFY only at its transaction's commit).
 * A broken connection is opened again every `retryMs`, and each channel's `onResume` is called once it
 * is back.
 */
export function listenOnDatabase(url: string, retryMs = 2000, maxPending = 1000): DatabaseNotifications {
  const channels = new Map<string, { onMessage: (payload: string) => void; onResume?: () => void }>();
  let client: pg.Client | undefined;
  let ready = false;
  let pending = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let everConnected = false;

  const retry = () => {
    const broken = client;
    client = undefined;
    ready = false;
    void broken?.end().catch(() => undefined);
    if (!closed) timer = setTimeout(() => void connect(), retryMs).unref();
  };
  const connect = async () => {
    const next = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: retryMs * 2,
      ...SESSION_KEEPALIVE,
      options: SERVER_KEEPALIVE_OPTIONS,
      application_name: "bikeshare notifications",
    });
    client = next;
    // A server restart ends the session with or without an error, depending on how it went.
    const lost = () => {
      if (client === next) retry();
    };
    next.on("error", lost);
    next.on("end", lost);
    next.on("notification", (message) => channels.get(message.channel)?.onMessage(message.payload ?? ""));
    try {
      await next.connect();
      for (const channel of channels.keys()) await next.query(`LISTEN ${channel}`);
    } catch {
      if (client === next) retry();
      return;
    }
    if (closed) {
      await next.end().catch(() => undefined);
      return;
    }
    ready = true;
    if (everConnected) for (const { onResume } of channels.values()) onResume?.();
    everConnected = true;
  };

  return {
    listen(channel, onMessage, onResume) {
      channels.set(channel, { onMessage, ...(onResume ? { onResume } : {}) });
      if (client === undefined && !closed && timer === undefined) void connect();
      // A channel added once connected is listened to now; one added meanwhile at connect's loop.
      else if (ready) client?.query(`LISTEN ${channel}`).catch(() => undefined);
    },
    notify(channel, payload) {
      if (!ready || !client || pending >= maxPending) return;
      pending++;
      client
        .query("SELECT pg_notify($1, $2)", [channel, payload])
        .catch(() => undefined)
        .finally(() => {
          pending--;
        });
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      const last = client;
      client = undefined;
      ready = false;
      await last?.end().catch(() => undefined);
    },
  };
}
