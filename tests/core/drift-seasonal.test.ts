/**
 * Calendar-aware drift (core/drift/seasonal.ts): a week compared with the same months of the
 * training data, calendar features reported apart, calendar values never seen flagged.
 */
import { describe, expect, it } from "vitest";
import { datasetDrift, seasonalDrift, seasonalReferenceRows } from "../../core/drift/index.js";

function seeded(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A year of hours: temperature follows the month, humidity does not; yr as given. */
function year(yr: number, months: readonly number[], hoursPerMonth: number, seed: number, tempShift = 0) {
  const random = seeded(seed);
  const cols: Record<string, number[]> = { mnth: [], yr: [], season: [], temp: [], hum: [], hr: [] };
  for (const m of months) {
    for (let h = 0; h < hoursPerMonth; h++) {
      cols.mnth?.push(m);
      cols.yr?.push(yr);
      cols.season?.push(Math.floor(((m % 12) + 3) / 3) % 4 || 4);
      // Seasonal temperature: cold in January, warm in July.
      cols.temp?.push(0.5 - 0.35 * Math.cos(((m - 1) / 12) * 2 * Math.PI) + 0.05 * random() + tempShift);
      cols.hum?.push(0.4 + 0.3 * random());
      cols.hr?.push(h % 24);
    }
  }
  return cols;
}

const ALL_MONTHS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

describe("seasonal reference", () => {
  it("takes the same months, widening a month at a time until it holds enough rows", () => {
    const ref = [1, 1, 2, 2, 3, 12, 12, 6];
    expect(seasonalReferenceRows(ref, [1, 1], 2)).toEqual({ rows: [0, 1], months: [1] });
    // Three rows needed: December and February are one month from January (the year wraps).
    expect(seasonalReferenceRows(ref, [1], 3)).toEqual({ rows: [0, 1, 2, 3, 5, 6], months: [1, 2, 12] });
    expect(() => seasonalReferenceRows(ref, [Number.NaN], 1)).toThrow(/no month values/);
  });
});

describe("calendar-aware drift", () => {
  const reference = year(0, ALL_MONTHS, 240, 1);

  it("does not call a January week drifted for being January, where Evidently's default does", () => {
    const week = year(0, [1], 168, 2);
    const plain = datasetDrift(reference, week);
    const seasonal = seasonalDrift(reference, week, { minReferenceRows: 200 });
    expect(plain.features.find((f) => f.feature === "temp")?.drifted).toBe(true);
    expect(plain.features.find((f) => f.feature === "mnth")?.drifted).toBe(true);
    expect(seasonal.referenceMonths).toEqual([1]);
    expect(seasonal.features.map((f) => f.feature).sort()).toEqual(["hr", "hum", "temp"]);
    expect(seasonal.features.find((f) => f.feature === "temp")?.drifted).toBe(false);
    expect(seasonal.datasetDrift).toBe(false);
    expect(seasonal.calendar.map((c) => c.feature).sort()).toEqual(["mnth", "season", "yr"]);
    expect(seasonal.unseenCalendar).toEqual([]);
  });

  it("still finds a January that is unusually warm for January", () => {
    const warm = year(0, [1], 168, 3, 0.3);
    const seasonal = seasonalDrift(reference, warm, { minReferenceRows: 200 });
    expect(seasonal.features.find((f) => f.feature === "temp")?.drifted).toBe(true);
  });

  it("flags a calendar value the model never saw (a new year)", () => {
    const nextYear = year(1, [1], 168, 4);
    const seasonal = seasonalDrift(reference, nextYear, { minReferenceRows: 200 });
    expect(seasonal.unseenCalendar).toEqual(["yr"]);
    expect(seasonal.calendar.find((c) => c.feature === "yr")?.unseenShare).toBe(1);
  });

  it("weights the drifted share by importance when asked", () => {
    const warm = year(0, [1], 168, 3, 0.3);
    const count = seasonalDrift(reference, warm, { minReferenceRows: 200 });
    const weighted = seasonalDrift(reference, warm, {
      minReferenceRows: 200,
      weights: { temp: 0.9, hum: 0.05, hr: 0.05 },
    });
    expect(count.driftedShare).toBeCloseTo(1 / 3);
    expect(weighted.driftedShare).toBeCloseTo(0.9);
    expect(weighted.datasetDrift).toBe(true);
    expect(() => seasonalDrift(reference, warm, { weights: { temp: -1 } })).toThrow(/weight of "temp"/);
  });

  it("names a missing month column", () => {
    const { mnth: _, ...noMonth } = reference;
    expect(() => seasonalDrift(noMonth, year(0, [1], 10, 5))).toThrow(/"mnth" is missing/);
  });
});
