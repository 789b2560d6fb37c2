import { RAW_FIELD_NAMES, type RawRecord } from "../../core/features/index.js";
import type { Database } from "../storage/database.js";

export interface LoggedPrediction {
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
}

export interface PredictionLogOptions {
  /** Entries held in memory at most; beyond that new entries are dropped and counted. */
  capacity: number;
  /** Entries written per insert. */
  batchSize: number;
  /** Longest time an entry waits in memory before it is written. */
  flushIntervalMs: number;
  onDropped?: (count: number) => void;
  onWritten?: (count: number) => void;
  onError?: (error: unknown) => void;
}

const DEFAULTS: PredictionLogOptions = { capacity: 200_000, batchSize: 5_000, flushIntervalMs: 250 };

/**
 * Every served prediction, written to DuckDB in batches off the request path. `log` only
 * appends to an in-memory buffer and never waits; when the buffer is full the entry is
 * dropped and counted (exported as a metric), never silently lost. close() flushes what is left.
 */
export class PredictionLog {
  private buffer: LoggedPrediction[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;
  dropped = 0;
  written = 0;

  private constructor(
    private readonly db: Database,
    private readonly options: PredictionLogOptions,
  ) {}

  static async open(db: Database, options: Partial<PredictionLogOptions> = {}): Promise<PredictionLog> {
    await db.run(`CREATE TABLE IF NOT EXISTS predictions (
      request_id VARCHAR NOT NULL,
      row_index INTEGER NOT NULL,
      served_at TIMESTAMP NOT NULL,
      model_version VARCHAR NOT NULL,
      hour TIMESTAMP,
      ${RAW_FIELD_NAMES.map((f) => `"${f}" DOUBLE NOT NULL`).join(",\n      ")},
      prediction DOUBLE NOT NULL
    )`);
    return new PredictionLog(db, { ...DEFAULTS, ...options });
  }

  /** Never blocks and never throws: the request that produced the prediction has already been answered. */
  log(entry: LoggedPrediction): void {
    if (this.closed || this.buffer.length >= this.options.capacity) {
      this.dropped++;
      this.options.onDropped?.(1);
      return;
    }
    this.buffer.push(entry);
    if (this.buffer.length >= this.options.batchSize) this.flushSoon(0);
    else this.flushSoon(this.options.flushIntervalMs);
  }

  get depth(): number {
    return this.buffer.length;
  }

  private flushSoon(delay: number): void {
    if (this.timer && delay > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delay);
  }

  /** Writes everything buffered so far; resolves when it is committed. */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      // Only what is buffered now: entries that arrive while this writes wait for their own timer,
      // instead of a stream of one-row inserts back to back (each insert costs the event loop).
      let remaining = this.buffer.length;
      while (remaining > 0) {
        const batch = this.buffer.splice(0, Math.min(remaining, this.options.batchSize));
        remaining -= batch.length;
        try {
          await this.insert(batch);
          this.written += batch.length;
          this.options.onWritten?.(batch.length);
        } catch (error) {
          // The database refused the batch: count it as dropped rather than retry forever and grow without bound.
          this.dropped += batch.length;
          this.options.onDropped?.(batch.length);
          this.options.onError?.(error);
        }
      }
    });
    return this.writing;
  }

  private async insert(batch: LoggedPrediction[]): Promise<void> {
    // One statement per batch: each column travels as one JSON array and unnest zips them into rows.
    // Not as list parameters: the driver makes a native value object per list element, and at 200
    // predictions/s their finalizers made every young-generation GC pause about 9 ms (predict p99 went
    // from 4 ms to 14 ms). JSON numbers round-trip doubles exactly; null is SQL NULL.
    const json = (f: (e: LoggedPrediction) => number | string | null) => JSON.stringify(batch.map(f));
    const columns = [
      json((e) => e.requestId),
      json((e) => e.row),
      json((e) => e.servedAt),
      json((e) => e.modelVersion),
      json((e) => e.hourStart ?? null),
      ...RAW_FIELD_NAMES.map((f) => json((e) => e.record[f])),
      json((e) => e.prediction),
    ];
    const list = (i: number, type: string) => `unnest(from_json($${i + 1}, '["${type}"]'))`;
    const select = [
      `${list(0, "VARCHAR")} AS request_id`,
      `${list(1, "INTEGER")} AS row_index`,
      `epoch_ms(${list(2, "BIGINT")}) AS served_at`,
      `${list(3, "VARCHAR")} AS model_version`,
      `epoch_ms(${list(4, "BIGINT")}) AS hour`,
      ...RAW_FIELD_NAMES.map((f, i) => `${list(5 + i, "DOUBLE")} AS "${f}"`),
      `${list(5 + RAW_FIELD_NAMES.length, "DOUBLE")} AS prediction`,
    ].join(", ");
    await this.db.run(`INSERT INTO predictions BY NAME SELECT ${select}`, columns);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
