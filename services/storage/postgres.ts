import { AsyncLocalStorage } from "node:async_hooks";
import pg from "pg";
import {
  type Queryable,
  type SqlDatabase,
  type SqlParams,
  StoreUnavailableError,
  StoreUnwritableError,
} from "./database.js";

/**
 * All shared state in one PostgreSQL database, for several processes at once.
 *
 * Transactions keep the embedded store's guarantee that they never interleave: within a process they
 * run one at a time (on one pooled connection each), and across processes each takes the same
 * transaction-scoped advisory lock first. The stores read `MAX(seq) + 1` and write it back inside a
 * transaction; under READ COMMITTED that would race without the lock. Statements outside a
 * transaction (reads, prediction-log batches) run concurrently on the pool.
 */

/** `pg_advisory_xact_lock` key serialising every read-write transaction (an arbitrary constant). */
const TRANSACTION_LOCK = 7_311_642_001;

/** Transactions here wait on nothing but the database; one idle this long belongs to a stuck process. */
const IDLE_IN_TRANSACTION_MS = 120_000;

const OID = { int8: 20, timestamp: 1114, numeric: 1700 } as const;

/** TIMESTAMP (without time zone) holds UTC here, as in DuckDB; pg's default reads it as local time. */
function parseTimestamp(text: string): Date | string {
  const date = new Date(`${text.replace(" ", "T")}Z`);
  return Number.isNaN(date.getTime()) ? text : date;
}

const parsers = new Map<number, (text: string) => unknown>([
  [OID.int8, (text) => BigInt(text)],
  [OID.timestamp, parseTimestamp],
  [OID.numeric, (text) => Number(text)],
]);

const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    (format ?? "text") === "text" && parsers.has(oid)
      ? parsers.get(oid)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** A Date as a TIMESTAMP literal in UTC (pg's own conversion uses the process's time zone). */
function timestampText(value: Date): string {
  const ms = value.getTime();
  if (!Number.isFinite(ms)) throw new TypeError("cannot bind an invalid Date");
  return value.toISOString().slice(0, -1);
}

function toPgValue(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) return timestampText(value);
  if (value instanceof Float64Array) return Array.from(value);
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(toPgValue);
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * `$name` parameters become `$1`… in order of first use (PostgreSQL knows positional ones only);
 * quoted strings, quoted identifiers and `::` casts are left alone.
 */
export function positional(sql: string, params: SqlParams | undefined): { text: string; values: unknown[] } {
  if (params === undefined) return { text: sql, values: [] };
  if (Array.isArray(params)) return { text: sql, values: params.map(toPgValue) };
  const named = params as Readonly<Record<string, unknown>>;
  const index = new Map<string, number>();
  const values: unknown[] = [];
  const text = sql.replace(/'(?:[^']|'')*'|"(?:[^"]|"")*"|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, name) => {
    if (name === undefined) return match;
    if (!(name in named)) throw new Error(`no value for the SQL parameter $${name}`);
    let i = index.get(name);
    if (i === undefined) {
      values.push(toPgValue(named[name]));
      i = values.length;
      index.set(name, i);
    }
    return `$${i}`;
  });
  return { text, values };
}

/** The URL with its password replaced, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
  }
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EPIPE",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections: the server is full for now, not refusing the statement
]);

function isConnectionError(error: Error): boolean {
  const code = String((error as { code?: unknown }).code ?? "");
  return (
    CONNECTION_CODES.has(code) ||
    code.startsWith("08") ||
    /connection terminated|timeout exceeded when trying to connect|Connection ended unexpectedly/i.test(
      error.message,
    )
  );
}

/** disk_full, and read_only_sql_transaction (a standby, or a cluster made read-only): writes wait for the operator. */
const UNWRITABLE_CODES = new Set(["53100", "25006"]);

interface ActiveTransaction {
  readonly owner: PgDatabase;
  readonly tx: Queryable;
  open: boolean;
}

export interface PgOptions {
  /** Called when writes start failing for lack of space, and when they work again. */
  onWritable?: (writable: boolean, error?: Error) => void;
  /** Pool size; transactions use one connection at a time, reads the rest. */
  maxConnections?: number;
  /** How long a statement waits for a connection before the database counts as unavailable. */
  connectTimeoutMs?: number;
  /** False: migrations are checked, never applied (a predict replica; see SqlDatabase.schemaChanges). */
  schemaChanges?: boolean;
}

/**
 * Keepalives on every session, both ways: the client notices a server that vanished without closing
 * (a failover, a dead host), and the server ends the session of a client whose host died within ~10 s,
 * which frees that session's advisory locks (the leadership, job locks, the transaction lock) for
 * another process instead of holding them for the kernel's default of two hours.
 */
export const SESSION_KEEPALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 3_000 } as const;
export const SERVER_KEEPALIVE_OPTIONS =
  "-c tcp_keepalives_idle=3 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3";

export class PgDatabase implements SqlDatabase {
  readonly dialect = "postgres";
  readonly path: string;
  readonly schemaChanges: boolean;
  writable = true;
  private lastUnwritable: StoreUnwritableError | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly context = new AsyncLocalStorage<ActiveTransaction>();
  /** Transactions running in `context`; it is disabled when none is. */
  private contextUsers = 0;
  private readonly onWritable: (writable: boolean, error?: Error) => void;

