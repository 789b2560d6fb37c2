import { unlink } from "node:fs/promises";
import { RAW_FIELD_NAMES, type RawRecord } from "../../core/features/index.js";
import { type SqlDatabase, StoreUnavailableError } from "../storage/database.js";
import { migrate } from "../storage/migrations.js";
import { encodeRecord, PredictionSpool } from "./prediction-spool.js";

export interface LoggedPrediction {
  /** With `row`, the entry's key: a replay of the spool skips entries the table already holds. */
  requestId: string;
  /** Row within a batch request; 0 for single predictions. */
  row: number;
  modelVersion: string;
  /** Start of the hour predicted (epoch ms), when the caller sent it: the key actuals join on. */
  hourStart?: number;
  record: RawRecord;
  prediction: number;
  /** When the prediction was served (epoch ms). */
  servedAt: number;
  /** The interval served with the prediction, when the caller asked for one (live coverage is computed from these). */
  lower?: number;
  upper?: number;
  intervalLevel?: number;
}

/** What a start found in the spool of an earlier process and put into the table. */
export interface SpoolReplay {
  path: string;
  entries: number;
  /** Entries not in the table yet (the others had been written before the process stopped). */
  inserted: number;
  /** Bytes of a torn last record, skipped: its write never finished, so it was never acknowledged. */
  tornBytes: number;
}

export interface PredictionLogOptions {
  /** Entries held in memory at most; beyond that new entries are dropped and counted. */
  capacity: number;
  /** Entries written per insert. */
  batchSize: number;
  /** Longest time an entry waits in memory before it is written. */
  flushIntervalMs: number;
  /**
   * How often the timer's flushes start a new spool segment (so that the written ones can be removed).
   * A new segment costs a close, a link, an unlink and a directory sync on the append path, and every
   * answer arriving meanwhile waits for them (5–200 ms on a busy disk): at every 250 ms flush that put
   * 2–14% of the answers behind one at 1,000 predictions/s. Committed entries left in the open segment
   * longer cost only a longer replay after a crash, which skips the rows the table already holds.
   * An explicit `flush()` (a monitoring check, close) always starts a new one. The default stays at every
   * flush: with 5 s the next segment's zero-fill grew to megabytes in one synced write, and two
   * bench/transport.ts runs on this shared machine gave worse p99s at 1,000 req/s, not better.
   */
  sealIntervalMs: number;
  /**
   * Folder of the local spool: `log` resolves once the entries are synced there, so an acknowledged
   * entry survives a crash (the next open replays it). Without it, entries live in memory until written.
   */
  spoolDir?: string;
  /** Whether the spool syncs each group to disk (O_DSYNC, the default): without, an entry survives a crash of the process only. */
  spoolSync?: boolean;
  onDropped?: (count: number) => void;
  onWritten?: (count: number) => void;
  onError?: (error: unknown) => void;
  /** Entries the spool could not take (its disk failed): they are still written, but a crash before that loses them. */
  onUnspooled?: (count: number) => void;
  onReplayed?: (replay: SpoolReplay) => void;
}

const DEFAULTS: PredictionLogOptions = {
  capacity: 200_000,
  batchSize: 5_000,
  flushIntervalMs: 250,
  sealIntervalMs: 0,
};
/** Retries while the database is unreachable back off up to this. */
const MAX_RETRY_MS = 5_000;
const DONE = Promise.resolve();

/** The table's columns in the order the insert's SELECT lists them. */
const COLUMN_NAMES = [
  "request_id",
  "row_index",
  "served_at",
  "model_version",
  "hour",
  ...RAW_FIELD_NAMES.map((f) => `"${f}"`),
  "prediction",
  "lower",
  "upper",
  "interval_level",
].join(", ");

/**
 * Every served prediction, written to DuckDB in batches off the request path. `log` appends to an
 * in-memory buffer and, with a spool, to a local file synced in group commits; the caller answers its
 * request once that sync is done. When the buffer is full the entry is dropped and counted (exported as
 * a metric), never silently lost. close() flushes what is left.
 */
