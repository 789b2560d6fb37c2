/**
 * Scoring outputs: Arrow IPC (file or stream) or Parquet, chosen by extension, written chunk by chunk to
 * a temporary file beside the target and renamed over it only when complete, so a failed or cancelled
 * run never leaves a truncated file that looks like a result.
 *
 * Columns: `row` (the input row, 1-based), the 12 raw fields as read, `prediction` (float32, as the
 * model computes it), and when an interval was asked for, `lower` and `upper` (double: the calibrated
 * interval, see pipelines/training/calibration.ts). Only valid rows appear; the others are in the invalid-rows file with the same
 * row numbers.
 */

import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { basename, dirname, extname, join } from "node:path";
import {
  type Data,
  makeVector,
  RecordBatch,
  RecordBatchFileWriter,
  RecordBatchStreamWriter,
} from "apache-arrow";
import { RAW_FIELDS, type RawField } from "../../core/features/index.js";
import { type ParquetColumn, ParquetStreamWriter, type ParquetValues } from "./parquet-writer.js";

export type OutputFormat = "arrow-file" | "arrow-stream" | "parquet";

export interface ScoredChunk {
  readonly length: number;
  /** 1-based input row of each output row. */
  readonly rows: Int32Array;
  readonly fields: Record<RawField, Float64Array>;
  readonly predictions: Float32Array;
  /** The interval of each row, when the output has interval columns. */
  readonly lower?: Float64Array;
  readonly upper?: Float64Array;
}

export interface ScoringOutput {
  readonly format: OutputFormat;
  write(chunk: ScoredChunk): Promise<void>;
  /** Completes the file and moves it into place. */
  finish(): Promise<void>;
  /** Removes the partial file. */
  discard(): Promise<void>;
}

export function outputFormatOf(path: string): OutputFormat {
  const ext = extname(path).toLowerCase();
  if (ext === ".arrow" || ext === ".feather" || ext === ".ipc") return "arrow-file";
  if (ext === ".arrows") return "arrow-stream";
  if (ext === ".parquet") return "parquet";
  throw new Error(
    `cannot tell the output format of ${path}: use .arrow (Arrow IPC file), .arrows (Arrow IPC stream) or .parquet`,
  );
}

/** The output columns, in order: integer fields as int8 (all are small codes), the rest as doubles. */
const COLUMNS: readonly ParquetColumn[] = [
  { name: "row", type: "int32" },
  ...RAW_FIELDS.map((f): ParquetColumn => ({ name: f.name, type: f.kind === "integer" ? "int8" : "double" })),
  { name: "prediction", type: "float" },
];
const INTERVAL_COLUMNS: readonly ParquetColumn[] = [
  { name: "lower", type: "double" },
  { name: "upper", type: "double" },
];

function columnValues(chunk: ScoredChunk, intervals: boolean): ParquetValues[] {
  const values: ParquetValues[] = [
    chunk.rows,
    ...RAW_FIELDS.map((f) =>
      f.kind === "integer" ? Int8Array.from(chunk.fields[f.name]) : chunk.fields[f.name],
    ),
    chunk.predictions,
  ];
  if (!intervals) return values;
  if (chunk.lower === undefined || chunk.upper === undefined)
    throw new Error("a scored chunk has no interval, but the output has lower/upper columns");
  return [...values, chunk.lower, chunk.upper];
}

function emptyChunk(intervals: boolean): ScoredChunk {
  const fields = Object.fromEntries(RAW_FIELDS.map((f) => [f.name, new Float64Array(0)])) as Record<
    RawField,
    Float64Array
  >;
  return {
    length: 0,
    rows: new Int32Array(0),
    fields,
    predictions: new Float32Array(0),
    ...(intervals ? { lower: new Float64Array(0), upper: new Float64Array(0) } : {}),
  };
}

/** A sibling temp name, so the final rename stays on one file system. */
export function partialPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.partial`);
}

/**
 * Clears the partial name for a new file: its name is predictable, so whatever is there (a leftover
 * of a killed run, or a link planted in a shared folder) is removed, and the file is then created
 * exclusively ("wx"), which never follows a link planted in between.
 */
export async function clearPartial(temp: string): Promise<"wx"> {
  await rm(temp, { force: true });
  return "wx";
}

export async function openScoringOutput(
  path: string,
  format = outputFormatOf(path),
  options: { intervals?: boolean } = {},
): Promise<ScoringOutput> {
  const intervals = options.intervals === true;
  const columns = intervals ? [...COLUMNS, ...INTERVAL_COLUMNS] : COLUMNS;
  const temp = partialPath(path);
  const discard = async () => {
    await rm(temp, { force: true });
  };
  if (format === "parquet") {
    const file: FileHandle = await open(temp, await clearPartial(temp));
    const writer = new ParquetStreamWriter(file, columns);
    return {
      format,
      write: (chunk) => writer.writeRowGroup(columnValues(chunk, intervals), chunk.length),
      async finish() {
        try {
          await writer.finish();
          await file.sync();
        } finally {
          await file.close();
        }
        await rename(temp, path);
      },
      async discard() {
        // Discarding after a failure, which is what the caller reports; the partial file goes next.
        await file.close().catch(() => undefined);
        await discard();
      },
    };
  }
  const writer = format === "arrow-file" ? new RecordBatchFileWriter() : new RecordBatchStreamWriter();
  const stream = createWriteStream(temp, { flags: await clearPartial(temp) });
  await once(stream, "open");
  // The IPC writer queues its bytes; this pump moves them to the file, waiting on the stream's own
  // backpressure, and is awaited at the end so every byte is on disk before the rename.
  const pump = (async () => {
    for await (const bytes of writer) {
      if (!stream.write(bytes)) await once(stream, "drain");
    }
  })();
  // Awaited by finish or discard; this only keeps a failure meanwhile from counting as unhandled.
  pump.catch(() => undefined);
  let wrote = false;
  const write = async (chunk: ScoredChunk) => {
    const values = columnValues(chunk, intervals);
    const batch = new RecordBatch(
      Object.fromEntries(
        columns.map((c, i) => [c.name, makeVector(values[i] as ParquetValues).data[0] as Data]),
      ),
    );
    writer.write(batch);
    wrote = true;
  };
  return {
    format,
    write,
    async finish() {
      // Without a batch the writer has no schema and would write nothing: readers need at least that.
      if (!wrote) await write(emptyChunk(intervals));
      writer.finish();
      await pump;
      stream.end();
      await once(stream, "finish");
      await rename(temp, path);
    },
    async discard() {
      writer.abort();
      // The aborted writer may end the pump with an error: expected here, as the output is being dropped.
      await pump.catch(() => undefined);
      stream.destroy();
      await discard();
    },
  };
}
