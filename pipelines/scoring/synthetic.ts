/**
 * Large scoring inputs for load tests and the benchmark: the hours of a source file (hour.csv) repeated
 * until `rows`, written as CSV, Parquet (both by DuckDB) or Arrow IPC file/stream (by apache-arrow, in
 * batches), with the 12 raw fields and `dteday`. Memory stays bounded whatever `rows` is.
 */
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { extname } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import {
  type Data,
  DateDay,
  Float64,
  Int8,
  makeData,
  RecordBatch,
  RecordBatchFileWriter,
  RecordBatchStreamWriter,
} from "apache-arrow";
import { RAW_FIELD_NAMES, RAW_FIELDS } from "../../core/features/index.js";
import { openScoringInput } from "./input.js";

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

async function duckdbCopy(source: string, rows: number, target: string, format: "csv" | "parquet") {
  const instance = await DuckDBInstance.create(":memory:", { memory_limit: "512MB", threads: "1" });
  const connection = await instance.connect();
  try {
    const fields = RAW_FIELD_NAMES.map((f) => `"${f}"`).join(", ");
    // Copies of the source in order: the cross join with range() repeats it, ORDER BY keeps each copy
    // in file order, LIMIT cuts to exactly `rows`.
    await connection.run(
      `COPY (
         SELECT ${fields}, dteday
         FROM (SELECT *, row_number() OVER () AS line FROM read_csv(${sqlString(source)}, header = true)) AS h,
              range(${Math.ceil(rows / 17_379) + 1}) AS copies(copy)
         ORDER BY copy, line
         LIMIT ${rows})
       TO ${sqlString(target)} (FORMAT ${format})`,
    );
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

/** Writes `rows` rows to `target`; the format follows its extension (.csv, .parquet, .arrow, .arrows). */
export async function writeSyntheticInput(source: string, target: string, rows: number): Promise<void> {
  const ext = extname(target).toLowerCase();
  if (ext === ".csv" || ext === ".parquet")
    return duckdbCopy(source, rows, target, ext === ".csv" ? "csv" : "parquet");
  if (ext !== ".arrow" && ext !== ".arrows") throw new Error(`writeSyntheticInput: unknown extension ${ext}`);
  // Parquet first (DuckDB is quick at it), then its chunks re-encoded as Arrow record batches.
  const staging = `${target}.staging.parquet`;
  await duckdbCopy(source, rows, staging, "parquet");
  const input = await openScoringInput(staging);
  const writer = ext === ".arrow" ? new RecordBatchFileWriter() : new RecordBatchStreamWriter();
  const out = createWriteStream(target);
  const pump = (async () => {
    for await (const bytes of writer) if (!out.write(bytes)) await once(out, "drain");
  })();
  try {
    for await (const chunk of input.chunks(65_536)) {
      const columns: Record<string, Data> = {};
      for (const f of RAW_FIELDS) {
        const values = chunk.fields[f.name];
        columns[f.name] =
          f.kind === "integer"
            ? makeData({ type: new Int8(), data: Int8Array.from(values) })
            : makeData({ type: new Float64(), data: values });
      }
      columns.dteday = makeData({ type: new DateDay(), data: Int32Array.from(chunk.day ?? []) });
      writer.write(new RecordBatch(columns));
    }
    writer.finish();
    await pump;
    out.end();
    await once(out, "finish");
  } finally {
    await input.close();
    await rm(staging, { force: true });
  }
}