export class PredictionLog {
  private buffer: LoggedPrediction[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;
  private spool: PredictionSpool | undefined;
  dropped = 0;
  written = 0;
  /** Entries logged while the spool could not be written. */
  unspooled = 0;
  private spoolErrorReportedAt = Number.NEGATIVE_INFINITY;
  /** Delay before the next try while the database is unreachable; 0 when it is reachable. */
  private retryMs = 0;
  /** A flush queued behind the one writing, not started yet. */
  private waitingFlush: Promise<void> | undefined;
  /** Whether the next flush must start a new spool segment (an explicit `flush()` asked for it). */
  private sealWanted = false;
  private sealedAt = Date.now();
  /** A batch was refused since the last seal: the segments it is in must stay for the next start. */
  private refusedSinceSeal = false;

  private constructor(
    private readonly db: SqlDatabase,
    private readonly options: PredictionLogOptions,
  ) {}

  static async open(db: SqlDatabase, options: Partial<PredictionLogOptions> = {}): Promise<PredictionLog> {
    await migrate(db, "predictions", [
      {
        version: 1,
        statements: () => [
          `CREATE TABLE IF NOT EXISTS predictions (
            request_id VARCHAR NOT NULL,
            row_index INTEGER NOT NULL,
            served_at TIMESTAMP NOT NULL,
            model_version VARCHAR NOT NULL,
            hour TIMESTAMP,
            ${RAW_FIELD_NAMES.map((f) => `"${f}" DOUBLE PRECISION NOT NULL`).join(",\n            ")},
            prediction DOUBLE PRECISION NOT NULL
          )`,
        ],
      },
      {
        // Intervals (issue 15): NULL for predictions served without one, and for every earlier row.
        version: 2,
        statements: () => [
          "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS lower DOUBLE PRECISION",
          "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS upper DOUBLE PRECISION",
          "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS interval_level DOUBLE PRECISION",
        ],
      },
    ]);
    const log = new PredictionLog(db, { ...DEFAULTS, ...options });
    if (log.options.spoolDir !== undefined) {
      const { spool, left } = await PredictionSpool.open(log.options.spoolDir, log.options.spoolSync ?? true);
      for (const segment of left) {
        if (!(await log.replay(segment))) break;
      }
      log.spool = spool;
    }
    return log;
  }

  /**
   * Puts a segment left by an earlier process into the table, skipping entries already there, then
   * removes it. On a refused write the segment (and the ones after it) stay for the next start.
   */
  private async replay(segment: { path: string; payloads: string[]; tornBytes: number }): Promise<boolean> {
    const entries = segment.payloads.flatMap((p) => JSON.parse(p) as LoggedPrediction[]);
    const count = async () =>
      Number((await this.db.all<{ n: number }>(`SELECT count(*)::BIGINT AS n FROM predictions`))[0]?.n);
    try {
      const before = await count();
      for (let i = 0; i < entries.length; i += this.options.batchSize) {
        await this.insert(entries.slice(i, i + this.options.batchSize), true);
      }
      const inserted = (await count()) - before;
      await unlink(segment.path);
      this.written += inserted;
      this.options.onWritten?.(inserted);
      this.options.onReplayed?.({
        path: segment.path,
        entries: entries.length,
        inserted,
        tornBytes: segment.tornBytes,
      });
      return true;
    } catch (error) {
      this.options.onError?.(
        new Error(
          `replaying the prediction spool ${segment.path} failed (${error instanceof Error ? error.message : String(error)}); it stays for the next start`,
          { cause: error },
        ),
      );
      return false;
    }
  }

  /**
   * Never throws, and never waits for the database. With a spool, the promise resolves once the
   * entries are synced to it: answer the request after that. Entries are dropped (and counted) when the
   * buffer is full; the spool's failures are counted, and the entries are still written to the table.
   */
  log(entries: readonly LoggedPrediction[]): Promise<void> {
    const room = this.closed ? 0 : Math.max(0, this.options.capacity - this.buffer.length);
    const kept = entries.length <= room ? entries : entries.slice(0, room);
    if (kept.length < entries.length) {
      this.dropped += entries.length - kept.length;
      this.options.onDropped?.(entries.length - kept.length);
    }
    if (kept.length === 0) return DONE;
    for (const entry of kept) this.buffer.push(entry);
    // While the database is unreachable only the backoff timer tries again: a full batch must not
    // start a write per request.
    if (this.retryMs > 0) this.flushSoon(this.retryMs);
    else if (this.buffer.length >= this.options.batchSize) this.flushSoon(0);
    else this.flushSoon(this.options.flushIntervalMs);
    if (!this.spool) return DONE;
    // One record per call: the rows of a batch request are kept or torn together.
    return this.spool.append(encodeRecord(JSON.stringify(kept))).then((error) => {
      if (!error) return;
      this.unspooled += kept.length;
      this.options.onUnspooled?.(kept.length);
      // Every failed group is counted; the error is reported once a minute, not once per request.
      const now = Date.now();
      if (now - this.spoolErrorReportedAt < 60_000) return;
      this.spoolErrorReportedAt = now;
      this.options.onError?.(
        new Error(
          `prediction spool ${this.spool?.dir} cannot be written (${error.message}): predictions are still served and logged, but a crash before the next database write loses them`,
          { cause: error },
        ),
      );
    });
  }

  get depth(): number {
    return this.buffer.length;
  }

  private flushSoon(delay: number): void {
    if (this.timer && delay > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.write();
    }, delay);
  }

