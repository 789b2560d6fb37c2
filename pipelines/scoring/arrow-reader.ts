/**
 * Arrow IPC (file or stream) through apache-arrow's incremental reader over a file handle.
 */
import { type FileHandle, open } from "node:fs/promises";
import {
  type Data,
  DataType,
  makeVector,
  Precision,
  type RecordBatch,
  RecordBatchReader,
  type Schema,
} from "apache-arrow";
import { RAW_FIELD_NAMES, TIMESTAMP_FIELD } from "../../core/features/index.js";
import { type ChunkBuilder, Chunker, checkChunkSize } from "./chunker.js";
import { formatName, InputError, type InputFormat } from "./format.js";
import { DATE_FIELD, missingColumns, type ScoringInput } from "./reader.js";

const MS_PER_DAY = 86_400_000;

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

export async function openArrowInput(path: string, format: InputFormat): Promise<ScoringInput> {
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
      // Closing after the read ended, failed or was abandoned: the caller already has the read's outcome.
      await Promise.resolve(reader.cancel()).catch(() => undefined);
      await file.close().catch(() => undefined);
    },
  };
}
