/**
 * Batch scoring of a file: read in chunks, validate every row with the same rules as online requests,
 * compute the one feature definition, predict, and write the scored rows, while invalid rows go to a
 * CSV side file (row, field, reason) — never silently dropped.
 *
 * Memory is bounded by the chunk size: at most `concurrency` chunks are being predicted while the
 * previous one is written and the next one is read, validated and turned into features. With a model
 * that predicts off this thread (OnnxWorkerModel, the native booster), that work overlaps the
 * prediction, so on a machine with a free core the file costs about what the prediction costs.
 *
 * Safe for a server job: outputs go to temp files renamed into place only after the last row, so a
 * failure or cancel leaves the previous output (if any) untouched and no truncated file behind; on any
 * failure it waits for predictions in flight before cleaning up, so nothing runs after it returns.
 */

import { once } from "node:events";
import { createWriteStream, type WriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { resolve } from "node:path";
import {
  FEATURE_NAMES,
  featureMatrix,
  RAW_FIELD_NAMES,
  type RawColumns,
  type RawField,
  type RowViolation,
  TIMESTAMP_FIELD,
  validateColumns,
} from "../../core/features/index.js";
import { type InputChunk, type InputFormat, openScoringInput, type ScoringInput } from "./input.js";
import type { RawRowsModel, ScoringModel } from "./model.js";
import {
  clearPartial,
  type OutputFormat,
  openScoringOutput,
  outputFormatOf,
  partialPath,
  type ScoredChunk,
} from "./output.js";

export const DEFAULT_CHUNK_SIZE = 65_536;
const MAX_ROWS = 2 ** 31 - 1;

export interface ScoringProgress {
  /** Rows read from the input so far. */
  rowsRead: number;
  /** Rows predicted and written to the output. */
  rowsScored: number;
  /** Rows written to the invalid-rows file. */
  rowsInvalid: number;
  /** Rows in the input, when known before reading it (Parquet). */
  totalRows?: number;
}

export interface ScoreFileOptions {
  input: string;
  output: string;
  /** CSV of rejected rows (row, field, reason); default `<output>.invalid.csv`. */
  invalidOutput?: string;
  model: ScoringModel | RawRowsModel;
  /** Rows per chunk (default 65,536). */
  chunkSize?: number;
  /** Chunks predicted at the same time (default 1: the model's own threads are the parallelism). */
  concurrency?: number;
  signal?: AbortSignal;
  /** Called after every chunk is written, and once at the end. */
  onProgress?: (progress: ScoringProgress) => void;
  /** When set, the output gets `lower` and `upper` columns: the interval of each row's prediction. */
  interval?: (columns: RawColumns, predictions: Float32Array) => { lower: Float64Array; upper: Float64Array };
}

export interface ScoringSummary extends ScoringProgress {
  input: string;
  output: string;
  invalidOutput: string;
  inputFormat: InputFormat;
  outputFormat: OutputFormat;
  /** One line per problem: a row with two bad fields has two lines. */
  violations: number;
  seconds: number;
}

export const defaultInvalidOutput = (output: string) => `${output}.invalid.csv`;

const csvCell = (s: string) => (/[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);

/** The invalid-rows CSV, written beside its target and renamed into place at the end like the output. */
class InvalidRowsFile {
  private readonly temp: string;
  private readonly stream: WriteStream;

  private constructor(
    private readonly path: string,
    flags: string,
  ) {
    this.temp = partialPath(path);
    this.stream = createWriteStream(this.temp, { flags });
  }

  static async open(path: string): Promise<InvalidRowsFile> {
    const file = new InvalidRowsFile(path, await clearPartial(partialPath(path)));
    await once(file.stream, "open");
    await file.put("row,field,reason\n");
    return file;
  }

  private async put(text: string): Promise<void> {
    if (!this.stream.write(text)) await once(this.stream, "drain");
  }

  async write(firstRow: number, violations: readonly RowViolation[]): Promise<void> {
    if (violations.length === 0) return;
    let text = "";
    for (const v of violations) {
      text += `${firstRow + v.row},${csvCell(v.field)},${csvCell(`${v.field} ${v.description}`)}\n`;
    }
    await this.put(text);
  }

  async finish(): Promise<void> {
    this.stream.end();
    await once(this.stream, "finish");
    await rename(this.temp, this.path);
  }

  async discard(): Promise<void> {
    this.stream.destroy();
    await rm(this.temp, { force: true });
  }
}

interface Prepared {
  /** Valid rows only. */
  scored: Omit<ScoredChunk, "predictions">;
  columns: RawColumns;
  violations: RowViolation[];
  invalidRows: number;
}

/** The hour of a timestamp must agree with `hr`, as validateRecord requires of a request. */
function hourMismatches(chunk: InputChunk): RowViolation[] {
  const { hour } = chunk;
  if (hour === undefined) return [];
  const out: RowViolation[] = [];
  const hr = chunk.fields.hr;
  for (let i = 0; i < chunk.length; i++) {
    const h = hour[i] as number;
    const v = hr[i] as number;
    if (!Number.isNaN(h) && Number.isInteger(v) && v >= 0 && v <= 23 && v !== h) {
      out.push({
        row: i,
        field: "hr",
        type: "mismatch",
        description: `must agree with the ${TIMESTAMP_FIELD}: its local hour in Washington, D.C. is ${h}, but hr is ${v}`,
      });
    }
  }
  return out;
}

function prepare(chunk: InputChunk): Prepared {
  const columns: RawColumns = {
    ...chunk.fields,
    length: chunk.length,
    ...(chunk.day ? { day: chunk.day } : {}),
  };
  const violations = [...chunk.problems, ...validateColumns(columns), ...hourMismatches(chunk)].sort(
    (a, b) => a.row - b.row,
  );
  const bad = new Uint8Array(chunk.length);
  let invalidRows = 0;
  for (const v of violations) {
    if (bad[v.row] === 0) invalidRows++;
    bad[v.row] = 1;
  }
  const n = chunk.length - invalidRows;
  const rows = new Int32Array(n);
  if (invalidRows === 0) {
    for (let i = 0; i < n; i++) rows[i] = chunk.firstRow + i;
    return { scored: { length: n, rows, fields: chunk.fields }, columns, violations, invalidRows };
  }
  const keep = new Int32Array(n);
  for (let i = 0, k = 0; i < chunk.length; i++) {
    if (bad[i] === 0) {
      keep[k] = i;
      rows[k] = chunk.firstRow + i;
      k++;
    }
  }
  const pick = (a: Float64Array) => Float64Array.from(keep, (i) => a[i] as number);
  const fields = {} as Record<RawField, Float64Array>;
  for (const f of RAW_FIELD_NAMES) fields[f] = pick(chunk.fields[f]);
  const day = chunk.day ? pick(chunk.day) : undefined;
  return {
    scored: { length: n, rows, fields },
    columns: { ...fields, length: n, ...(day ? { day } : {}) },
    violations,
    invalidRows,
  };
}

function checkOptions(options: ScoreFileOptions): { chunkSize: number; concurrency: number } {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > 10_000_000)
    throw new RangeError(`chunkSize must be an integer in 1..10000000, got ${options.chunkSize}`);
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)
    throw new RangeError(`concurrency must be an integer in 1..64, got ${options.concurrency}`);
  const names = "featureNames" in options.model ? options.model.featureNames : FEATURE_NAMES;
  if (JSON.stringify(names) !== JSON.stringify(FEATURE_NAMES)) {
    throw new Error(
      `the model reads the features [${names.join(", ")}]; scoring computes [${FEATURE_NAMES.join(", ")}]`,
    );
  }
  const paths = [
    options.input,
    options.output,
    options.invalidOutput ?? defaultInvalidOutput(options.output),
  ];
  if (new Set(paths.map((p) => resolve(p))).size !== 3)
    throw new Error(
      `input, output and invalid-rows file must be three different files, got ${paths.join(", ")}`,
    );
  outputFormatOf(options.output);
  return { chunkSize, concurrency };
}

