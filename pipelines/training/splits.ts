import { dayNumber, isoDateOf } from "../../core/features/index.js";
import { seededRandom } from "../../core/random/index.js";
import type { HourlyDataset } from "../data/hourly.js";

/**
 * Split T, the honest one: the model is fitted on the past and judged on a later
 * period, as it will be used. Split A is the old stack's random 80/20 split, kept only
 * to compare with its published figures: neighbouring hours of the same day land on
 * both sides, which flatters every model.
 */
export const SPLIT_T = {
  validFrom: "2012-07-01",
  testFrom: "2012-09-01",
  testUntil: "2013-01-01",
} as const;

export interface TimeSplit {
  train: number[];
  valid: number[];
  test: number[];
}

export function timeSplit(
  data: HourlyDataset,
  split: { validFrom: string; testFrom: string; testUntil?: string; until?: string } = SPLIT_T,
): TimeSplit {
  const result: TimeSplit = { train: [], valid: [], test: [] };
  const until = split.until ?? split.testUntil ?? "9999-12-31";
  data.dteday.forEach((day, i) => {
    if (day < split.validFrom) result.train.push(i);
    else if (day < split.testFrom) result.valid.push(i);
    else if (day < until) result.test.push(i);
  });
  return result;
}

export interface TrainingWindow {
  /** First date of the data used (YYYY-MM-DD, inclusive); default: the first date in the data. */
  from?: string;
  /** End of the data used (YYYY-MM-DD, exclusive); default: the day after the last date in the data. */
  until?: string;
  /** Days of validation before the test window (default 62, as Jul–Aug in split T). */
  validDays?: number;
  /** Days at the end of the window held out for the test (default 122, as Sep–Dec in split T). */
  testDays?: number;
}

export interface WindowBounds {
  from: string;
  validFrom: string;
  testFrom: string;
  until: string;
}

/**
 * A window [from, until) split by time: test = its last `testDays` days, valid = the `validDays` before
 * them, train = the rest. With hour.csv and no options this is exactly split T
 * (2011-01-01 / 2012-07-01 / 2012-09-01 / 2013-01-01). Days are calendar days, whether or not the data
 * has rows on each of them. Throws when a part would have no rows.
 */
export function windowSplit(
  data: HourlyDataset,
  window: TrainingWindow = {},
): TimeSplit & { bounds: WindowBounds } {
  const dates = data.dteday;
  if (dates.length === 0) throw new Error("no labelled rows to split");
  let first = dates[0] as string;
  let last = first;
  for (const d of dates) {
    if (d < first) first = d;
    if (d > last) last = d;
  }
  const count = (v: number | undefined, name: string, fallback: number) => {
    const n = v ?? fallback;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`);
    return n;
  };
  const validDays = count(window.validDays, "validDays", 62);
  const testDays = count(window.testDays, "testDays", 122);
  const from = window.from ?? first;
  const until = window.until ?? isoDateOf(dayNumber(last) + 1);
  const untilDay = dayNumber(until);
  const fromDay = dayNumber(from);
  const testFrom = isoDateOf(untilDay - testDays);
  const validFrom = isoDateOf(untilDay - testDays - validDays);
  if (dayNumber(validFrom) <= fromDay) {
    throw new RangeError(
      `window ${from} – ${until} is too short for ${validDays} validation and ${testDays} test days plus training data`,
    );
  }
  const bounds = { from, validFrom, testFrom, until };
  const split = timeSplit(data, bounds);
  const result = {
    train: split.train.filter((i) => (dates[i] as string) >= from),
    valid: split.valid,
    test: split.test,
    bounds,
  };
  for (const part of ["train", "valid", "test"] as const) {
    if (result[part].length === 0) {
      throw new RangeError(`window ${from} – ${until}: no labelled rows in the ${part} part`);
    }
  }
  return result;
}

export function randomSplit(rows: number, testShare = 0.2, seed = 42): { train: number[]; test: number[] } {
  const order = Array.from({ length: rows }, (_, i) => i);
  const random = seededRandom(seed);
  for (let i = rows - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const testSize = Math.round(rows * testShare);
  return {
    test: order.slice(0, testSize).sort((a, b) => a - b),
    train: order.slice(testSize).sort((a, b) => a - b),
  };
}
