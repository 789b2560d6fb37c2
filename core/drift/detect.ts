/**
 * Per-feature and whole-dataset drift detection with Evidently's default choice of test
 * (evidently `legacy/calculations/stattests/registry.py: _get_default_stattest`, `data_drift.py`):
 *
 *   reference rows ≤ 1000 (after dropping missing values)
 *     numeric,     distinct values (reference ∪ current) > 5 → "ks"         drift when p ≤ 0.05
 *     numeric,     3–5 distinct values                       → "chisquare"  drift when p < 0.05
 *     categorical, more than 2 distinct values               → "chisquare"  drift when p < 0.05
 *     any kind,    1–2 distinct values                       → "z"          drift when p < 0.05
 *   reference rows > 1000
 *     numeric,     distinct values > 5                       → "wasserstein" (÷ reference std) drift when ≥ 0.1
 *     otherwise                                              → "jensenshannon"                 drift when ≥ 0.1
 *
 * The dataset drifts when the share of drifted features is ≥ 0.5. Missing values — NaN and
 * ±Infinity, which Evidently turns into NaN — are dropped and counted per side; a side with nothing
 * left is an error naming the feature. Every feature also gets Evidently's PSI, for reports.
 *
 * When no kind is given, a feature whose reference has at most 5 distinct values is categorical
 * (Evidently's rule for integer columns; float columns stay numerical there, but the test choice
 * above then treats ≤ 5 distinct values the same way).
 */

import {
  chiSquare,
  distinctValues,
  type FeatureKind,
  jensenShannon,
  ks2samp,
  psi,
  wassersteinNormed,
  zTest,
} from "./stats.js";

export type { FeatureKind } from "./stats.js";

/** At most this many distinct values makes a feature categorical (Evidently's NUMBER_UNIQUE_AS_CATEGORICAL). */
export const CATEGORICAL_MAX_DISTINCT = 5;

export interface DriftThresholds {
  /** p-value threshold of the "ks", "chisquare" and "z" tests (Evidently: 0.05). */
  pValue: number;
  /** distance threshold of "wasserstein" (normed) and "jensenshannon" (Evidently: 0.1). */
  distance: number;
  /** dataset drift when the share of drifted features is at least this (Evidently: 0.5). */
  datasetShare: number;
  /** reference sizes above this use distances instead of tests (Evidently: 1000). */
  largeReferenceRows: number;
}

export const DEFAULT_DRIFT_THRESHOLDS: Readonly<DriftThresholds> = Object.freeze({
  pValue: 0.05,
  distance: 0.1,
  datasetShare: 0.5,
  largeReferenceRows: 1000,
});

export type DriftTest = "ks" | "chisquare" | "z" | "wasserstein" | "jensenshannon";

export interface FeatureDriftResult {
  feature: string;
  test: DriftTest;
  /** The p-value ("ks", "chisquare", "z") or the distance ("wasserstein", "jensenshannon"). */
  statistic: number;
  threshold: number;
  drifted: boolean;
  /** Population stability index of the same data (Evidently's `psi`), whatever the test. */
  psi: number;
  kind: FeatureKind;
  /** Values used on each side, after dropping missing ones. */
  rows: { reference: number; current: number };
  /** NaN and ±Infinity values dropped on each side. */
  missing: { reference: number; current: number };
}

export interface DatasetDriftResult {
  features: FeatureDriftResult[];
  /** Drifted features / features. */
  driftedShare: number;
  datasetDrift: boolean;
}

function resolveThresholds(overrides: Partial<DriftThresholds> | undefined): DriftThresholds {
  const t: DriftThresholds = { ...DEFAULT_DRIFT_THRESHOLDS };
  for (const [key, value] of Object.entries(overrides ?? {})) {
    if (value !== undefined) (t as unknown as Record<string, number>)[key] = value;
  }
  const inUnit = (v: number) => Number.isFinite(v) && v > 0 && v <= 1;
  if (!inUnit(t.pValue)) throw new RangeError(`drift threshold pValue must be in (0, 1], got ${t.pValue}`);
  if (!(Number.isFinite(t.distance) && t.distance > 0)) {
    throw new RangeError(`drift threshold distance must be positive, got ${t.distance}`);
  }
  if (!inUnit(t.datasetShare)) {
    throw new RangeError(`drift threshold datasetShare must be in (0, 1], got ${t.datasetShare}`);
  }
  if (!(Number.isInteger(t.largeReferenceRows) && t.largeReferenceRows >= 0)) {
    throw new RangeError(
      `drift threshold largeReferenceRows must be a non-negative integer, got ${t.largeReferenceRows}`,
    );
  }
  return t;
}

function dropMissing(values: ArrayLike<number>): { values: Float64Array; missing: number } {
  const out = new Float64Array(values.length);
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (Number.isFinite(v)) out[n++] = v;
  }
  return { values: out.subarray(0, n), missing: values.length - n };
}

