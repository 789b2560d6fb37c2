import { AsyncLocalStorage } from "node:async_hooks";
import { constants } from "node:fs";
import { access, chmod, mkdir, stat, statfs } from "node:fs/promises";
import { dirname } from "node:path";
import {
  blobValue,
  DOUBLE,
  type DuckDBConnection,
  DuckDBInstance,
  type DuckDBType,
  type DuckDBValue,
  LIST,
  listValue,
  timestampValue,
} from "@duckdb/node-api";
import { BikeshareError } from "../../core/errors.js";

/**
 * One embedded DuckDB file shared by the whole server process (registry, job store, prediction log).
 *
 * Every statement and every transaction goes through one promise queue, so two callers never
 * interleave on the single connection: a transaction sees only its own statements between BEGIN and
 * COMMIT. Durability is DuckDB's: a COMMIT returns once its write-ahead-log entry is written and
 * synced, so a process killed right after a commit keeps it, and one killed mid-transaction leaves
 * nothing of it (the uncommitted part never reached the WAL). Nothing is cached in this class.
 *
 * Parameters: `$1`-style with an array, or `$name` with an object. JS values are bound as-is
 * (number, string, boolean, bigint, null), plus `undefined` → NULL, `Date` → TIMESTAMP (UTC),
 * `Uint8Array` → BLOB and arrays → LIST. Rows come back as plain JS objects: BIGINT/HUGEINT as
 * `bigint` (cast in SQL when a number is wanted), TIMESTAMP as `Date`.
 */

export type SqlParams = readonly unknown[] | Readonly<Record<string, unknown>>;

/** What a transaction callback gets: the same two calls, running inside the transaction. */
export interface Queryable {
  all<T = Record<string, unknown>>(sql: string, params?: SqlParams): Promise<T[]>;
  run(sql: string, params?: SqlParams): Promise<void>;
}

export type Dialect = "duckdb" | "postgres";

/**
 * What every store needs of a backend: embedded DuckDB (`Database`) or PostgreSQL (`PgDatabase`).
 * Both give callers the same JS types (BIGINT as bigint, TIMESTAMP as Date in UTC, BLOB/BYTEA as
 * Uint8Array, DOUBLE PRECISION[] as number[]), so a statement both dialects read needs no branch.
 */
export interface SqlDatabase extends Queryable {
  readonly dialect: Dialect;
  /** Names the database in messages: a file path, or a URL without its password. */
  readonly path: string;
  /** False while writes fail for lack of space. */
  readonly writable: boolean;
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Why new work should not be accepted now, if it should not. */
  unwritable(): Promise<Error | undefined>;
  /**
   * False in a predict replica: `migrate` only checks that the schema is current and never changes it
   * (the control plane applies migrations). Unset: migrations are applied.
   */
  readonly schemaChanges?: boolean;
  close(): Promise<void>;
}

interface ActiveTransaction {
  readonly owner: Database;
  readonly tx: Queryable;
  open: boolean;
}

function toDuckValue(value: unknown): DuckDBValue {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) {
    const ms = value.getTime();
    if (!Number.isFinite(ms)) throw new TypeError("cannot bind an invalid Date");
    return timestampValue(BigInt(ms) * 1000n);
  }
  if (value instanceof Float64Array) return listValue(Array.from(value));
  if (value instanceof Uint8Array) return blobValue(value);
  if (Array.isArray(value)) return listValue(value.map(toDuckValue));
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean":
    case "bigint":
      return value;
    case "object":
      // DuckDB value objects (timestampValue(…), decimalValue(…), …) pass through.
      return value as DuckDBValue;
    default:
      throw new TypeError(`cannot bind a ${typeof value} as a SQL parameter`);
  }
}

function toDuckParams(
  params: SqlParams | undefined,
): DuckDBValue[] | Record<string, DuckDBValue> | undefined {
  if (params === undefined) return undefined;
  if (Array.isArray(params)) return params.map(toDuckValue);
  const out: Record<string, DuckDBValue> = {};
  for (const [k, v] of Object.entries(params)) out[k] = toDuckValue(v);
  return out;
}

/**
 * DuckDB infers a list parameter's element type from its values, so [0, 0.5] would become an
 * INTEGER list and fail on 0.5. A Float64Array parameter is bound as DOUBLE[] explicitly. A whole
 * number past int64 (1e19, 1e308: a metric value) would be inferred BIGINT and refused: DOUBLE too.
 */
function paramTypes(
  params: SqlParams | undefined,
): DuckDBType[] | Record<string, DuckDBType | undefined> | undefined {
  if (params === undefined) return undefined;
  const typeOf = (v: unknown) =>
    v instanceof Float64Array
      ? LIST(DOUBLE)
      : typeof v === "number" && Number.isInteger(v) && Math.abs(v) >= 2 ** 63
        ? DOUBLE
        : undefined;
  if (Array.isArray(params)) {
    if (!params.some((v) => typeOf(v) !== undefined)) return undefined;
    // Untyped entries are inferred from their values, as without a types array.
    return params.map((v) => typeOf(v)) as DuckDBType[];
  }
  const entries = Object.entries(params);
  if (!entries.some(([, v]) => typeOf(v) !== undefined)) return undefined;
  return Object.fromEntries(entries.map(([k, v]) => [k, typeOf(v)]));
}