  private constructor(
    private readonly pool: pg.Pool,
    url: string,
    options: PgOptions,
  ) {
    this.path = redactUrl(url);
    this.schemaChanges = options.schemaChanges ?? true;
    this.onWritable = options.onWritable ?? (() => {});
  }

  /** Connects (one round trip, so a wrong URL fails at start rather than at the first request). */
  static async open(url: string, options: PgOptions = {}): Promise<PgDatabase> {
    const pool = new pg.Pool({
      connectionString: url,
      max: options.maxConnections ?? 8,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      // TIMESTAMP columns hold UTC, and now()::TIMESTAMP must give UTC too. A process frozen inside a
      // transaction would hold the transaction lock of every process: the server ends such a session.
      options: `-c TimeZone=UTC -c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_MS} ${SERVER_KEEPALIVE_OPTIONS}`,
      application_name: "bikeshare",
      ...SESSION_KEEPALIVE,
      types,
    });
    // An idle connection the server dropped: the next statement reconnects, and fails loudly if it cannot.
    pool.on("error", () => {});
    const db = new PgDatabase(pool, url, options);
    try {
      await db.all("SELECT 1");
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
    return db;
  }

  all<T = Record<string, unknown>>(sql: string, params?: SqlParams): Promise<T[]> {
    const active = this.activeTransaction();
    if (active) return active.tx.all<T>(sql, params);
    if (this.closed) return Promise.reject(new Error(`database ${this.path} is closed`));
    return this.exec<T>(this.pool, sql, params);
  }

  async run(sql: string, params?: SqlParams): Promise<void> {
    await this.all(sql, params);
  }

  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const active = this.activeTransaction();
    if (active) return fn(active.tx);
    if (this.closed) return Promise.reject(new Error(`database ${this.path} is closed`));
    const result = this.tail.then(() => this.runTransaction(fn));
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async runTransaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw this.translate(error);
    }
    let broken = false;
    const state: ActiveTransaction = {
      owner: this,
      open: true,
      tx: {
        all: <R>(sql: string, params?: SqlParams) => {
          if (!state.open) return Promise.reject(new Error("the transaction is already over"));
          return this.exec<R>(client, sql, params);
        },
        run: async (sql: string, params?: SqlParams) => {
          if (!state.open) throw new Error("the transaction is already over");
          await this.exec(client, sql, params);
        },
      },
    };
    try {
      await this.exec(client, "BEGIN");
      await this.exec(client, "SELECT pg_advisory_xact_lock($1)", [TRANSACTION_LOCK]);
      let result: T;
      try {
        result = await this.inContext(state, () => fn(state.tx));
      } catch (error) {
        state.open = false;
        await client.query("ROLLBACK").catch(() => {
          broken = true;
        });
        throw error;
      }
      state.open = false;
      await this.exec(client, "COMMIT");
      this.markWritable();
      return result;
    } catch (error) {
      if (error instanceof StoreUnavailableError) broken = true;
      // BEGIN or the lock failed (a statement or lock timeout, a cancel): the session is in an aborted
      // transaction, which every later statement on it would fail with. ROLLBACK outside one is a no-op.
      else
        await client.query("ROLLBACK").catch(() => {
          broken = true;
        });
      throw error;
    } finally {
      state.open = false;
      // A connection that failed mid-transaction is not returned to the pool for reuse.
      client.release(broken);
    }
  }

  async unwritable(): Promise<Error | undefined> {
    return this.writable ? undefined : this.lastUnwritable;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.pool.end();
  }

  /**
   * Runs `fn` with `state` as its transaction context, and turns the context tracking off again once no
   * transaction runs: on Node 20 an enabled AsyncLocalStorage installs promise hooks that run for every
   * promise of every request (a few % of a Predict's CPU, and garbage), though only transactions read it.
   */
  private async inContext<T>(state: ActiveTransaction, fn: () => Promise<T>): Promise<T> {
    this.contextUsers++;
    try {
      return await this.context.run(state, fn);
    } finally {
      if (--this.contextUsers === 0) this.context.disable();
    }
  }

  private activeTransaction(): ActiveTransaction | undefined {
    const active = this.context.getStore();
    return active && active.owner === this && active.open ? active : undefined;
  }

  private async exec<T>(on: pg.Pool | pg.PoolClient, sql: string, params?: SqlParams): Promise<T[]> {
    const { text, values } = positional(sql, params);
    try {
      const result = await on.query(text, values);
      // A multi-statement string gives one result per statement; the last one's rows are the answer.
      const last = Array.isArray(result) ? result[result.length - 1] : result;
      if (on === this.pool && /^\s*(insert|update|delete)\b/i.test(sql)) this.markWritable();
      return (last?.rows ?? []) as T[];
    } catch (error) {
      throw this.translate(error);
    }
  }

  private translate(error: unknown): unknown {
    if (!(error instanceof Error)) return error;
    if (isConnectionError(error)) return new StoreUnavailableError(this.path, error);
    const code = String((error as { code?: unknown }).code ?? "");
    if (UNWRITABLE_CODES.has(code)) {
      const unwritable = new StoreUnwritableError(this.path, error);
      this.lastUnwritable = unwritable;
      if (this.writable) {
        this.writable = false;
        this.onWritable(false, unwritable);
      }
      return unwritable;
    }
    return error;
  }

  private markWritable(): void {
    if (this.writable) return;
    this.writable = true;
    this.onWritable(true);
  }
}
