import { RAW_FIELD_NAMES, type RawColumns, type RawField, type RawRecord } from "./schema.js";

/**
 * The one feature definition of the platform. Training, online prediction and batch
 * scoring all call `featureMatrix`, so a model never sees features computed differently
 * from those it was trained on.
 */
interface FeatureDef {
  readonly name: string;
  /** Value of the feature for row i of the raw columns. */
  readonly value: (columns: RawColumns, i: number) => number;
}

const raw = (field: RawField): FeatureDef => ({ name: field, value: (c, i) => c[field][i] as number });

const FEATURE_DEFS: readonly FeatureDef[] = [
  ...RAW_FIELD_NAMES.map(raw),
  // Hour on working days and on days off follow different curves (commute peaks vs a
  // midday hump); one feature that separates them lets a tree split once instead of twice.
  { name: "workingday_hr", value: (c, i) => (c.workingday[i] as number) * 24 + (c.hr[i] as number) },
];

export const FEATURE_NAMES: readonly string[] = FEATURE_DEFS.map((f) => f.name);
export const NUM_FEATURES = FEATURE_DEFS.length;
/** Bumped whenever a feature changes meaning; stored with every model. */
export const FEATURE_SCHEMA_VERSION = 1;

/** Row-major float32 matrix [rows × NUM_FEATURES], the layout XGBoost and ONNX Runtime read. */
export function featureMatrix(columns: RawColumns): Float32Array {
  const rows = columns.length;
  const out = new Float32Array(rows * NUM_FEATURES);
  for (let f = 0; f < NUM_FEATURES; f++) {
    const def = FEATURE_DEFS[f] as FeatureDef;
    for (let i = 0; i < rows; i++) out[i * NUM_FEATURES + f] = def.value(columns, i);
  }
  return out;
}

/** Turns validated records into columns, so single requests use the columnar path too. */
export function recordsToColumns(records: readonly RawRecord[]): RawColumns {
  const columns = { length: records.length } as { length: number } & Record<RawField, Float64Array>;
  for (const name of RAW_FIELD_NAMES) {
    const column = new Float64Array(records.length);
    for (let i = 0; i < records.length; i++) column[i] = (records[i] as RawRecord)[name];
    columns[name] = column;
  }
  return columns;
}

export function featuresOfRecord(record: RawRecord): Float32Array {
  return featureMatrix(recordsToColumns([record]));
}