/** Kind used when none is given: categorical when the reference has at most 5 distinct values. */
export function inferKind(reference: ArrayLike<number>): FeatureKind {
  const { values } = dropMissing(reference);
  return distinctValues(values).length <= CATEGORICAL_MAX_DISTINCT ? "categorical" : "numeric";
}

/** Evidently's default test for a feature, given its cleaned data. */
export function defaultTest(
  reference: ArrayLike<number>,
  current: ArrayLike<number>,
  kind: FeatureKind,
  largeReferenceRows = DEFAULT_DRIFT_THRESHOLDS.largeReferenceRows,
): DriftTest {
  const pooled = new Set<number>();
  for (let i = 0; i < reference.length; i++) pooled.add(reference[i] as number);
  for (let i = 0; i < current.length; i++) pooled.add(current[i] as number);
  const distinct = pooled.size;
  if (reference.length <= largeReferenceRows) {
    if (distinct <= 2) return "z";
    if (kind === "categorical" || distinct <= CATEGORICAL_MAX_DISTINCT) return "chisquare";
    return "ks";
  }
  if (kind === "numeric" && distinct > CATEGORICAL_MAX_DISTINCT) return "wasserstein";
  return "jensenshannon";
}

/**
 * Drift of one feature between reference and current data, with Evidently's default test (see the
 * module comment). `kind` defaults to `inferKind(reference)`.
 */
export function featureDrift(
  name: string,
  reference: ArrayLike<number>,
  current: ArrayLike<number>,
  kind?: FeatureKind,
  thresholds?: Partial<DriftThresholds>,
): FeatureDriftResult {
  const t = resolveThresholds(thresholds);
  if (kind !== undefined && kind !== "numeric" && kind !== "categorical") {
    throw new RangeError(`feature "${name}": unknown kind ${JSON.stringify(kind)}`);
  }
  const ref = dropMissing(reference);
  const cur = dropMissing(current);
  for (const [side, data, total] of [
    ["reference", ref, reference.length],
    ["current", cur, current.length],
  ] as const) {
    if (data.values.length === 0) {
      const why = total === 0 ? "is empty" : `has only missing values (${data.missing} NaN/Infinity)`;
      throw new Error(`feature "${name}": the ${side} data ${why}`);
    }
  }
  const featureKind: FeatureKind = kind ?? inferKind(ref.values);
  const test = defaultTest(ref.values, cur.values, featureKind, t.largeReferenceRows);
  let statistic: number;
  let drifted: boolean;
  let threshold: number;
  switch (test) {
    case "ks":
      threshold = t.pValue;
      statistic = ks2samp(ref.values, cur.values).pValue;
      drifted = statistic <= threshold; // Evidently's ks: p_value <= threshold
      break;
    case "chisquare":
      threshold = t.pValue;
      statistic = chiSquare(ref.values, cur.values).pValue;
      drifted = statistic < threshold;
      break;
    case "z":
      threshold = t.pValue;
      statistic = zTest(ref.values, cur.values).pValue;
      drifted = statistic < threshold;
      break;
    case "wasserstein":
      threshold = t.distance;
      statistic = wassersteinNormed(ref.values, cur.values);
      drifted = statistic >= threshold;
      break;
    case "jensenshannon":
      threshold = t.distance;
      statistic = jensenShannon(ref.values, cur.values, featureKind);
      drifted = statistic >= threshold;
      break;
  }
  return {
    feature: name,
    test,
    statistic,
    threshold,
    drifted,
    psi: psi(ref.values, cur.values, featureKind),
    kind: featureKind,
    rows: { reference: ref.values.length, current: cur.values.length },
    missing: { reference: ref.missing, current: cur.missing },
  };
}

/**
 * Drift of every feature of `reference` (each must also be in `current`, and no other), and
 * whether the dataset as a whole drifted: share of drifted features ≥ `datasetShare`.
 */
export function datasetDrift(
  reference: Record<string, ArrayLike<number>>,
  current: Record<string, ArrayLike<number>>,
  kinds?: Record<string, FeatureKind>,
  thresholds?: Partial<DriftThresholds>,
): DatasetDriftResult {
  const t = resolveThresholds(thresholds);
  const names = Object.keys(reference);
  if (names.length === 0) throw new Error("dataset drift needs at least one feature");
  for (const name of names) {
    if (!Object.hasOwn(current, name)) throw new Error(`feature "${name}" is missing from the current data`);
  }
  for (const name of Object.keys(current)) {
    if (!Object.hasOwn(reference, name))
      throw new Error(`feature "${name}" is missing from the reference data`);
  }
  for (const name of Object.keys(kinds ?? {})) {
    if (!Object.hasOwn(reference, name)) throw new Error(`kind given for unknown feature "${name}"`);
  }
  const features = names.map((name) =>
    featureDrift(
      name,
      reference[name] as ArrayLike<number>,
      current[name] as ArrayLike<number>,
      kinds?.[name],
      t,
    ),
  );
  const drifted = features.filter((f) => f.drifted).length;
  const driftedShare = drifted / features.length;
  return { features, driftedShare, datasetDrift: driftedShare >= t.datasetShare };
}
