import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  civilDate,
  dayNumber,
  dayOfYear,
  daysSincePreviousHoliday,
  daysToNextHoliday,
  holidaysOfYear,
  instantOfLocalHour,
  isHoliday,
  isoDateOf,
  isYearEndBreak,
  localDayAndHour,
  weekdayOf,
} from "../../core/features/index.js";

const DAY_CSV = join(import.meta.dirname, "../../data/raw/day.csv");

function readDays(): { dteday: string; holiday: number; weekday: number; mnth: number; yr: number }[] {
  const [header, ...lines] = readFileSync(DAY_CSV, "utf8")
    .split(/\r?\n/)
    .filter((l) => l !== "");
  const names = (header as string).split(",");
  const col = (n: string) => names.indexOf(n);
  return lines.map((line) => {
    const c = line.split(",");
    return {
      dteday: c[col("dteday")] as string,
      holiday: Number(c[col("holiday")]),
      weekday: Number(c[col("weekday")]),
      mnth: Number(c[col("mnth")]),
      yr: Number(c[col("yr")]),
    };
  });
}

const dates = (days: number[]) => days.map(isoDateOf);

describe("day numbers", () => {
  it("count days since 1970-01-01 and round-trip through ISO dates", () => {
    expect(dayNumber("1970-01-01")).toBe(0);
    expect(dayNumber("2012-07-04")).toBe(15525);
    expect(isoDateOf(15525)).toBe("2012-07-04");
    expect(dayNumber("1969-12-31")).toBe(-1);
    expect(civilDate(dayNumber("2012-02-29"))).toEqual({ year: 2012, month: 2, dayOfMonth: 29, weekday: 3 });
    expect(dayOfYear(dayNumber("2012-12-31"))).toBe(366);
    expect(dayOfYear(dayNumber("2011-01-01"))).toBe(1);
  });

  it("reject malformed and impossible dates", () => {
    for (const bad of ["2012-7-4", "2012-02-30", "2011-02-29", "20120704", "", "2012-13-01"]) {
      expect(() => dayNumber(bad), bad).toThrow(RangeError);
    }
  });
});

