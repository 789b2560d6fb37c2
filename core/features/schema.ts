/**
 * The raw record of one hour, as in the UCI Bike Sharing dataset (data/raw/Readme.txt).
 * One table of field specs drives both validation paths (one record, or columns of many),
 * so an online request and a batch file are held to exactly the same rules.
 */
import { civilDate, localDayAndHour } from "./calendar.js";

export type RawField =
  | "season"
  | "yr"
  | "mnth"
  | "hr"
  | "holiday"
  | "weekday"
  | "workingday"
  | "weathersit"
  | "temp"
  | "atemp"
  | "hum"
  | "windspeed";

export interface FieldSpec {
  readonly name: RawField;
  readonly kind: "integer" | "number";
  readonly min: number;
  readonly max: number;
  readonly description: string;
}

export const RAW_FIELDS: readonly FieldSpec[] = [
  { name: "season", kind: "integer", min: 1, max: 4, description: "1 winter, 2 spring, 3 summer, 4 fall" },
  { name: "yr", kind: "integer", min: 0, max: 1, description: "0 for 2011, 1 for 2012" },
  { name: "mnth", kind: "integer", min: 1, max: 12, description: "month" },
  { name: "hr", kind: "integer", min: 0, max: 23, description: "hour of the day" },
  { name: "holiday", kind: "integer", min: 0, max: 1, description: "1 if a public holiday" },
  { name: "weekday", kind: "integer", min: 0, max: 6, description: "day of the week, 0 = Sunday" },
  { name: "workingday", kind: "integer", min: 0, max: 1, description: "1 if neither weekend nor holiday" },
  {
    name: "weathersit",
    kind: "integer",
    min: 1,
    max: 4,
    description: "1 clear, 2 mist, 3 light rain/snow, 4 heavy rain/snow",
  },
  { name: "temp", kind: "number", min: 0, max: 1, description: "normalised temperature" },
  { name: "atemp", kind: "number", min: 0, max: 1, description: "normalised feeling temperature" },
  { name: "hum", kind: "number", min: 0, max: 1, description: "normalised humidity" },
  { name: "windspeed", kind: "number", min: 0, max: 1, description: "normalised wind speed" },
];

export const RAW_FIELD_NAMES: readonly RawField[] = RAW_FIELDS.map((f) => f.name);

const SPEC_BY_NAME = new Map<string, FieldSpec>(RAW_FIELDS.map((f) => [f.name, f]));

/** The optional key of a request that carries the start of the hour as an ISO-8601 instant. */
export const TIMESTAMP_FIELD = "timestamp";

/**
 * `day` is the local calendar date of the hour in Washington, D.C. as a day number (days since
 * 1970-01-01, see calendar.ts). It is known when the request carried a timestamp (or the batch a date),
 * and absent otherwise: old clients send only the 12 fields, and the model must work without it.
 */
export type RawRecord = Record<RawField, number> & { day?: number };

/**
 * Columnar raw data: one array per field, all of the same length. `day` as in RawRecord; a missing
 * column, or NaN in it, means the date of that row is unknown.
 */
export type RawColumns = Record<RawField, ArrayLike<number>> & {
  readonly length: number;
  readonly day?: ArrayLike<number>;
};

export interface FieldViolation {
  /** Field path, e.g. "hr" or "inputs[3].hr". */
  readonly field: string;
  /** What is wrong and what is allowed. */
  readonly description: string;
  /** Machine-readable reason, in the spirit of pydantic's error types. */
  readonly type: "missing" | "type" | "range" | "integer" | "extra" | "object" | "mismatch";
}

export function allowedValues(spec: FieldSpec): string {
  return spec.kind === "integer"
    ? `an integer in ${spec.min}..${spec.max} (${spec.description})`
    : `a number in [${spec.min}, ${spec.max}] (${spec.description})`;
}

// Built once: a batch of empty rows reports every field of every row as missing.
const REQUIRED = new Map(RAW_FIELDS.map((spec) => [spec.name, `is required: ${allowedValues(spec)}`]));

