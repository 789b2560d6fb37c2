/**
 * Calendar-aware dataset drift. Evidently's default compares a week of live data with a reference
 * sampled from a whole year of training data, so in the 2012 replay 9–15 of 16 features "drifted"
 * every week by construction and the dataset-drift alert never went off. Two changes:
 *
 * - Calendar features (the date alone determines them: season, yr, mnth, holiday, days_to_holiday,
 *   days_since_holiday, year_end_break) are reported apart and leave the drifted share. A week is
 *   never distributed like a year, so a test of them measures the calendar, not a risk. What does put
 *   accuracy at risk is a calendar value the model never saw (yr = 1 for a model fitted on 2011 only:
 *   trees do not extrapolate the growth of ridership), so those count as "unseen calendar values".
 * - Every other feature is compared with a seasonal reference: the reference rows of the same months
 *   of the year as the window (the same weeks of the previous year, at the month resolution the
 *   training sample keeps), widened a month at a time on both sides until it holds enough rows.
 *
 * The drifted share can be weighted by feature importance, so that a drifting feature the model
 * hardly uses counts for little.
 */

import {
  type DatasetDriftResult,
  type DriftThresholds,
  datasetDrift,
  type FeatureDriftResult,
  type FeatureKind,
} from "./detect.js";

export const CALENDAR_FEATURES: readonly string[] = [
  "season",
  "yr",
  "mnth",
  "holiday",
  "days_to_holiday",
  "days_since_holiday",
  "year_end_break",
];

export interface SeasonalDriftOptions {
  /** Name of the month-of-year column (1–12) that places rows in the year. */
  monthFeature: string;
  /** Fewest reference rows the seasonal reference must hold before it stops widening. */
  minReferenceRows: number;
  /** A calendar feature is "unseen" when at least this share of current rows has values outside the reference's. */
  unseenShare: number;
  /** Optional per-feature weights (e.g. importance) for the drifted share; missing features weigh 0. */
  weights?: Record<string, number>;
  kinds?: Record<string, FeatureKind>;
  thresholds?: Partial<DriftThresholds>;
}

export const DEFAULT_SEASONAL_OPTIONS: Readonly<SeasonalDriftOptions> = Object.freeze({
  monthFeature: "mnth",
  minReferenceRows: 300,
  unseenShare: 0.5,
});

export interface CalendarFeatureResult {
  feature: string;
  /** Share of current rows whose value the reference never holds. */
  unseenShare: number;
  unseen: boolean;
}

export interface SeasonalDriftResult extends DatasetDriftResult {
  /** Months of the year (1–12) the seasonal reference was drawn from. */
  referenceMonths: number[];
  referenceRows: number;
  calendar: CalendarFeatureResult[];
  /** Calendar features with values the model never saw (a risk the drifted share does not hold). */
  unseenCalendar: string[];
  /** Whether the share is weighted (by `weights`) rather than a count. */
  weighted: boolean;
}

const monthDistance = (a: number, b: number) => {
  const d = Math.abs(a - b) % 12;
  return Math.min(d, 12 - d);
};

/** Indices of reference rows within `radius` months of any month of the current window. */
function rowsNear(refMonths: ArrayLike<number>, months: Set<number>, radius: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < refMonths.length; i++) {
    const m = refMonths[i] as number;
    for (const c of months) {
      if (monthDistance(m, c) <= radius) {
        out.push(i);
        break;
      }
    }
  }
  return out;
}

/**
 * The seasonal reference: rows of `reference` from the months of `currentMonths`, widened by a month
 * on each side until at least `minRows` are in (or the whole reference is).
 */
export function seasonalReferenceRows(
  referenceMonths: ArrayLike<number>,
  currentMonths: ArrayLike<number>,
  minRows: number,
): { rows: number[]; months: number[] } {
  const months = new Set<number>();
  for (let i = 0; i < currentMonths.length; i++) {
    const m = currentMonths[i] as number;
    if (Number.isFinite(m)) months.add(m);
  }
  if (months.size === 0) throw new Error("seasonal reference: the current data has no month values");
  for (let radius = 0; radius <= 6; radius++) {
    const rows = rowsNear(referenceMonths, months, radius);
    if (rows.length >= minRows || radius === 6) {
      const used = new Set<number>();
      for (const r of rows) used.add(referenceMonths[r] as number);
      return { rows, months: [...used].sort((a, b) => a - b) };
    }
  }
  throw new Error("unreachable");
}

