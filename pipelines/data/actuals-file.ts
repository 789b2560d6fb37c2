import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { tableFromIPC } from "apache-arrow";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";

export interface ActualRow {
  hourStart: number;
  cnt: number;
}

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

function toActuals(columns: Record<string, unknown[]>, source: string): ActualRow[] {
  const cnt = columns.cnt;
  if (!cnt) throw new Error(`${source}: needs a column cnt`);
  const hour = columns.hour;
  const dteday = columns.dteday;
  const hr = columns.hr;
  if (!hour && !(dteday && hr))
    throw new Error(`${source}: needs either a column hour (timestamp) or the columns dteday and hr`);
  return cnt.map((c, i) => {
    const count = Number(c);
    if (!Number.isInteger(count) || count < 0)
      throw new Error(`${source}: row ${i + 1}: cnt must be a non-negative integer, got ${String(c)}`);
    const start = hour
      ? new Date(hour[i] as string | number | Date).getTime()
      : instantOfLocalHour(dayNumber(String(dteday?.[i]).slice(0, 10)), Number(hr?.[i])).getTime();
    if (!Number.isFinite(start)) throw new Error(`${source}: row ${i + 1}: the hour is not a valid time`);
    return { hourStart: start, cnt: count };
  });
}

/** Actual counts from CSV or Parquet (read by DuckDB) or Arrow IPC (file or stream). */
export async function readActualsFile(path: string): Promise<ActualRow[]> {
  const ext = extname(path).toLowerCase();
  if (ext === ".arrow" || ext === ".arrows" || ext === ".feather" || ext === ".ipc") {
    const table = tableFromIPC(await readFile(path));
    const columns: Record<string, unknown[]> = {};
    for (const field of table.schema.fields)
      columns[field.name] = Array.from(table.getChild(field.name)?.toArray() ?? []);
    return toActuals(columns, path);
  }
  const reader =
    ext === ".parquet" ? `read_parquet(${sqlString(path)})` : `read_csv(${sqlString(path)}, header = true)`;
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    const result = await connection.runAndReadAll(`SELECT * FROM ${reader}`);
    const raw = result.getColumnsObjectJS() as Record<string, unknown[]>;
    const columns = Object.fromEntries(
      Object.entries(raw).map(([k, v]) => [
        k,
        v.map((x) =>
          typeof x === "bigint" ? Number(x) : x instanceof Object && "toString" in x ? String(x) : x,
        ),
      ]),
    );
    return toActuals(columns, path);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
