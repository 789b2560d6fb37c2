import pg from "pg";

/** The PostgreSQL channel on which services/registry/aliases.ts announces every committed alias move. */
export const ALIAS_MOVES_CHANNEL = "bikeshare_alias_moves";

export interface AliasMovesListener {
  close(): Promise<void>;
}

/**
 * LISTENs on a connection of its own and calls `onMove` for each alias move any process commits
 * (PostgreSQL delivers a NOTIFY only at its transaction's commit). A broken connection is opened again
 * every `retryMs`, and `onMove` is called once it is back, since moves made meanwhile were not heard.
 * It only makes the swap quicker: LiveModel's polling catches every move without it.
 */
export function listenForAliasMoves(url: string, onMove: () => void, retryMs = 2000): AliasMovesListener {
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let everConnected = false;

  const retry = () => {
    const broken = client;
    client = undefined;
    void broken?.end().catch(() => undefined);
    if (!closed) timer = setTimeout(() => void connect(), retryMs).unref();
  };
  const connect = async () => {
    const next = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: retryMs * 2,
      keepAlive: true,
      application_name: "bikeshare alias moves",
    });
    client = next;
    // A server restart ends the session with or without an error, depending on how it went.
    const lost = () => {
      if (client === next) retry();
    };
    next.on("error", lost);
    next.on("end", lost);
    next.on("notification", () => onMove());
    try {
      await next.connect();
      await next.query(`LISTEN ${ALIAS_MOVES_CHANNEL}`);
    } catch {
      if (client === next) retry();
      return;
    }
    if (closed) {
      await next.end().catch(() => undefined);
      return;
    }
    if (everConnected) onMove();
    everConnected = true;
  };
  void connect();

  return {
    async close() {
      closed = true;
      clearTimeout(timer);
      const last = client;
      client = undefined;
      await last?.end().catch(() => undefined);
    },
  };
}
