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
import { openArrowInput } from "./arrow-reader.js";
import { openDuckDbInput } from "./duckdb-reader.js";
import { detectInputFormat } from "./format.js";
import type { ScoringInput } from "./reader.js";

export { detectInputFormat, formatName, InputError, type InputFormat } from "./format.js";
export { DATE_FIELD, type InputChunk, type ScoringInput } from "./reader.js";

export async function openScoringInput(path: string): Promise<ScoringInput> {
  const format = await detectInputFormat(path);
  return format === "parquet" || format === "csv"
    ? openDuckDbInput(path, format)
    : openArrowInput(path, format);
}
