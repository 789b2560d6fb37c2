import { dayNumber, daysSincePreviousHoliday, daysToNextHoliday, isYearEndBreak } from "./calendar.js";
import { RAW_FIELD_NAMES, type RawColumns, type RawField, type RawRecord } from "./schema.js";

/**
 * The one feature definition of the platform. Training, online prediction and batch
 * scoring all call `featureMatrix`, so a model never sees features computed differently
 * from those it was trained on.
 */
interface FeatureDef {
  readonly name: string;
  /**
   * Writes the feature of every row into column `f` of the row-major matrix `out` with `stride` columns.
   * A loop per feature rather than a function per value: one call site shared by all features cannot
   * be inlined, and that call was most of the cost of batch scoring's features.
   */
  readonly fill: (columns: RawColumns, out: Float32Array, f: number, stride: number) => void;
}

const raw = (field: RawField): FeatureDef => ({
  name: field,
  fill: (c, out, f, stride) => {
    const column = c[field];
    for (let i = 0, k = f; i < c.length; i++, k += stride) out[k] = column[i] as number;
  },
});

/**
 * Holiday effects are local: the day after Thanksgiving, the working days around Christmas. Beyond a
 * week a distance says nothing about a holiday and everything about the date, and trees then learn
 * "n days before Thanksgiving 2011" from the single year of history (measured: uncapped distances
 * make split T test RMSE worse than no date at all; docs/modeling.md).
 */
export const HOLIDAY_DISTANCE_CAP = 7;

/** A feature of the date: NaN when the date is unknown, which XGBoost and the ONNX graph route by the learned default direction. */
const ofDate = (name: string, of: (day: number) => number): FeatureDef => {
  // Many rows share a day (24 hours, many requests), and the holiday search is not free.
  const cache = new Map<number, number>();
  const cached = (day: number) => {
    let v = cache.get(day);
    if (v === undefined) {
      v = of(day);
      if (cache.size > 10_000) cache.clear();
      cache.set(day, v);
    }
    return v;
  };
  return {
    name,
    fill: (c, out, f, stride) => {
      const days = c.day;
      let lastDay = Number.NaN;
      let last = Number.NaN;
      for (let i = 0, k = f; i < c.length; i++, k += stride) {
        const day = days === undefined ? Number.NaN : (days[i] as number);
        if (day !== lastDay && !Number.isNaN(day)) {
          lastDay = day;
          last = cached(day);
        }
        out[k] = Number.isNaN(day) ? Number.NaN : last;
      }
    },
  };
};

const FEATURE_DEFS: readonly FeatureDef[] = [
  ...RAW_FIELD_NAMES.map(raw),
  // Hour on working days and on days off follow different curves (commute peaks vs a
  // midday hump); one feature that separates them lets a tree split once instead of twice.
  {
    name: "workingday_hr",
    fill: (c, out, f, stride) => {
      const { workingday, hr } = c;
      for (let i = 0, k = f; i < c.length; i++, k += stride)
        out[k] = (workingday[i] as number) * 24 + (hr[i] as number);
    },
  },
  // Date-derived (schema version 2): need the date of the hour, which only requests with a timestamp carry.
  ofDate("days_to_holiday", (d) => Math.min(HOLIDAY_DISTANCE_CAP, daysToNextHoliday(d))),
  ofDate("days_since_holiday", (d) => Math.min(HOLIDAY_DISTANCE_CAP, daysSincePreviousHoliday(d))),
  ofDate("year_end_break", (d) => (isYearEndBreak(d) ? 1 : 0)),
];

export const FEATURE_NAMES: readonly string[] = FEATURE_DEFS.map((f) => f.name);
export const NUM_FEATURES = FEATURE_DEFS.length;
/** The features computed from the date alone (NaN when it is unknown). */
export const DATE_FEATURE_NAMES: readonly string[] = [
  "days_to_holiday",
  "days_since_holiday",
  "year_end_break",
];
/** Bumped whenever a feature changes meaning; stored with every model. 2: date-derived features. */
export const FEATURE_SCHEMA_VERSION = 2;

/** Row-major float32 matrix [rows × NUM_FEATURES], the layout XGBoost and ONNX Runtime read. */
export function featureMatrix(columns: RawColumns): Float32Array {
  const rows = columns.length;
  if (columns.day !== undefined && columns.day.length !== rows) {
    throw new Error(`column day has ${columns.day.length} values, expected ${rows}`);
  }
  const out = new Float32Array(rows * NUM_FEATURES);
  FEATURE_DEFS.forEach((def, f) => {
    def.fill(columns, out, f, NUM_FEATURES);
  });
  return out;
}

/** Turns validated records into columns, so single requests use the columnar path too. */
export function recordsToColumns(records: readonly RawRecord[]): RawColumns {
  const columns = { length: records.length } as { length: number; day: Float64Array } & Record<
    RawField,
    Float64Array
  >;
  for (const name of RAW_FIELD_NAMES) {
    const column = new Float64Array(records.length);
    for (let i = 0; i < records.length; i++) column[i] = (records[i] as RawRecord)[name];
    columns[name] = column;
  }
  columns.day = Float64Array.from(records, (r) => r.day ?? Number.NaN);
  return columns;
}

export function featuresOfRecord(record: RawRecord): Float32Array {
  return featureMatrix(recordsToColumns([record]));
}

/** A `day` column from dates (YYYY-MM-DD, e.g. HourlyDataset.dteday); "" or null-like entries become NaN. */
export function dayColumn(dates: readonly string[]): Float64Array {
  return Float64Array.from(dates, (d) => (d === "" ? Number.NaN : dayNumber(d)));
}

/** The same columns with the date of each row set (or, with `undefined`, removed: a date-blind copy). */
export function withDays(columns: RawColumns, day: ArrayLike<number> | undefined): RawColumns {
  const { day: _previous, ...rest } = columns;
  return day === undefined ? rest : { ...rest, day };
}