/** A write refused because the disk is full or read-only: an operator's problem, not a bug. */
/** resource_exhausted, as gRPC defines it for a full file system: the client may retry once space is freed. */
export class StoreUnwritableError extends BikeshareError {
  constructor(
    readonly path: string,
    cause: Error,
  ) {
    super("resource_exhausted", `the database ${path} cannot be written: ${cause.message}`, { cause });
    this.name = "StoreUnwritableError";
  }
}

/** The database server cannot be reached (or went away mid-statement): unavailable, retried later. */
export class StoreUnavailableError extends BikeshareError {
  constructor(
    readonly path: string,
    cause: Error,
  ) {
    super("unavailable", `the database ${path} is unavailable: ${cause.message}`, { cause });
    this.name = "StoreUnavailableError";
  }
}

const UNWRITABLE = /no space left on device|read-only file system|disk quota exceeded/i;
const MIN_FREE_BYTES = 16 * 1024 * 1024;
const WRITE_STATEMENT = /^\s*(insert|update|delete|create|alter|drop|commit|checkpoint)\b/i;
/** Statements that change rows (schema statements at start must still run on a full disk, as no-ops). */
const DATA_CHANGE = /^\s*(insert|update|delete)\b/i;

/**
 * Makes sure the database file's folder exists and takes writes; true when the file is new. The
 * errors name the setting and say what is wrong in one line ("read-only", "does not exist").
 */
async function prepareFile(path: string, setting?: string): Promise<boolean> {
  const dir = dirname(path);
  const label = setting ? `${setting}=${path}` : path;
  const code = (error: unknown) => (error as NodeJS.ErrnoException)?.code ?? "";
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    if (code(error) === "EROFS" || code(error) === "EACCES" || code(error) === "EPERM") {
      throw new Error(
        `${label}: the folder ${dir} does not exist and cannot be created: its parent is read-only (${code(error)})`,
      );
    }
    throw new Error(
      `${label}: the folder ${dir} does not exist and cannot be created (${code(error) || String(error)})`,
      {
        cause: error,
      },
    );
  }
  try {
    await access(dir, constants.W_OK);
  } catch (error) {
    throw new Error(
      `${label}: the folder ${dir} is read-only (${code(error)}); the database needs to write there`,
      {
        cause: error,
      },
    );
  }
  try {
    await stat(path);
    return false;
  } catch (error) {
    if (code(error) === "ENOENT") return true;
    throw error;
  }
}