export async function scoreFile(options: ScoreFileOptions): Promise<ScoringSummary> {
  const started = performance.now();
  const { chunkSize, concurrency } = checkOptions(options);
  const { model, signal, onProgress } = options;
  const invalidOutput = options.invalidOutput ?? defaultInvalidOutput(options.output);
  signal?.throwIfAborted();

  const input: ScoringInput = await openScoringInput(options.input);
  const progress: ScoringProgress = {
    rowsRead: 0,
    rowsScored: 0,
    rowsInvalid: 0,
    ...(input.totalRows !== undefined ? { totalRows: input.totalRows } : {}),
  };
  let violationCount = 0;
  const inFlight: {
    scored: Prepared["scored"];
    columns: RawColumns;
    prediction: Promise<Float32Array>;
  }[] = [];
  let output: Awaited<ReturnType<typeof openScoringOutput>> | undefined;
  let invalid: InvalidRowsFile | undefined;
  try {
    output = await openScoringOutput(options.output, undefined, {
      intervals: options.interval !== undefined,
    }).catch((error: unknown) => {
      throw new Error(`cannot write ${options.output}: ${(error as Error).message}`, { cause: error });
    });
    invalid = await InvalidRowsFile.open(invalidOutput).catch((error: unknown) => {
      throw new Error(`cannot write ${invalidOutput}: ${(error as Error).message}`, { cause: error });
    });
    const out = output;

    // Predicted chunks wait here for their turn to be written, in input order.
    const predicted: ScoredChunk[] = [];
    const awaitHead = async () => {
      const head = inFlight.shift();
      if (head === undefined) return;
      const predictions = await head.prediction;
      if (predictions.length !== head.scored.length)
        throw new Error(
          `the model returned ${predictions.length} predictions for ${head.scored.length} rows`,
        );
      const interval = options.interval?.(head.columns, predictions);
      predicted.push({ ...head.scored, predictions, ...interval });
    };
    const writePredicted = async () => {
      for (let chunk = predicted.shift(); chunk !== undefined; chunk = predicted.shift()) {
        await out.write(chunk);
        progress.rowsScored += chunk.length;
        onProgress?.({ ...progress });
      }
    };

    for await (const chunk of input.chunks(chunkSize)) {
      signal?.throwIfAborted();
      progress.rowsRead += chunk.length;
      if (progress.rowsRead > MAX_ROWS)
        throw new Error(`${options.input} has more than ${MAX_ROWS} rows; split it into several files`);
      const prepared = prepare(chunk);
      await invalid.write(chunk.firstRow, prepared.violations);
      progress.rowsInvalid += prepared.invalidRows;
      violationCount += prepared.violations.length;
      const { length } = prepared.scored;
      // Features are computed before waiting for the model, and the finished chunk is written only
      // after this one is handed over: the model is never idle while this thread reads or writes.
      const features = length === 0 || "predictRows" in model ? undefined : featureMatrix(prepared.columns);
      while (inFlight.length >= concurrency) await awaitHead();
      const prediction =
        length === 0
          ? Promise.resolve(new Float32Array(0))
          : "predictRows" in model
            ? model.predictRows(prepared.columns)
            : model.predict(features as Float32Array, length);
      // Awaited in order by awaitHead; this only keeps a failure from counting as unhandled meanwhile.
      prediction.catch(() => undefined);
      inFlight.push({ scored: prepared.scored, columns: prepared.columns, prediction });
      await writePredicted();
    }
    while (inFlight.length > 0) await awaitHead();
    await writePredicted();
    signal?.throwIfAborted();
    await output.finish();
    await invalid.finish();
  } catch (error) {
    await Promise.allSettled(inFlight.map((f) => f.prediction));
    await output?.discard().catch(() => undefined);
    await invalid?.discard().catch(() => undefined);
    throw error;
  } finally {
    await input.close();
  }
  onProgress?.({ ...progress });
  return {
    ...progress,
    input: options.input,
    output: options.output,
    invalidOutput,
    inputFormat: input.format,
    outputFormat: output.format,
    violations: violationCount,
    seconds: (performance.now() - started) / 1000,
  };
}