/** Checks a numeric value against its field's spec; undefined when valid. */
export function checkValue(spec: FieldSpec, value: number): Omit<FieldViolation, "field"> | undefined {
  if (Number.isNaN(value)) {
    return { type: "type", description: `must be ${allowedValues(spec)}, got a value that is not a number` };
  }
  if (spec.kind === "integer" && !Number.isInteger(value)) {
    return { type: "integer", description: `must be ${allowedValues(spec)}, got ${value}` };
  }
  if (value < spec.min || value > spec.max) {
    return { type: "range", description: `must be ${allowedValues(spec)}, got ${value}` };
  }
  return undefined;
}

/** A short description of a value for an error message: never the whole value, whatever its size. */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length} items`;
  if (typeof value === "string")
    return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return `a ${typeof value}`;
}

/** A key as shown in a field path: a client's unknown key can be any length, the error must not be. */
export function shortKey(key: string): string {
  return key.length > 64 ? `${key.slice(0, 64)}…` : key;
}

/** How many field violations an error reply lists; the rest are only counted, so a reply stays small. */
export const MAX_LISTED_VIOLATIONS = 20;

/**
 * The violations of a request with many rows, keeping the first MAX_LISTED_VIOLATIONS and counting the
 * rest: 10,000 bad rows would otherwise make a reply of megabytes that takes seconds to build.
 */
export class ViolationList {
  readonly listed: FieldViolation[] = [];
  total = 0;
  rowsWithErrors = 0;

  constructor(readonly limit = MAX_LISTED_VIOLATIONS) {}

  /** Adds the violations of one row (none when the row is valid). */
  addRow(violations: readonly FieldViolation[]): void {
    if (violations.length === 0) return;
    this.rowsWithErrors++;
    this.add(violations);
  }

  add(violations: readonly FieldViolation[]): void {
    this.total += violations.length;
    for (const v of violations) {
      if (this.listed.length >= this.limit) break;
      this.listed.push(v);
    }
  }

  /**
   * True once no more violations will be listed: a caller may then validate without field paths, which
   * only counts (building 100,000 paths that nobody reads is most of the cost of a batch of bad rows).
   */
  get full(): boolean {
    return this.listed.length >= this.limit;
  }

  get omitted(): number {
    return this.total - this.listed.length;
  }

  /** "… and 119,980 more violations in 10,000 rows (not listed)", or undefined when all are listed. */
  summary(rowsNoun = "rows"): string | undefined {
    if (this.omitted === 0) return undefined;
    const rows =
      this.rowsWithErrors > 0 ? ` in ${this.rowsWithErrors.toLocaleString("en-US")} ${rowsNoun}` : "";
    return `… and ${this.omitted.toLocaleString("en-US")} more violations${rows} (not listed)`;
  }
}

export type ValidationResult =
  | { readonly ok: true; readonly record: RawRecord }
  | { readonly ok: false; readonly violations: FieldViolation[] };

// RFC 3339 / ISO-8601 date-time WITH an offset: without one, "2012-07-04T17:00" would be read in the
// server's own time zone, so the same request would mean different hours on different machines.
const ISO_INSTANT =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$/;

/** Parses an ISO-8601 instant with an explicit offset; undefined when it is not one. */
export function parseTimestamp(value: string): Date | undefined {
  const m = ISO_INSTANT.exec(value);
  if (m === null) return undefined;
  const [y, mo, d, h, mi] = [1, 2, 3, 4, 5].map((k) => Number(m[k]));
  // Date would roll impossible dates over (2012-02-30 → March 1st); refuse them instead.
  const wall = new Date(0);
  wall.setUTCFullYear(y as number, (mo as number) - 1, d);
  if (
    wall.getUTCMonth() !== (mo as number) - 1 ||
    wall.getUTCDate() !== d ||
    (h as number) > 23 ||
    (mi as number) > 59
  ) {
    return undefined;
  }
  const date = new Date(value);
  return Number.isFinite(date.getTime()) ? date : undefined;
}

/**
 * The first year of the data: `yr` is year − 2011, and only 0 (2011) and 1 (2012) exist. For a date in
 * another year `yr` is not checked against it: the model knows only two year levels, so a client
 * forecasting 2013 or later must choose one (normally 1, the latest) — `yr` is then a model setting,
 * not a fact about the date, and rejecting either choice would break clients that made the other.
 */
export const FIRST_DATA_YEAR = 2011;
const LAST_DATA_YEAR = 2012;

type DateFacts = { hour?: number; yr: number; year: number; mnth: number; weekday: number };

/** The fields that contradict the date; `hr` only when `facts.hour` is given. */
export function dateMismatches(
  facts: DateFacts,
  value: (field: "hr" | "yr" | "mnth" | "weekday") => number | undefined,
): { field: "hr" | "yr" | "mnth" | "weekday"; expected: number; actual: number }[] {
  const out: { field: "hr" | "yr" | "mnth" | "weekday"; expected: number; actual: number }[] = [];
  const check = (field: "hr" | "yr" | "mnth" | "weekday", expected: number) => {
    const actual = value(field);
    if (actual !== undefined && !Number.isNaN(actual) && actual !== expected)
      out.push({ field, expected, actual });
  };
  if (facts.hour !== undefined) check("hr", facts.hour);
  check("weekday", facts.weekday);
  check("mnth", facts.mnth);
  if (facts.year >= FIRST_DATA_YEAR && facts.year <= LAST_DATA_YEAR) check("yr", facts.yr);
  return out;
}

const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

function describeFact(field: "hr" | "yr" | "mnth" | "weekday", expected: number): string {
  switch (field) {
    case "hr":
      return `${String(expected).padStart(2, "0")}:00`;
    case "weekday":
      return `a ${WEEKDAYS[expected]} (weekday ${expected})`;
    case "mnth":
      return `in month ${expected}`;
    case "yr":
      return `in ${FIRST_DATA_YEAR + expected} (yr ${expected})`;
  }
}

/**
 * Validates one record from an untrusted source (JSON body, RPC message). Strict:
 * numbers must be JSON numbers (no "3" strings), unknown fields are rejected so a
 * misspelt field is not silently ignored, and every problem is reported, not just the first.
 *
 * One optional key beyond the 12 fields: `timestamp`, the start of the hour as an ISO-8601 instant
 * with an offset ("2012-07-04T21:00:00Z"). When given, its date in Washington, D.C. becomes the
 * record's `day` (for the date-derived features), and its local hour, weekday, month and year must
 * agree with `hr`, `weekday`, `mnth` and `yr` (type "mismatch", reported on the field).
 */
export function validateRecord(
  input: unknown,
  pathPrefix = "",
  allowExtra: readonly string[] = [],
): ValidationResult {
  const at = (field: string) => (pathPrefix ? `${pathPrefix}.${field}` : field);
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return {
      ok: false,
      violations: [
        {
          field: pathPrefix || "body",
          type: "object",
          description: `must be an object with the fields ${RAW_FIELD_NAMES.join(", ")}; got ${describeValue(input)}`,
        },
      ],
    };
  }
  const source = input as Record<string, unknown>;
  const violations: FieldViolation[] = [];
  const record = {} as RawRecord;
  for (const spec of RAW_FIELDS) {
    const value = source[spec.name];
    if (value === undefined) {
      violations.push({
        field: at(spec.name),
        type: "missing",
        description: REQUIRED.get(spec.name) as string,
      });
      continue;
    }
    if (typeof value !== "number") {
      violations.push({
        field: at(spec.name),
        type: "type",
        description: `must be ${allowedValues(spec)}, got ${describeValue(value)}`,
      });
      continue;
    }
    if (!Number.isFinite(value)) {
      // Binary protobuf and Arrow can carry NaN and ±Infinity, which JSON cannot.
      violations.push({
        field: at(spec.name),
        type: "type",
        description: `${describeValue(value)} is not allowed: must be ${allowedValues(spec)}`,
      });
      continue;
    }
    const problem = checkValue(spec, value);
    if (problem) violations.push({ field: at(spec.name), ...problem });
    else record[spec.name] = value;
  }
  for (const key of Object.keys(source)) {
    if (!SPEC_BY_NAME.has(key) && key !== TIMESTAMP_FIELD && !allowExtra.includes(key)) {
      violations.push({
        field: at(shortKey(key)),
        type: "extra",
        description: `is not a known field; the fields are ${RAW_FIELD_NAMES.join(", ")} and the optional ${TIMESTAMP_FIELD}`,
      });
    }
  }
  const stamp = source[TIMESTAMP_FIELD];
  if (stamp !== undefined) {
    const instant = typeof stamp === "string" ? parseTimestamp(stamp) : undefined;
    if (instant === undefined) {
      violations.push({
        field: at(TIMESTAMP_FIELD),
        type: "type",
        description: `must be an ISO-8601 date-time with a UTC offset, e.g. "2012-07-04T21:00:00Z", got ${describeValue(stamp)}`,
      });
    } else {
      const local = localDayAndHour(instant);
      const shown = stamp as string;
      for (const m of dateMismatches(local, (f) => record[f])) {
        violations.push({
          field: at(m.field),
          type: "mismatch",
          description: `must agree with the timestamp: ${shown} is ${describeFact(m.field, m.expected)} in Washington, D.C., but ${m.field} is ${m.actual}`,
        });
      }
      record.day = local.day;
    }
  }
  return violations.length === 0 ? { ok: true, record } : { ok: false, violations };
}

export interface RowViolation extends FieldViolation {
  /** 0-based index of the row in the batch. */
  readonly row: number;
}

/**
 * Validates columns of many rows; NaN marks a value that was missing or not a number in the source.
 * A `day` column, when present, must hold integer day numbers (NaN = date unknown) whose weekday,
 * month and year agree with the row's fields, as a timestamp must in validateRecord.
 */
export function validateColumns(columns: RawColumns): RowViolation[] {
  const violations: RowViolation[] = [];
  const { day } = columns;
  if (day !== undefined) {
    if (day.length !== columns.length) {
      throw new Error(`column day has ${day.length} values, expected ${columns.length}`);
    }
    // Rows of a file come day by day: the calendar facts of the previous row's day are reused, and a
    // row whose fields all agree with them skips the general check (most of the cost of scoring validation).
    let factsDay = Number.NaN;
    let facts = { year: 0, yr: 0, mnth: 0, weekday: 0 };
    let yrChecked = false;
    for (let row = 0; row < columns.length; row++) {
      const d = day[row] as number;
      if (Number.isNaN(d)) continue;
      if (!Number.isInteger(d)) {
        violations.push({
          row,
          field: "day",
          type: "integer",
          description: `must be a day number, got ${d}`,
        });
        continue;
      }
      if (d !== factsDay) {
        const c = civilDate(d);
        facts = { year: c.year, yr: c.year - FIRST_DATA_YEAR, mnth: c.month, weekday: c.weekday };
        yrChecked = facts.year >= FIRST_DATA_YEAR && facts.year <= LAST_DATA_YEAR;
        factsDay = d;
      }
      if (
        columns.weekday[row] === facts.weekday &&
        columns.mnth[row] === facts.mnth &&
        (!yrChecked || columns.yr[row] === facts.yr)
      )
        continue;
      const valid = (f: RawField) => {
        const v = columns[f][row] as number;
        return checkValue(SPEC_BY_NAME.get(f) as FieldSpec, v) === undefined ? v : undefined;
      };
      for (const m of dateMismatches(facts, valid)) {
        violations.push({
          row,
          field: m.field,
          type: "mismatch",
          description: `must agree with the date of the row: ${describeFact(m.field, m.expected)}, but ${m.field} is ${m.actual}`,
        });
      }
    }
  }
  for (const spec of RAW_FIELDS) {
    const column = columns[spec.name];
    if (column.length !== columns.length) {
      throw new Error(`column ${spec.name} has ${column.length} values, expected ${columns.length}`);
    }
    for (let row = 0; row < columns.length; row++) {
      const problem = checkValue(spec, column[row] as number);
      if (problem) violations.push({ row, field: spec.name, ...problem });
    }
  }
  return violations.sort((a, b) => a.row - b.row);
}
