import { readFile, stat } from "node:fs/promises";
import { extname } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { tableFromIPC } from "apache-arrow";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";

export interface ActualRow {
  hourStart: number;
  cnt: number;
}

const HOUR_MS = 3_600_000;
const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;
/** A timestamp written without a zone: read as UTC, whatever the machine's time zone. */
const NAIVE_TIME = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/;

const isEmpty = (v: unknown) => v === null || v === undefined || v === "";

/** Milliseconds since the epoch of a cell of the hour column (a Date from DuckDB, a number from Arrow, or text). */
function instantOf(value: unknown): number {
  if (value instanceof Date) return value.getTime();
  if (typeof value === "number" || typeof value === "bigint") return Number(value);
  const text = String(value).trim();
  return new Date(NAIVE_TIME.test(text) ? `${text.replace(" ", "T")}Z` : text).getTime();
}

/** A dteday cell as YYYY-MM-DD: DuckDB reads a date column into a Date at UTC midnight. */
const isoDayOf = (value: unknown) =>
  value instanceof Date ? value.toISOString().slice(0, 10) : String(value);

function toActuals(columns: Record<string, unknown[]>, source: string): ActualRow[] {
  const cnt = columns.cnt;
  if (!cnt) throw new Error(`${source}: needs a column cnt`);
  const hour = columns.hour;
  const dteday = columns.dteday;
  const hr = columns.hr;
  if (!hour && !(dteday && hr))
    throw new Error(`${source}: needs either a column hour (timestamp) or the columns dteday and hr`);
  return cnt.map((c, i) => {
    const row = `${source}: row ${i + 1}`;
    if (isEmpty(c)) throw new Error(`${row}: cnt is empty`);
    const count = Number(c);
    if (!Number.isInteger(count) || count < 0)
      throw new Error(`${row}: cnt must be a non-negative integer, got ${String(c)}`);
    let start: number;
    if (hour) {
      if (isEmpty(hour[i])) throw new Error(`${row}: hour is empty`);
      start = instantOf(hour[i]);
      if (!Number.isFinite(start))
        throw new Error(`${row}: the hour is not a valid time, got ${String(hour[i])}`);
      if (start % HOUR_MS !== 0)
        throw new Error(`${row}: hour must be the start of an hour, got ${new Date(start).toISOString()}`);
    } else {
      const h = Number(hr?.[i]);
      if (isEmpty(hr?.[i]) || !Number.isInteger(h) || h < 0 || h > 23)
        throw new Error(`${row}: hr must be an integer in 0..23, got ${String(hr?.[i] ?? "nothing")}`);
      const day = isoDayOf(dteday?.[i]);
      let dayNo: number;
      try {
        dayNo = dayNumber(day);
      } catch {
        throw new Error(`${row}: dteday must be a date YYYY-MM-DD, got ${JSON.stringify(day)}`);
      }
      start = instantOfLocalHour(dayNo, h).getTime();
    }
    return { hourStart: start, cnt: count };
  });
}

/**
 * Actual counts from CSV or Parquet (read by DuckDB) or Arrow IPC (file or stream). Rows are
 * numbered from 1 after the header; an `hour` without a time zone is UTC, `dteday` + `hr` are
 * Washington's local day and hour like hour.csv.
 */
export async function readActualsFile(path: string): Promise<ActualRow[]> {
  const found = await stat(path).catch((error: unknown) => {
    if (error instanceof Error && "code" in error && error.code === "ENOENT") return undefined;
    throw error;
  });
  if (!found?.isFile()) throw new Error(`${path}: no such file`);
  const ext = extname(path).toLowerCase();
  if (ext === ".arrow" || ext === ".arrows" || ext === ".feather" || ext === ".ipc") {
    const table = tableFromIPC(await readFile(path));
    const columns: Record<string, unknown[]> = {};
    // Row values (not toArray): a timestamp comes back as milliseconds, not as raw 64-bit storage.
    for (const field of table.schema.fields) columns[field.name] = [...(table.getChild(field.name) ?? [])];
    return toActuals(columns, path);
  }
  const reader =
    ext === ".parquet" ? `read_parquet(${sqlString(path)})` : `read_csv(${sqlString(path)}, header = true)`;
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    // DuckDB reads zone-less times in a mixed column in its TimeZone, the machine's by default.
    await connection.run("SET TimeZone = 'UTC'");
    const result = await connection.runAndReadAll(`SELECT * FROM ${reader}`);
    const raw = result.getColumnsObjectJS() as Record<string, unknown[]>;
    const columns = Object.fromEntries(
      Object.entries(raw).map(([k, v]) => [k, v.map((x) => (typeof x === "bigint" ? Number(x) : x))]),
    );
    return toActuals(columns, path);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
