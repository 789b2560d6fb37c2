/**
 * Chunk assembly shared by both readers: whatever the batch sizes a reader gets, it yields chunks of
 * `chunkSize` rows.
 */
import {
  dayNumber,
  localDayAndHour,
  parseTimestamp,
  RAW_FIELD_NAMES,
  type RawField,
  type RowViolation,
  TIMESTAMP_FIELD,
} from "../../core/features/index.js";
import { DATE_FIELD, type InputChunk } from "./reader.js";

export class ChunkBuilder {
  readonly fields = {} as Record<RawField, Float64Array>;
  readonly day?: Float64Array;
  readonly hour?: Float64Array;
  readonly problems: RowViolation[] = [];
  length = 0;

  constructor(
    readonly firstRow: number,
    readonly capacity: number,
    dateColumn: string | undefined,
  ) {
    for (const f of RAW_FIELD_NAMES) this.fields[f] = new Float64Array(capacity);
    if (dateColumn !== undefined) this.day = new Float64Array(capacity).fill(Number.NaN);
    if (dateColumn === TIMESTAMP_FIELD) this.hour = new Float64Array(capacity).fill(Number.NaN);
  }

  get full(): boolean {
    return this.length === this.capacity;
  }

  /** Records the date of chunk row `i` from an instant (epoch ms). */
  setInstant(i: number, ms: number): void {
    const local = localDayAndHour(new Date(ms));
    (this.day as Float64Array)[i] = local.day;
    (this.hour as Float64Array)[i] = local.hour;
  }

  setTimestampText(i: number, text: string): void {
    const instant = parseTimestamp(text);
    if (instant === undefined) {
      this.problems.push({
        row: i,
        field: TIMESTAMP_FIELD,
        type: "type",
        description: `must be an ISO-8601 date-time with a UTC offset, e.g. "2012-07-04T21:00:00Z", got ${JSON.stringify(text.slice(0, 40))}`,
      });
    } else this.setInstant(i, instant.getTime());
  }

  setDateText(i: number, text: string): void {
    try {
      (this.day as Float64Array)[i] = dayNumber(text.slice(0, 10));
    } catch {
      this.problems.push({
        row: i,
        field: DATE_FIELD,
        type: "type",
        description: `must be a date YYYY-MM-DD, got ${JSON.stringify(text.slice(0, 40))}`,
      });
    }
  }

  build(): InputChunk {
    const n = this.length;
    const cut = (a: Float64Array) => (n === this.capacity ? a : a.subarray(0, n));
    const fields = {} as Record<RawField, Float64Array>;
    for (const f of RAW_FIELD_NAMES) fields[f] = cut(this.fields[f]);
    return {
      firstRow: this.firstRow,
      length: n,
      fields,
      ...(this.day ? { day: cut(this.day) } : {}),
      ...(this.hour ? { hour: cut(this.hour) } : {}),
      problems: this.problems,
    };
  }
}

/** Cuts the batches a reader gets, whatever their sizes, into chunks of `chunkSize` rows (the last may be shorter). */
export class Chunker {
  private chunk: ChunkBuilder;
  /** Rows taken so far: the next one is row `rowsRead + 1` of the input. */
  rowsRead = 0;

  constructor(
    private readonly chunkSize: number,
    private readonly dateColumn: string | undefined,
  ) {
    this.chunk = new ChunkBuilder(1, chunkSize, dateColumn);
  }

  /**
   * Takes a batch of `rows` rows: `copy` puts batch rows start … start + count − 1 into chunk rows
   * at … at + count − 1. Yields every chunk the batch fills.
   */
  *take(
    rows: number,
    copy: (chunk: ChunkBuilder, start: number, count: number, at: number) => void,
  ): Generator<InputChunk> {
    let start = 0;
    while (start < rows) {
      const count = Math.min(rows - start, this.chunk.capacity - this.chunk.length);
      copy(this.chunk, start, count, this.chunk.length);
      this.chunk.length += count;
      start += count;
      this.rowsRead += count;
      if (this.chunk.full) {
        yield this.chunk.build();
        this.chunk = new ChunkBuilder(this.rowsRead + 1, this.chunkSize, this.dateColumn);
      }
    }
  }

  /** The last chunk, when the input ended part way through it. */
  *rest(): Generator<InputChunk> {
    if (this.chunk.length > 0) yield this.chunk.build();
  }
}

export function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < 1)
    throw new RangeError(`chunkSize must be a positive integer, got ${chunkSize}`);
}
