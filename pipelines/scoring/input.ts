/**
 * Streaming readers for scoring inputs: Arrow IPC (file or stream, through apache-arrow's incremental
 * reader over a file handle), Parquet and CSV (through a DuckDB streaming query). Both yield chunks of
 * at most `chunkSize` rows with the 12 raw fields as Float64 columns, so memory holds a few chunks, not
 * the file (an Arrow record batch is the unit its reader decodes, so one huge batch is read whole).
 *
 * Values are NOT validated here: a missing or unparseable value becomes NaN and validation reports it
 * per row, so one bad cell rejects its row, not the file. Problems with the whole file (unreadable,
 * unknown format, a required column absent) are errors naming the file and the format.
 */
import { type FileHandle, open } from "node:fs/promises";
import { extname } from "node:path";
import {
  type DuckDBConnection,
  type DuckDBDataChunk,
  DuckDBInstance,
  type DuckDBVector,
} from "@duckdb/node-api";
import duckdb from "@duckdb/node-bindings";
import {
  type Data,
  DataType,
  makeVector,
  Precision,
  type RecordBatch,
  RecordBatchReader,
  type Schema,
} from "apache-arrow";
import {
  dayNumber,
  localDayAndHour,
  parseTimestamp,
  RAW_FIELD_NAMES,
  type RawField,
  type RowViolation,
  TIMESTAMP_FIELD,
} from "../../core/features/index.js";

export type InputFormat = "arrow-file" | "arrow-stream" | "parquet" | "csv";

/** The optional column that gives the date of each row (YYYY-MM-DD), as in hour.csv. */
export const DATE_FIELD = "dteday";
const MS_PER_DAY = 86_400_000;

export interface InputChunk {
  /** 1-based position in the input of the chunk's first row (a CSV header line is not counted). */
  readonly firstRow: number;
  readonly length: number;
  /** The raw fields; NaN where the value was missing or not a number. */
  readonly fields: Record<RawField, Float64Array>;
  /** Local day number of each row, from `timestamp` or `dteday`; NaN when unknown. */
  readonly day?: Float64Array;
  /** Local hour from `timestamp` (checked against `hr`); NaN when unknown. */
  readonly hour?: Float64Array;
  /** What the reader could not parse (a date or timestamp), by chunk-relative row. */
  readonly problems: RowViolation[];
}

export interface ScoringInput {
  readonly path: string;
  readonly format: InputFormat;
  /** The column the date of each row comes from, if any. */
  readonly dateColumn?: typeof DATE_FIELD | typeof TIMESTAMP_FIELD;
  /** Rows in the file, when the format says so without a scan (Parquet). */
  readonly totalRows?: number;
  chunks(chunkSize: number): AsyncGenerator<InputChunk>;
  close(): Promise<void>;
}

export class InputError extends Error {
  override name = "InputError";
}

const FORMAT_NAMES: Record<InputFormat, string> = {
  "arrow-file": "Arrow IPC file",
  "arrow-stream": "Arrow IPC stream",
  parquet: "Parquet",
  csv: "CSV",
};

export const formatName = (format: InputFormat) => FORMAT_NAMES[format];

const ARROW_EXTENSIONS = [".arrow", ".arrows", ".feather", ".ipc"];