export class Database implements SqlDatabase {
  readonly dialect = "duckdb";
  /** Tail of the queue; never rejects. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private onWritable: (writable: boolean, error?: Error) => void = () => {};
  /** False after a write failed for lack of space, until a write succeeds again. */
  writable = true;
  private lastUnwritable: StoreUnwritableError | undefined;
  /** A statement inside a transaction proves nothing about the disk until its COMMIT. */
  private inTransaction = false;
  private readonly context = new AsyncLocalStorage<ActiveTransaction>();
  /** Transactions running in `context`; it is disabled when none is. */
  private contextUsers = 0;

  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    private readonly connection: DuckDBConnection,
  ) {}

  /**
   * Opens (or creates) the file; `":memory:"` gives a throw-away database. Creates the parent folder.
   * `setting` names where the path came from (e.g. BIKESHARE_DB), for errors an operator can act on.
   */
  static async open(
    path: string,
    options: {
      setting?: string;
      /** Called when writes start failing for lack of space (or a read-only disk), and when they work again. */
      onWritable?: (writable: boolean, error?: Error) => void;
    } = {},
  ): Promise<Database> {
    const created = path !== ":memory:" && (await prepareFile(path, options.setting));
    let instance: DuckDBInstance;
    try {
      instance = await DuckDBInstance.create(path);
    } catch (error) {
      if (!options.setting || !(error instanceof Error)) throw error;
      throw new Error(`${options.setting}=${path}: ${error.message}`, { cause: error });
    }
    // The file holds the registry, jobs and logged predictions: for its owner only. DuckDB creates
    // it with the umask's mode and refuses an empty file made beforehand, so it is narrowed here.
    if (created) await chmod(path, 0o600);
    try {
      const connection = await instance.connect();
      const db = new Database(path, instance, connection);
      if (options.onWritable) db.onWritable = options.onWritable;
      return db;
    } catch (error) {
      instance.closeSync();
      throw error;
    }
  }

  /** Runs one statement and returns its rows. Inside a transaction's callback it joins that transaction. */
  all<T = Record<string, unknown>>(sql: string, params?: SqlParams): Promise<T[]> {
    const active = this.activeTransaction();
    if (active) return active.tx.all<T>(sql, params);
    return this.enqueue(() => this.exec<T>(sql, params));
  }

  /** Runs one statement, discarding any rows. */
  async run(sql: string, params?: SqlParams): Promise<void> {
    await this.all(sql, params);
  }

  /**
   * Runs `fn` between BEGIN and COMMIT; ROLLBACK when it throws (the error is rethrown). No other
   * statement runs on the connection meanwhile. A `transaction` (or `all`/`run` on this Database)
   * called from inside `fn` joins the running transaction instead of waiting for it.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const active = this.activeTransaction();
    if (active) return fn(active.tx);
    return this.enqueue(async () => {
      await this.exec("BEGIN TRANSACTION");
      this.inTransaction = true;
      const state: ActiveTransaction = {
        owner: this,
        open: true,
        tx: {
          all: <R>(sql: string, params?: SqlParams) => {
            if (!state.open) return Promise.reject(new Error("the transaction is already over"));
            return this.exec<R>(sql, params);
          },
          run: async (sql: string, params?: SqlParams) => {
            if (!state.open) throw new Error("the transaction is already over");
            await this.exec(sql, params);
          },
        },
      };
      let result: T;
      try {
        result = await this.inContext(state, () => fn(state.tx));
      } catch (error) {
        state.open = false;
        this.inTransaction = false;
        try {
          await this.exec("ROLLBACK");
        } catch {
          // The transaction may already be aborted by DuckDB; the original error matters.
        }
        throw error;
      }
      state.open = false;
      this.inTransaction = false;
      try {
        await this.exec("COMMIT");
      } catch (error) {
        try {
          await this.exec("ROLLBACK");
        } catch {
          // Nothing left to roll back.
        }
        throw error;
      }
      return result;
    });
  }

  /** Waits for queued work, checkpoints the WAL into the file and closes. Later calls reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    const finish = this.enqueue(async () => {
      try {
        await this.exec("CHECKPOINT");
      } finally {
        this.closed = true;
        this.connection.closeSync();
        this.instance.closeSync();
      }
    });
    await finish;
  }

  /**
   * Why new work should not be accepted: the last write failed for lack of space and the disk is
   * still full. Small writes may still succeed there, but a job accepted now could not finish.
   */
  async unwritable(): Promise<StoreUnwritableError | undefined> {
    if (this.writable || (await this.hasRoom())) return undefined;
    return this.lastUnwritable;
  }

  /**
   * On a nearly full disk small writes still fit in space DuckDB allocated earlier: one that
   * succeeds does not mean the store is healthy again, free space on the disk does.
   */
  private async hasRoom(): Promise<boolean> {
    try {
      const fs = await statfs(dirname(this.path));
      return fs.bavail * fs.bsize >= MIN_FREE_BYTES;
    } catch (error) {
      // A file system that cannot tell: the successful write is all we know. Otherwise ask again next write.
      return ["ENOSYS", "ENOTSUP", "EOPNOTSUPP"].includes((error as NodeJS.ErrnoException).code ?? "");
    }
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

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`database ${this.path} is closed`));
    const result = this.tail.then(() => {
      if (this.closed) throw new Error(`database ${this.path} is closed`);
      return work();
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async exec<T>(sql: string, params?: SqlParams): Promise<T[]> {
    // DuckDB 1.5 aborts the whole process (a FatalException while it reverts the index entries of a
    // commit the disk refused: "Failed to append to PRIMARY_…"), so a change is refused here, before
    // DuckDB sees it, while the disk has less room than MIN_FREE_BYTES.
    if (this.path !== ":memory:" && DATA_CHANGE.test(sql) && !(await this.hasRoom())) {
      throw this.unwritableNow(
        new Error(
          `no space left on device: less than ${MIN_FREE_BYTES >> 20} MiB free on ${dirname(this.path)}`,
        ),
      );
    }
    let rows: T[];
    try {
      const reader = await this.connection.runAndReadAll(sql, toDuckParams(params), paramTypes(params));
      rows = reader.getRowObjectsJS() as T[];
    } catch (error) {
      if (!(error instanceof Error && UNWRITABLE.test(error.message))) throw error;
      throw this.unwritableNow(error);
    }
    if (!this.writable && !this.inTransaction && WRITE_STATEMENT.test(sql) && (await this.hasRoom())) {
      this.writable = true;
      this.onWritable(true);
    }
    return rows;
  }

  private unwritableNow(cause: Error): StoreUnwritableError {
    const unwritable = new StoreUnwritableError(this.path, cause);
    this.lastUnwritable = unwritable;
    if (this.writable) {
      this.writable = false;
      this.onWritable(false, unwritable);
    }
    return unwritable;
  }
}
