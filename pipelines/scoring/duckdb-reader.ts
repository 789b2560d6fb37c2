/**
 * Parquet and CSV through a DuckDB streaming query.
 */
import {
  type DuckDBConnection,
  type DuckDBDataChunk,
  DuckDBInstance,
  type DuckDBVector,
} from "@duckdb/node-api";
import duckdb from "@duckdb/node-bindings";
import { RAW_FIELD_NAMES, TIMESTAMP_FIELD } from "../../core/features/index.js";
import { Chunker, checkChunkSize } from "./chunker.js";
import { formatName, InputError } from "./format.js";
import { DATE_FIELD, missingColumns, type ScoringInput } from "./reader.js";

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

export async function openDuckDbInput(path: string, format: "parquet" | "csv"): Promise<ScoringInput> {
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