function unseenShare(reference: ArrayLike<number>, current: ArrayLike<number>): number {
  const seen = new Set<number>();
  for (let i = 0; i < reference.length; i++) seen.add(reference[i] as number);
  const continuous = seen.size > 12;
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of seen) {
    if (Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  let n = 0;
  let out = 0;
  for (let i = 0; i < current.length; i++) {
    const v = current[i] as number;
    if (!Number.isFinite(v)) continue;
    n++;
    // Counters like days_to_holiday are "seen" within their range; categories must occur.
    if (continuous ? v < lo || v > hi : !seen.has(v)) out++;
  }
  return n === 0 ? 0 : out / n;
}

/**
 * Drift of the non-calendar features against the seasonal reference, and the calendar features
 * apart (see the module comment). Both sides must hold `monthFeature`.
 */
export function seasonalDrift(
  reference: Record<string, ArrayLike<number>>,
  current: Record<string, ArrayLike<number>>,
  options: Partial<SeasonalDriftOptions> = {},
): SeasonalDriftResult {
  const o: SeasonalDriftOptions = { ...DEFAULT_SEASONAL_OPTIONS, ...options };
  const refMonth = reference[o.monthFeature];
  const curMonth = current[o.monthFeature];
  if (!refMonth || !curMonth) {
    throw new Error(
      `seasonal drift: feature "${o.monthFeature}" is missing from the reference or current data`,
    );
  }
  if (!(o.unseenShare > 0 && o.unseenShare <= 1)) {
    throw new RangeError(`seasonal drift: unseenShare must be in (0, 1], got ${o.unseenShare}`);
  }
  const { rows, months } = seasonalReferenceRows(refMonth, curMonth, o.minReferenceRows);
  const seasonalRef: Record<string, Float64Array> = {};
  const cur: Record<string, ArrayLike<number>> = {};
  const calendar: CalendarFeatureResult[] = [];
  for (const name of Object.keys(reference)) {
    const values = current[name];
    if (!values) throw new Error(`feature "${name}" is missing from the current data`);
    if (CALENDAR_FEATURES.includes(name)) {
      const share = unseenShare(reference[name] as ArrayLike<number>, values);
      calendar.push({ feature: name, unseenShare: share, unseen: share >= o.unseenShare });
      continue;
    }
    const ref = reference[name] as ArrayLike<number>;
    seasonalRef[name] = Float64Array.from(rows, (r) => ref[r] as number);
    cur[name] = values;
  }
  const kinds = o.kinds
    ? Object.fromEntries(Object.entries(o.kinds).filter(([k]) => Object.hasOwn(seasonalRef, k)))
    : undefined;
  const plain = datasetDrift(seasonalRef, cur, kinds, o.thresholds);
  const share = weightedShare(plain.features, o.weights);
  const datasetShare = o.thresholds?.datasetShare ?? 0.5;
  return {
    features: plain.features,
    driftedShare: share,
    datasetDrift: share >= datasetShare,
    referenceMonths: months,
    referenceRows: rows.length,
    calendar,
    unseenCalendar: calendar.filter((c) => c.unseen).map((c) => c.feature),
    weighted: o.weights !== undefined,
  };
}

function weightedShare(features: readonly FeatureDriftResult[], weights?: Record<string, number>): number {
  if (!weights) return features.filter((f) => f.drifted).length / features.length;
  let total = 0;
  let drifted = 0;
  for (const f of features) {
    const w = weights[f.feature] ?? 0;
    if (!(Number.isFinite(w) && w >= 0))
      throw new RangeError(`weight of "${f.feature}" must be ≥ 0, got ${w}`);
    total += w;
    if (f.drifted) drifted += w;
  }
  // With no weight on any compared feature, fall back to the plain count rather than divide by 0.
  return total > 0 ? drifted / total : features.filter((f) => f.drifted).length / features.length;
}