/** By content (magic bytes) first, so a misnamed file is still read correctly; then by extension. */
export async function detectInputFormat(path: string): Promise<InputFormat> {
  let head: Buffer;
  let size: number;
  try {
    const file = await open(path, "r");
    try {
      size = (await file.stat()).size;
      head = Buffer.alloc(8);
      await file.read(head, 0, 8, 0);
    } finally {
      await file.close();
    }
  } catch (error) {
    throw new InputError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (size === 0) throw new InputError(`${path} is empty`);
  if (head.subarray(0, 4).toString("latin1") === "PAR1") return "parquet";
  if (head.subarray(0, 6).toString("latin1") === "ARROW1") return "arrow-file";
  if (head.readUInt32LE(0) === 0xffffffff) return "arrow-stream";
  const ext = extname(path).toLowerCase();
  if (ARROW_EXTENSIONS.includes(ext))
    throw new InputError(
      `${path} is not an Arrow IPC file or stream (it does not start with an Arrow header)`,
    );
  if (ext === ".parquet") throw new InputError(`${path} is not a Parquet file (no PAR1 header)`);
  if (ext === ".csv" || ext === ".txt" || ext === ".tsv") return "csv";
  throw new InputError(
    `cannot tell the format of ${path}: use Arrow IPC (${ARROW_EXTENSIONS.join(", ")}), Parquet (.parquet) or CSV (.csv)`,
  );
}

export async function openScoringInput(path: string): Promise<ScoringInput> {
  const format = await detectInputFormat(path);
  return format === "parquet" || format === "csv"
    ? openDuckDbInput(path, format)
    : openArrowInput(path, format);
}

function missingColumns(path: string, format: InputFormat, names: readonly string[]): void {
  const missing = RAW_FIELD_NAMES.filter((f) => !names.includes(f));
  if (missing.length > 0) {
    throw new InputError(
      `${path} (${formatName(format)}) has no column ${missing.join(", ")}; scoring needs the columns ` +
        `${RAW_FIELD_NAMES.join(", ")} and optionally ${TIMESTAMP_FIELD} (ISO-8601 with offset) or ${DATE_FIELD} (YYYY-MM-DD)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Chunk assembly shared by both readers

class ChunkBuilder {
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
class Chunker {
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

function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < 1)
    throw new RangeError(`chunkSize must be a positive integer, got ${chunkSize}`);
}

// ---------------------------------------------------------------------------------------------------
// Arrow IPC

/** Copies rows [start, start + count) of a numeric-like column into `target` from `at`; null → NaN. */
function copyArrowNumbers(data: Data, start: number, count: number, target: Float64Array, at: number): void {
  const type = data.type as DataType;
  const valid = (i: number) => data.nullCount === 0 || data.getValid(i);
  // Plain numeric storage: read the value buffer directly (the general accessor costs ~10x per value).
  if (DataType.isInt(type) || (DataType.isFloat(type) && type.precision !== Precision.HALF)) {
    // `values` is already cut to the slice (as in apache-arrow's own getters); `offset` is for validity.
    const values = data.values as ArrayLike<number | bigint>;
    for (let k = 0; k < count; k++) {
      const i = start + k;
      target[at + k] = valid(i) ? Number(values[i]) : Number.NaN;
    }
    return;
  }
  // Strings, booleans, half floats, decimals, dictionaries: the general accessor.
  const vector = makeVector(data);
  for (let k = 0; k < count; k++) {
    const i = start + k;
    target[at + k] = valid(i) ? toNumber(vector.get(i)) : Number.NaN;
  }
}

function toNumber(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string") {
    const s = v.trim();
    return s === "" ? Number.NaN : Number(s);
  }
  return Number.NaN;
}

function arrowDateColumn(
  schema: Schema,
  path: string,
): typeof DATE_FIELD | typeof TIMESTAMP_FIELD | undefined {
  const ts = schema.fields.find((f) => f.name === TIMESTAMP_FIELD);
  if (ts) {
    if (DataType.isTimestamp(ts.type) && !ts.type.timezone)
      throw new InputError(
        `${path}: column ${TIMESTAMP_FIELD} is a timestamp without a time zone; the hour it names is ambiguous — ` +
          "store it with a time zone (e.g. UTC) or as ISO-8601 text with an offset",
      );
    return TIMESTAMP_FIELD;
  }
  return schema.fields.some((f) => f.name === DATE_FIELD) ? DATE_FIELD : undefined;
}

function copyArrowDate(
  data: Data,
  column: typeof DATE_FIELD | typeof TIMESTAMP_FIELD,
  start: number,
  count: number,
  chunk: ChunkBuilder,
  at: number,
): void {
  const vector = makeVector(data);
  for (let k = 0; k < count; k++) {
    const v: unknown = vector.get(start + k);
    if (v === null || v === undefined) continue;
    const i = at + k;
    if (column === TIMESTAMP_FIELD) {
      if (typeof v === "number") chunk.setInstant(i, v);
      else chunk.setTimestampText(i, String(v));
    } else if (typeof v === "number") (chunk.day as Float64Array)[i] = Math.floor(v / MS_PER_DAY);
    else chunk.setDateText(i, String(v));
  }
}

async function openArrowInput(path: string, format: InputFormat): Promise<ScoringInput> {
  const file: FileHandle = await open(path, "r");
  let reader: RecordBatchReader;
  try {
    reader = await RecordBatchReader.from(file);
    await reader.open();
  } catch (error) {
    await file.close();
    throw new InputError(`cannot read ${path} as ${formatName(format)}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const schema = reader.schema;
  const names = schema.fields.map((f) => f.name);
  let dateColumn: ReturnType<typeof arrowDateColumn>;
  try {
    missingColumns(path, format, names);
    dateColumn = arrowDateColumn(schema, path);
  } catch (error) {
    await reader.cancel();
    await file.close();
    throw error;
  }
  const fieldIndex = RAW_FIELD_NAMES.map((f) => names.indexOf(f));
  const dateIndex = dateColumn === undefined ? -1 : names.indexOf(dateColumn);
  let closed = false;
  return {
    path,
    format,
    ...(dateColumn ? { dateColumn } : {}),
    async *chunks(chunkSize) {
      checkChunkSize(chunkSize);
      const chunker = new Chunker(chunkSize, dateColumn);
      const iterator = reader[Symbol.asyncIterator]();
      for (;;) {
        let result: IteratorResult<RecordBatch>;
        try {
          result = await iterator.next();
        } catch (error) {
          throw new InputError(
            `cannot read ${path} as ${formatName(format)} after row ${chunker.rowsRead}: ${(error as Error).message}`,
            { cause: error },
          );
        }
        if (result.done) break;
        const batch = result.value;
        yield* chunker.take(batch.numRows, (chunk, start, count, at) => {
          RAW_FIELD_NAMES.forEach((f, c) => {
            const data = batch.data.children[fieldIndex[c] as number] as Data;
            copyArrowNumbers(data, start, count, chunk.fields[f], at);
          });
          if (dateColumn !== undefined)
            copyArrowDate(batch.data.children[dateIndex] as Data, dateColumn, start, count, chunk, at);
        });
      }
      yield* chunker.rest();
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.resolve(reader.cancel()).catch(() => undefined);
      await file.close().catch(() => undefined);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Parquet and CSV through DuckDB

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;
const ident = (s: string) => `"${s.replaceAll('"', '""')}"`;
/** A number that is never NULL (NULL and unparseable become NaN), so its vector can be read as a whole. */
const doubleOrNaN = (expr: string) => `coalesce(TRY_CAST(${expr} AS DOUBLE), 'NaN'::DOUBLE)`;

/**
 * Column `c` of a DOUBLE chunk as a Float64Array over DuckDB's own buffer (valid until the next fetch).
 * Through the low-level binding: the node-api vector only offers a call per value, which cost more
 * than reading and decoding the Parquet file. Every such column is `doubleOrNaN`, so no validity mask
 * needs reading.
 */
function doublesOf(chunk: DuckDBDataChunk, c: number): Float64Array {
  const bytes = duckdb.vector_get_data(duckdb.data_chunk_get_vector(chunk.chunk, c), chunk.rowCount * 8);
  return new Float64Array(bytes.buffer, bytes.byteOffset, chunk.rowCount);
}

function duckDbSource(path: string, format: "parquet" | "csv"): string {
  // CSV cells are read as text and converted per value below, so one bad cell invalidates its row
  // instead of DuckDB's type sniffing failing the whole file halfway through.
  return format === "parquet"
    ? `read_parquet(${sqlString(path)})`
    : `read_csv(${sqlString(path)}, header = true, all_varchar = true)`;
}

async function openDuckDbInput(path: string, format: "parquet" | "csv"): Promise<ScoringInput> {
  const instance = await DuckDBInstance.create(":memory:", {
    // Bounded memory is the point of streaming; a scan needs little, and DuckDB would otherwise size
    // its buffer pool from the machine's RAM.
    memory_limit: "256MB",
    threads: "1",
  });
  let connection: DuckDBConnection | undefined;
  const closeAll = () => {
    connection?.closeSync();
    instance.closeSync();
  };
  const source = duckDbSource(path, format);
  let columns: { name: string; type: string }[];
  let totalRows: number | undefined;
  try {
    connection = await instance.connect();
    const described = await connection.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`);
    columns = described
      .getRowObjectsJS()
      .map((r) => ({ name: String(r.column_name), type: String(r.column_type) }));
    if (format === "parquet") {
      // Answered from the footer's row-group metadata, without reading the data.
      const counted = await connection.runAndReadAll(`SELECT count(*)::DOUBLE AS n FROM ${source}`);
      totalRows = Number(counted.getRowObjectsJS()[0]?.n);
    }
  } catch (error) {
    closeAll();
    throw new InputError(`cannot read ${path} as ${formatName(format)}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const names = columns.map((c) => c.name);
  let dateColumn: typeof DATE_FIELD | typeof TIMESTAMP_FIELD | undefined;
  let dateExpr = "";
  let dateIsText = false;
  try {
    missingColumns(path, format, names);
    const ts = columns.find((c) => c.name === TIMESTAMP_FIELD);
    const date = columns.find((c) => c.name === DATE_FIELD);
    if (ts) {
      dateColumn = TIMESTAMP_FIELD;
      if (ts.type === "TIMESTAMP WITH TIME ZONE") dateExpr = doubleOrNaN(`epoch_ms(${ident(ts.name)})`);
      else if (ts.type.startsWith("TIMESTAMP"))
        throw new InputError(
          `${path}: column ${TIMESTAMP_FIELD} is a timestamp without a time zone (${ts.type}); the hour it names is ` +
            "ambiguous — store it with a time zone (e.g. UTC) or as ISO-8601 text with an offset",
        );
      else {
        dateExpr = `${ident(ts.name)}::VARCHAR`;
        dateIsText = true;
      }
    } else if (date) {
      dateColumn = DATE_FIELD;
      dateIsText = date.type !== "DATE";
      dateExpr = dateIsText
        ? `${ident(date.name)}::VARCHAR`
        : doubleOrNaN(`${ident(date.name)} - DATE '1970-01-01'`);
    }
  } catch (error) {
    closeAll();
    throw error;
  }
  const select = [...RAW_FIELD_NAMES.map((f) => doubleOrNaN(ident(f))), ...(dateExpr ? [dateExpr] : [])].join(
    ", ",
  );
  const sql = `SELECT ${select} FROM ${source}`;
  let closed = false;
  return {
    path,
    format,
    ...(dateColumn ? { dateColumn } : {}),
    ...(totalRows !== undefined ? { totalRows } : {}),
    async *chunks(chunkSize) {
      checkChunkSize(chunkSize);
      const chunker = new Chunker(chunkSize, dateColumn);
      const fail = (error: unknown) =>
        new InputError(
          `cannot read ${path} as ${formatName(format)} after row ${chunker.rowsRead}: ${(error as Error).message}`,
          { cause: error },
        );
      let result: Awaited<ReturnType<DuckDBConnection["stream"]>>;
      try {
        result = await (connection as DuckDBConnection).stream(sql);
      } catch (error) {
        throw fail(error);
      }
      for (;;) {
        let data: Awaited<ReturnType<typeof result.fetchChunk>>;
        try {
          data = await result.fetchChunk();
        } catch (error) {
          throw fail(error);
        }
        if (data === null || data.rowCount === 0) break;
        const fields = RAW_FIELD_NAMES.map((_, c) => doublesOf(data, c));
        const dates =
          dateColumn === undefined
            ? undefined
            : dateIsText
              ? (data.getColumnVector(RAW_FIELD_NAMES.length) as DuckDBVector<string>)
              : doublesOf(data, RAW_FIELD_NAMES.length);
        yield* chunker.take(data.rowCount, (chunk, start, count, at) => {
          RAW_FIELD_NAMES.forEach((f, c) => {
            chunk.fields[f].set((fields[c] as Float64Array).subarray(start, start + count), at);
          });
          if (dates instanceof Float64Array) {
            for (let k = 0; k < count; k++) {
              const v = dates[start + k] as number;
              if (Number.isNaN(v)) continue;
              if (dateColumn === TIMESTAMP_FIELD) chunk.setInstant(at + k, v);
              else (chunk.day as Float64Array)[at + k] = v;
            }
          } else if (dates !== undefined) {
            for (let k = 0; k < count; k++) {
              const v = dates.getItem(start + k);
              if (v === null) continue;
              if (dateColumn === TIMESTAMP_FIELD) chunk.setTimestampText(at + k, v);
              else chunk.setDateText(at + k, v);
            }
          }
        });
      }
      yield* chunker.rest();
    },
    async close() {
      if (closed) return;
      closed = true;
      closeAll();
    },
  };
}
