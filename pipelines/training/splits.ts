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

export function timeSplit(data: HourlyDataset, split = SPLIT_T): TimeSplit {
  const result: TimeSplit = { train: [], valid: [], test: [] };
  data.dteday.forEach((day, i) => {
    if (day < split.validFrom) result.train.push(i);
    else if (day < split.testFrom) result.valid.push(i);
    else if (day < split.testUntil) result.test.push(i);
  });
  return result;
}

/** mulberry32: a small, fast PRNG, so that split A is the same on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