describe("holidays of Washington, D.C.", () => {
  it("agree with the `holiday` column of every day in day.csv (2011–2012) and with its weekdays", () => {
    const days = readDays();
    expect(days).toHaveLength(731);
    const disagreements = days.filter((d) => isHoliday(dayNumber(d.dteday)) !== (d.holiday === 1));
    expect(disagreements).toEqual([]);
    expect(days.filter((d) => weekdayOf(dayNumber(d.dteday)) !== d.weekday)).toEqual([]);
    expect(days.filter((d) => d.holiday === 1)).toHaveLength(21);
  });

  it("move fixed-date holidays that fall on a weekend to the Friday before or the Monday after", () => {
    // Emancipation Day 2011-04-16 (Sat) → Fri 15th; Christmas 2011 (Sun) → Mon 26th;
    // New Year 2012 (Sun) → Mon Jan 2nd; Veterans Day 2012 (Sun) → Mon 12th.
    for (const d of ["2011-04-15", "2011-12-26", "2012-01-02", "2012-11-12"]) {
      expect(isHoliday(dayNumber(d)), d).toBe(true);
    }
    for (const d of ["2011-04-16", "2011-12-25", "2012-01-01", "2012-11-11"]) {
      expect(isHoliday(dayNumber(d)), d).toBe(false);
    }
    // New Year's Day 2011 was a Saturday: observed on Friday 2010-12-31, so 2011-01-01 is no holiday.
    expect(isHoliday(dayNumber("2010-12-31"))).toBe(true);
    expect(isHoliday(dayNumber("2011-01-01"))).toBe(false);
    // 2022-01-01 (Sat) → 2021-12-31, which belongs to the 2022 rule but the 2021 calendar.
    expect(isHoliday(dayNumber("2021-12-31"))).toBe(true);
  });

  it("compute the floating holidays by rule for any year", () => {
    const of2024 = holidaysOfYear(2024).map((h) => `${isoDateOf(h.day)} ${h.name}`);
    expect(of2024).toEqual([
      "2024-01-01 New Year's Day",
      "2024-01-15 Birthday of Martin Luther King, Jr.",
      "2024-02-19 Washington's Birthday",
      "2024-04-16 D.C. Emancipation Day",
      "2024-05-27 Memorial Day",
      "2024-06-19 Juneteenth National Independence Day",
      "2024-07-04 Independence Day",
      "2024-09-02 Labor Day",
      "2024-10-14 Columbus Day",
      "2024-11-11 Veterans Day",
      "2024-11-28 Thanksgiving Day",
      "2024-12-25 Christmas Day",
    ]);
    // Inauguration Day: 2013-01-20 was a Sunday → Monday 21st (also MLK Day); 2025-01-20 a Monday.
    expect(isHoliday(dayNumber("2013-01-21"))).toBe(true);
    expect(holidaysOfYear(2025).some((h) => h.name === "Inauguration Day")).toBe(true);
    expect(holidaysOfYear(2026).some((h) => h.name === "Inauguration Day")).toBe(false);
    // No Juneteenth before 2021.
    expect(isHoliday(dayNumber("2020-06-19"))).toBe(false);
    expect(isHoliday(dayNumber("2021-06-18"))).toBe(true);
  });

  it("measure distances to the next and from the previous holiday, 0 on the holiday itself", () => {
    const thanksgiving = dayNumber("2012-11-22");
    expect(daysToNextHoliday(thanksgiving)).toBe(0);
    expect(daysSincePreviousHoliday(thanksgiving)).toBe(0);
    expect(daysSincePreviousHoliday(thanksgiving + 1)).toBe(1);
    expect(daysToNextHoliday(thanksgiving - 1)).toBe(1);
    // Across the year boundary: 2012-12-31 → New Year's Day 2013; 2012-01-01 ← 2011-12-26.
    expect(daysToNextHoliday(dayNumber("2012-12-31"))).toBe(1);
    expect(daysSincePreviousHoliday(dayNumber("2012-01-01"))).toBe(6);
    expect(dates([dayNumber("2012-12-26") + daysToNextHoliday(dayNumber("2012-12-26"))])).toEqual([
      "2013-01-01",
    ]);
  });

  it("flag the year-end break, December 20th to January 1st", () => {
    expect(isYearEndBreak(dayNumber("2012-12-19"))).toBe(false);
    expect(isYearEndBreak(dayNumber("2012-12-20"))).toBe(true);
    expect(isYearEndBreak(dayNumber("2013-01-01"))).toBe(true);
    expect(isYearEndBreak(dayNumber("2013-01-02"))).toBe(false);
  });
});

describe("local time in Washington, D.C.", () => {
  it("converts instants with daylight saving time", () => {
    // Summer: UTC−4.
    expect(localDayAndHour(new Date("2012-07-04T21:00:00Z"))).toEqual({
      day: dayNumber("2012-07-04"),
      hour: 17,
      year: 2012,
      yr: 1,
      mnth: 7,
      weekday: 3,
    });
    // Winter: UTC−5, and the local date is still the previous day.
    expect(localDayAndHour(new Date("2012-01-01T03:30:00Z"))).toMatchObject({
      day: dayNumber("2011-12-31"),
      hour: 22,
      yr: 0,
      mnth: 12,
      weekday: 6,
    });
  });

  it("finds the instant of a local hour, the first one when the hour repeats, none when it is skipped", () => {
    expect(instantOfLocalHour(dayNumber("2012-07-04"), 17).toISOString()).toBe("2012-07-04T21:00:00.000Z");
    expect(instantOfLocalHour(dayNumber("2012-01-15"), 0).toISOString()).toBe("2012-01-15T05:00:00.000Z");
    expect(instantOfLocalHour(dayNumber("2011-11-06"), 1).toISOString()).toBe("2011-11-06T05:00:00.000Z");
    expect(() => instantOfLocalHour(dayNumber("2011-03-13"), 2)).toThrow(/does not exist/);
    for (let hour = 0; hour < 24; hour++) {
      if (hour === 2) continue;
      expect(localDayAndHour(instantOfLocalHour(dayNumber("2012-03-11"), hour))).toMatchObject({
        day: dayNumber("2012-03-11"),
        hour,
      });
    }
  });
});