  /**
   * Writes everything buffered so far; resolves when it is committed. A flush already waiting its turn
   * serves later callers too (it takes the buffer when it starts), so flushes never pile up.
   */
  flush(): Promise<void> {
    this.sealWanted = true;
    return this.write();
  }

  /** A flush that starts a new spool segment only when one was asked for or `sealIntervalMs` has passed. */
  private write(): Promise<void> {
    if (this.waitingFlush) return this.waitingFlush;
    this.waitingFlush = this.writing.then(async () => {
      this.waitingFlush = undefined;
      // Only what is buffered now: entries that arrive while this writes wait for their own timer,
      // instead of a stream of one-row inserts back to back (each insert costs the event loop).
      let remaining = this.buffer.length;
      // Everything spooled so far is in this snapshot (or was written before): once it is committed,
      // its segments can go. log() spools and buffers in one synchronous step, so the two agree.
      const now = Date.now();
      const seal = this.sealWanted || this.closed || now - this.sealedAt >= this.options.sealIntervalMs;
      let sealed: ReturnType<PredictionSpool["seal"]> | undefined;
      if (seal) {
        sealed = this.spool?.seal();
        this.sealWanted = false;
        this.sealedAt = now;
      }
      while (remaining > 0) {
        const batch = this.buffer.splice(0, Math.min(remaining, this.options.batchSize));
        remaining -= batch.length;
        try {
          await this.insert(batch);
          this.written += batch.length;
          this.options.onWritten?.(batch.length);
          this.retryMs = 0;
        } catch (error) {
          if (error instanceof StoreUnavailableError && !this.closed) {
            // The database is unreachable, not refusing: the entries wait in memory (bounded by `capacity`;
            // beyond it log() drops and counts) and their spool segments stay, and the write is tried again
            // with a backoff, so an outage ends with the log caught up.
            this.buffer.unshift(...batch);
            if (this.retryMs === 0) this.options.onError?.(error);
            this.retryMs = Math.min(MAX_RETRY_MS, Math.max(250, this.retryMs * 2));
            this.flushSoon(this.retryMs);
            return;
          }
          // The database refused the batch: count it as dropped rather than retry forever and grow without
          // bound. Its spool segments stay on disk, so the next start still writes it. Closing with the
          // database unreachable, the rest is not tried either (each try would wait for a timeout).
          // Until a seal covers it: a flush that does not seal leaves the batch in the open segment.
          this.refusedSinceSeal = true;
          let lost = batch.length;
          if (error instanceof StoreUnavailableError) {
            lost += this.buffer.splice(0, remaining).length;
            remaining = 0;
          }
          this.dropped += lost;
          this.options.onDropped?.(lost);
          this.options.onError?.(error);
        }
      }
      if (sealed && this.spool) {
        const refused = this.refusedSinceSeal;
        this.refusedSinceSeal = false;
        try {
          await (refused ? this.spool.keep(sealed) : this.spool.release(sealed));
        } catch (error) {
          // A segment that could not be removed is replayed at the next start, which skips what it holds.
          this.options.onError?.(error);
        }
      }
    });
    this.writing = this.waitingFlush;
    return this.waitingFlush;
  }

