/**
 * The calendar of Washington, D.C., where Capital Bikeshare operates: public holidays by rule for any
 * year, distances to them, and the local date and hour of an instant.
 *
 * Dates are handled as "day numbers": days since 1970-01-01 of the LOCAL calendar date (the date a
 * person in Washington would write down), so 2012-07-04 is day 15525 whatever the time zone of the
 * machine. Day numbers are plain integers, cheap to store in a Float32/Float64 feature column and to
 * subtract.
 */

export const TIME_ZONE = "America/New_York";
const MS_PER_DAY = 86_400_000;

// ---------------------------------------------------------------------------------------------------
// Day numbers

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Day number of a YYYY-MM-DD date; throws on anything else (including impossible dates like 2012-02-30). */
export function dayNumber(isoDate: string): number {
  const m = ISO_DATE.exec(isoDate);
  if (m === null) throw new RangeError(`expected a date YYYY-MM-DD, got ${JSON.stringify(isoDate)}`);
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const day = dayOf(y, mo, d);
  if (isoDateOf(day) !== isoDate) throw new RangeError(`${isoDate} is not a calendar date`);
  return day;
}

/** Day number of year/month (1–12)/day-of-month; months and days may overflow as in Date.UTC. */
export function dayOf(year: number, month: number, dayOfMonth: number): number {
  // Date.UTC maps years 0–99 to 1900–1999; setUTCFullYear does not.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, dayOfMonth);
  return Math.round(date.getTime() / MS_PER_DAY);
}

export interface CivilDate {
  year: number;
  /** 1–12 */
  month: number;
  /** 1–31 */
  dayOfMonth: number;
  /** 0 = Sunday … 6 = Saturday, as the dataset's `weekday`. */
  weekday: number;
}

export function civilDate(day: number): CivilDate {
  const date = new Date(day * MS_PER_DAY);
  return {
    year: date.getUTCFullYear(),
    month: date.getUTCMonth() + 1,
    dayOfMonth: date.getUTCDate(),
    weekday: date.getUTCDay(),
  };
}

export function isoDateOf(day: number): string {
  const { year, month, dayOfMonth } = civilDate(day);
  const y = year < 0 ? `-${String(-year).padStart(6, "0")}` : String(year).padStart(4, "0");
  return `${y}-${String(month).padStart(2, "0")}-${String(dayOfMonth).padStart(2, "0")}`;
}

/** 0 = Sunday … 6 = Saturday (1970-01-01 was a Thursday). */
export function weekdayOf(day: number): number {
  return (((day + 4) % 7) + 7) % 7;
}

/** 1 on January 1st, up to 365 or 366. */
export function dayOfYear(day: number): number {
  return day - dayOf(civilDate(day).year, 1, 1) + 1;
}

// ---------------------------------------------------------------------------------------------------
// Holidays

/** The n-th (1-based) given weekday of a month, e.g. the 4th Thursday of November. */
function nthWeekday(year: number, month: number, weekday: number, n: number): number {
  const first = dayOf(year, month, 1);
  return first + ((weekday - weekdayOf(first) + 7) % 7) + (n - 1) * 7;
}

function lastWeekday(year: number, month: number, weekday: number): number {
  const last = dayOf(year, month + 1, 0);
  return last - ((weekdayOf(last) - weekday + 7) % 7);
}

/**
 * A fixed-date holiday that falls on a weekend is observed on the Friday before (Saturday) or the
 * Monday after (Sunday): 5 U.S.C. 6103(b) and Executive Order 11582 for federal holidays, and
 * D.C. Code § 1-612.02 for Emancipation Day (2011-04-16 was a Saturday; the dataset marks Friday
 * 2011-04-15, as this rule does).
 */
function observed(day: number): number {
  const wd = weekdayOf(day);
  return wd === 6 ? day - 1 : wd === 0 ? day + 1 : day;
}

export interface Holiday {
  day: number;
  name: string;
}

