/**
 * What every scoring input reader yields (chunks of the raw fields as Float64 columns) and the columns
 * it requires of a file, whatever the format.
 */
import {
  RAW_FIELD_NAMES,
  type RawField,
  type RowViolation,
  TIMESTAMP_FIELD,
} from "../../core/features/index.js";
import { formatName, InputError, type InputFormat } from "./format.js";

/** The optional column that gives the date of each row (YYYY-MM-DD), as in hour.csv. */
export const DATE_FIELD = "dteday";

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

export function missingColumns(path: string, format: InputFormat, names: readonly string[]): void {
  const missing = RAW_FIELD_NAMES.filter((f) => !names.includes(f));
  if (missing.length > 0) {
    throw new InputError(
      `${path} (${formatName(format)}) has no column ${missing.join(", ")}; scoring needs the columns ` +
        `${RAW_FIELD_NAMES.join(", ")} and optionally ${TIMESTAMP_FIELD} (ISO-8601 with offset) or ${DATE_FIELD} (YYYY-MM-DD)`,
    );
  }
}
