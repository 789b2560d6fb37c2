import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { DuckDBInstance } from "@duckdb/node-api";
import { BikeshareError } from "../../core/errors.js";
import {
  RAW_FIELD_NAMES,
  type RawColumns,
  type RawField,
  type RowViolation,
  validateColumns,
} from "../../core/features/index.js";

/** Labelled hours read from the warehouse: raw columns, the date of each hour, and the target. */
export interface HourlyDataset {
  readonly columns: RawColumns;
  /** Date of each hour as YYYY-MM-DD. */
  readonly dteday: readonly string[];
  /** Observed rentals (`cnt`). */
  readonly cnt: Float64Array;
  /** sha256 of the source file, stored with every model trained on it. */
  readonly fingerprint: string;
  readonly source: string;
}

export class DataValidationError extends BikeshareError {
  constructor(
    readonly source: string,
    override readonly violations: readonly RowViolation[],
  ) {
    const shown = violations
      .slice(0, 20)
      .map((v) => `  line ${v.row + 2}: ${v.field} ${v.description}`)
      .join("\n");
    const more = violations.length > 20 ? `\n  … and ${violations.length - 20} more` : "";
    super(
      "invalid_argument",
      `${source}: ${violations.length} invalid value(s); no row was loaded:\n${shown}${more}`,
      {
        violations,
      },
    );
    this.name = "DataValidationError";
  }
}

function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * Reads hour.csv-shaped data through DuckDB. Every column is read as text and cast
 * with TRY_CAST so that a bad cell becomes a reported violation with its line number
 * instead of a failed load or a silently guessed type.
 */
export async function loadHourly(path: string): Promise<HourlyDataset> {
  const fingerprint = createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    const numeric = [...RAW_FIELD_NAMES, "cnt"].map((c) => `TRY_CAST("${c}" AS DOUBLE) AS "${c}"`).join(", ");
    const reader = await connection.runAndReadAll(
      `SELECT strftime(TRY_CAST(dteday AS DATE), '%Y-%m-%d') AS dteday, ${numeric}
       FROM read_csv(${sqlString(path)}, header = true, all_varchar = true)`,
    );
    const raw = reader.getColumnsObjectJS() as Record<string, (number | string | null)[]>;
    const rows = reader.currentRowCount;
    const toFloat = (name: string) =>
      Float64Array.from(raw[name] ?? [], (v) => (v === null ? Number.NaN : Number(v)));
    const columns = { length: rows } as { length: number } & Record<RawField, Float64Array>;
    for (const name of RAW_FIELD_NAMES) columns[name] = toFloat(name);
    const cnt = toFloat("cnt");
    const dteday = (raw.dteday ?? []).map((d) => (d === null ? "" : String(d)));

    const violations: RowViolation[] = validateColumns(columns);
    for (let row = 0; row < rows; row++) {
      if (dteday[row] === "") {
        violations.push({ row, field: "dteday", type: "type", description: "must be a date YYYY-MM-DD" });
      }
      const c = cnt[row] as number;
      if (!Number.isInteger(c) || c < 0) {
        violations.push({
          row,
          field: "cnt",
          type: "range",
          description: `must be a non-negative integer, got ${c}`,
        });
      }
    }
    if (violations.length > 0)
      throw new DataValidationError(
        path,
        violations.sort((a, b) => a.row - b.row),
      );
    return { columns, dteday, cnt, fingerprint, source: path };
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

/** The rows of `data` at `indices`, as a new dataset. */
export function selectRows(data: HourlyDataset, indices: readonly number[]): HourlyDataset {
  const columns = { length: indices.length } as { length: number } & Record<RawField, Float64Array>;
  for (const name of RAW_FIELD_NAMES) {
    const source = data.columns[name];
    columns[name] = Float64Array.from(indices, (i) => source[i] as number);
  }
  return {
    columns,
    dteday: indices.map((i) => data.dteday[i] as string),
    cnt: Float64Array.from(indices, (i) => data.cnt[i] as number),
    fingerprint: data.fingerprint,
    source: data.source,
  };
}