/**
 * The public holidays of Washington, D.C. whose rule belongs to `year`, on the day they are observed
 * (which for New Year's Day can be December 31st of the year before).
 *
 * Checked against the dataset: for every day of 2011–2012 in data/raw/day.csv, isHoliday agrees with
 * its `holiday` column (tests/core/calendar.test.ts) — including the weekend-observed days 2011-04-15,
 * 2011-12-26, 2012-01-02 and 2012-11-12, and 2011-01-01 (a Saturday) NOT being a holiday, because that
 * New Year's Day was observed on Friday 2010-12-31. No deviation from the rules was needed.
 *
 * Rules that begin or occur after the data (they cannot be checked against it, but are the law):
 * Juneteenth (June 19, federal since 2021) and Inauguration Day (January 20 after each presidential
 * election, a legal holiday for federal employees in D.C. under 5 U.S.C. 6103(c); moved to the 21st when
 * the 20th is a Sunday, not moved when it is a Saturday). D.C. Emancipation Day has been a public
 * holiday since 2005 and MLK Day since 1986. Earlier years get the post-1971 Monday rules; the model
 * never sees those years, so they are not modelled more finely.
 */
export function holidaysOfYear(year: number): Holiday[] {
  const list: Holiday[] = [
    { day: observed(dayOf(year, 1, 1)), name: "New Year's Day" },
    { day: nthWeekday(year, 2, 1, 3), name: "Washington's Birthday" },
    { day: lastWeekday(year, 5, 1), name: "Memorial Day" },
    { day: observed(dayOf(year, 7, 4)), name: "Independence Day" },
    { day: nthWeekday(year, 9, 1, 1), name: "Labor Day" },
    { day: nthWeekday(year, 10, 1, 2), name: "Columbus Day" },
    { day: observed(dayOf(year, 11, 11)), name: "Veterans Day" },
    { day: nthWeekday(year, 11, 4, 4), name: "Thanksgiving Day" },
    { day: observed(dayOf(year, 12, 25)), name: "Christmas Day" },
  ];
  if (year >= 1986)
    list.push({ day: nthWeekday(year, 1, 1, 3), name: "Birthday of Martin Luther King, Jr." });
  if (year >= 2005) list.push({ day: observed(dayOf(year, 4, 16)), name: "D.C. Emancipation Day" });
  if (year >= 2021)
    list.push({ day: observed(dayOf(year, 6, 19)), name: "Juneteenth National Independence Day" });
  if (year >= 1965 && (year - 1965) % 4 === 0) {
    const jan20 = dayOf(year, 1, 20);
    // Saturday: no day off in lieu. Sunday: the public observance moves to Monday the 21st.
    if (weekdayOf(jan20) !== 6)
      list.push({ day: weekdayOf(jan20) === 0 ? jan20 + 1 : jan20, name: "Inauguration Day" });
  }
  return list.sort((a, b) => a.day - b.day);
}

const holidayCache = new Map<number, Int32Array>();

/** Sorted day numbers of the holidays observed on a date of calendar year `year`. */
function holidayDaysIn(year: number): Int32Array {
  let days = holidayCache.get(year);
  if (days === undefined) {
    const first = dayOf(year, 1, 1);
    const last = dayOf(year, 12, 31);
    const set = new Set<number>();
    // New Year's Day of year+1 may be observed on December 31st of `year`, and of `year` on Dec 31st of year-1.
    for (const y of [year, year + 1])
      for (const h of holidaysOfYear(y)) if (h.day >= first && h.day <= last) set.add(h.day);
    days = Int32Array.from([...set].sort((a, b) => a - b));
    if (holidayCache.size > 512) holidayCache.clear();
    holidayCache.set(year, days);
  }
  return days;
}

function checkDay(day: number): void {
  if (!Number.isInteger(day)) throw new RangeError(`a day number must be an integer, got ${day}`);
}

/** True on a day a public holiday is observed in Washington, D.C. */
export function isHoliday(day: number): boolean {
  checkDay(day);
  return holidayDaysIn(civilDate(day).year).includes(day);
}