  /** `skipLogged`: leave out entries whose (request id, row) the table already holds (a replay). */
  private async insert(batch: LoggedPrediction[], skipLogged = false): Promise<void> {
    // One statement per batch: each column travels as one JSON array and unnest zips them into rows.
    // Not as list parameters: the driver makes a native value object per list element, and at 200
    // predictions/s their finalizers made every young-generation GC pause about 9 ms (predict p99 went
    // from 4 ms to 14 ms). JSON numbers round-trip doubles exactly; null is SQL NULL. PostgreSQL takes
    // typed array parameters (sent as text by its driver, so no such cost).
    const postgres = this.db.dialect === "postgres";
    const json = (f: (e: LoggedPrediction) => number | string | null) =>
      postgres ? batch.map(f) : JSON.stringify(batch.map(f));
    const columns = [
      json((e) => e.requestId),
      json((e) => e.row),
      json((e) => e.servedAt),
      json((e) => e.modelVersion),
      json((e) => e.hourStart ?? null),
      ...RAW_FIELD_NAMES.map((f) => json((e) => e.record[f])),
      json((e) => e.prediction),
      json((e) => e.lower ?? null),
      json((e) => e.upper ?? null),
      json((e) => e.intervalLevel ?? null),
    ];
    const list = (i: number, type: string) =>
      postgres
        ? `unnest($${i + 1}::${type === "DOUBLE" ? "DOUBLE PRECISION" : type}[])`
        : `unnest(from_json($${i + 1}, '["${type}"]'))`;
    const select = [
      `${list(0, "VARCHAR")} AS request_id`,
      `${list(1, "INTEGER")} AS row_index`,
      `epoch_ms(${list(2, "BIGINT")}) AS served_at`,
      `${list(3, "VARCHAR")} AS model_version`,
      `epoch_ms(${list(4, "BIGINT")}) AS hour`,
      ...RAW_FIELD_NAMES.map((f, i) => `${list(5 + i, "DOUBLE")} AS "${f}"`),
      `${list(5 + RAW_FIELD_NAMES.length, "DOUBLE")} AS prediction`,
      `${list(6 + RAW_FIELD_NAMES.length, "DOUBLE")} AS lower`,
      `${list(7 + RAW_FIELD_NAMES.length, "DOUBLE")} AS upper`,
      `${list(8 + RAW_FIELD_NAMES.length, "DOUBLE")} AS interval_level`,
    ].join(", ");
    if (!skipLogged) {
      await this.db.run(`INSERT INTO predictions (${COLUMN_NAMES}) SELECT ${select}`, columns);
      return;
    }
    // A logged copy has the same served_at: the range lets DuckDB skip row groups by their min/max.
    let first = Number.POSITIVE_INFINITY;
    let last = Number.NEGATIVE_INFINITY;
    for (const e of batch) {
      first = Math.min(first, e.servedAt);
      last = Math.max(last, e.servedAt);
    }
    const n = columns.length;
    await this.db.run(
      `INSERT INTO predictions (${COLUMN_NAMES})
       SELECT * FROM (SELECT ${select}) s
       WHERE NOT EXISTS (
         SELECT 1 FROM predictions p
         WHERE p.served_at BETWEEN epoch_ms($${n + 1}::BIGINT) AND epoch_ms($${n + 2}::BIGINT)
           AND p.request_id = s.request_id AND p.row_index = s.row_index)`,
      [...columns, first, last],
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
    await this.spool?.close();
  }
}
