/**
 * The raw record of one hour, as in the UCI Bike Sharing dataset (data/raw/Readme.txt).
 * One table of field specs drives both validation paths (one record, or columns of many),
 * so an online request and a batch file are held to exactly the same rules.
 */

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

export type RawRecord = Record<RawField, number>;

/** Columnar raw data: one array per field, all of the same length. */
export type RawColumns = Record<RawField, ArrayLike<number>> & { readonly length: number };

export interface FieldViolation {
  /** Field path, e.g. "hr" or "inputs[3].hr". */
  readonly field: string;
  /** What is wrong and what is allowed. */
  readonly description: string;
  /** Machine-readable reason, in the spirit of pydantic's error types. */
  readonly type: "missing" | "type" | "range" | "integer" | "extra" | "object";
}

export function allowedValues(spec: FieldSpec): string {
  return spec.kind === "integer"
    ? `an integer in ${spec.min}..${spec.max} (${spec.description})`
    : `a number in [${spec.min}, ${spec.max}] (${spec.description})`;
}

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

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string")
    return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  return `a ${typeof value}`;
}

export type ValidationResult =
  | { readonly ok: true; readonly record: RawRecord }
  | { readonly ok: false; readonly violations: FieldViolation[] };

/**
 * Validates one record from an untrusted source (JSON body, RPC message). Strict:
 * numbers must be JSON numbers (no "3" strings), unknown fields are rejected so a
 * misspelt field is not silently ignored, and every problem is reported, not just the first.
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
          description: `must be an object with the fields ${RAW_FIELD_NAMES.join(", ")}; got ${describe(input)}`,
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
        description: `is required: ${allowedValues(spec)}`,
      });
      continue;
    }
    if (typeof value !== "number" || !Number.isFinite(value)) {
      violations.push({
        field: at(spec.name),
        type: "type",
        description: `must be ${allowedValues(spec)}, got ${describe(value)}`,
      });
      continue;
    }
    const problem = checkValue(spec, value);
    if (problem) violations.push({ field: at(spec.name), ...problem });
    else record[spec.name] = value;
  }
  for (const key of Object.keys(source)) {
    if (!SPEC_BY_NAME.has(key) && !allowExtra.includes(key)) {
      violations.push({
        field: at(key),
        type: "extra",
        description: `is not a known field; the fields are ${RAW_FIELD_NAMES.join(", ")}`,
      });
    }
  }
  return violations.length === 0 ? { ok: true, record } : { ok: false, violations };
}

export interface RowViolation extends FieldViolation {
  /** 0-based index of the row in the batch. */
  readonly row: number;
}

/** Validates columns of many rows; NaN marks a value that was missing or not a number in the source. */
export function validateColumns(columns: RawColumns): RowViolation[] {
  const violations: RowViolation[] = [];
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