/** Days until the next observed holiday: 0 on a holiday, 1 on the day before one, … */
export function daysToNextHoliday(day: number): number {
  checkDay(day);
  for (let year = civilDate(day).year; ; year++) {
    for (const h of holidayDaysIn(year)) if (h >= day) return h - day;
  }
}

/** Days since the previous observed holiday: 0 on a holiday, 1 on the day after one, … */
export function daysSincePreviousHoliday(day: number): number {
  checkDay(day);
  for (let year = civilDate(day).year; ; year--) {
    const days = holidayDaysIn(year);
    for (let i = days.length - 1; i >= 0; i--) {
      const h = days[i] as number;
      if (h <= day) return day - h;
    }
  }
}

/**
 * December 20th to January 1st: offices empty out between the last working week before Christmas and
 * New Year's Day, which no single holiday distance captures (2012's worst test errors are there).
 */
export function isYearEndBreak(day: number): boolean {
  const { month, dayOfMonth } = civilDate(day);
  return (month === 12 && dayOfMonth >= 20) || (month === 1 && dayOfMonth === 1);
}

// ---------------------------------------------------------------------------------------------------
// Local time of an instant

export interface LocalHour {
  /** Day number of the local date. */
  day: number;
  /** Local hour 0–23. */
  hour: number;
  year: number;
  /** year − 2011, the dataset's coding (0 for 2011, 1 for 2012); outside 0..1 for other years. */
  yr: number;
  /** 1–12 */
  mnth: number;
  /** 0 = Sunday … 6 = Saturday */
  weekday: number;
}

const localFormat = new Intl.DateTimeFormat("en-US", {
  timeZone: TIME_ZONE,
  year: "numeric",
  month: "numeric",
  day: "numeric",
  hour: "numeric",
  hourCycle: "h23",
  era: "short",
});

/** The date and hour in Washington, D.C. (America/New_York, with its daylight-saving rules) at `instant`. */
export function localDayAndHour(instant: Date): LocalHour {
  const t = instant.getTime();
  if (!Number.isFinite(t)) throw new RangeError("localDayAndHour needs a valid Date");
  let year = 0;
  let month = 0;
  let dayOfMonth = 0;
  let hour = 0;
  let bc = false;
  for (const part of localFormat.formatToParts(instant)) {
    if (part.type === "year") year = Number(part.value);
    else if (part.type === "month") month = Number(part.value);
    else if (part.type === "day") dayOfMonth = Number(part.value);
    else if (part.type === "hour") hour = Number(part.value);
    else if (part.type === "era") bc = part.value.startsWith("B");
  }
  if (bc) year = 1 - year;
  const day = dayOf(year, month, dayOfMonth);
  return { day, hour, year, yr: year - 2011, mnth: month, weekday: weekdayOf(day) };
}

/**
 * The first instant of local hour `hour` on local day `day` in Washington, D.C. For the hour repeated
 * when daylight saving ends (01:00 in November) it is the first of the two; for the hour skipped when it
 * begins (02:00 in March, which the dataset accordingly lacks) there is none, and this throws.
 */
export function instantOfLocalHour(day: number, hour: number): Date {
  checkDay(day);
  if (!Number.isInteger(hour) || hour < 0 || hour > 23)
    throw new RangeError(`hour must be 0..23, got ${hour}`);
  const wall = day * MS_PER_DAY + hour * 3_600_000;
  // Washington is 4 (EDT) or 5 (EST) hours behind UTC; EDT first gives the earlier of two readings.
  for (const offsetHours of [4, 5]) {
    const candidate = new Date(wall + offsetHours * 3_600_000);
    const local = localDayAndHour(candidate);
    if (local.day === day && local.hour === hour) return candidate;
  }
  throw new RangeError(
    `${isoDateOf(day)} ${hour}:00 does not exist in ${TIME_ZONE} (daylight saving begins)`,
  );
}
