import { describe, expect, it } from "vitest";
import {
  DATE_FEATURE_NAMES,
  dayColumn,
  dayNumber,
  FEATURE_NAMES,
  FEATURE_SCHEMA_VERSION,
  featureMatrix,
  featuresOfRecord,
  instantOfLocalHour,
  MAX_LISTED_VIOLATIONS,
  NUM_FEATURES,
  RAW_FIELD_NAMES,
  recordsToColumns,
  ViolationList,
  validateColumns,
  validateRecord,
  withDays,
} from "../../core/features/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import { HOUR_CSV, modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";

const VALID = {
  season: 1,
  yr: 0,
  mnth: 1,
  hr: 0,
  holiday: 0,
  weekday: 6,
  workingday: 0,
  weathersit: 1,
  temp: 0.24,
  atemp: 0.2879,
  hum: 0.81,
  windspeed: 0,
};

describe("feature definition", () => {
  it("gives identical features for every row of hour.csv through the batch path (DuckDB) and the online path (one JSON record)", async () => {
    const batch = await loadHourly(HOUR_CSV);
    const matrix = featureMatrix(batch.columns);
    const rows = readHourCsvRecords();
    expect(rows.length).toBe(17_379);
    expect(batch.columns.length).toBe(17_379);
    expect(matrix.length).toBe(17_379 * NUM_FEATURES);
    let mismatches = 0;
    rows.forEach((row, i) => {
      const result = validateRecord(JSON.parse(JSON.stringify(modelInput(row))));
      if (!result.ok) throw new Error(`row ${i}: ${JSON.stringify(result.violations)}`);
      const online = featuresOfRecord(result.record);
      for (let f = 0; f < NUM_FEATURES; f++) {
        if (!Object.is(online[f], matrix[i * NUM_FEATURES + f])) mismatches++;
      }
    });
    expect(mismatches).toBe(0);
  });

  it("gives identical features through both paths when each JSON record also carries its timestamp", async () => {
    const batch = await loadHourly(HOUR_CSV);
    const matrix = featureMatrix(withDays(batch.columns, dayColumn(batch.dteday)));
    const rows = readHourCsvRecords();
    let mismatches = 0;
    let withDate = 0;
    rows.forEach((row, i) => {
      const timestamp = instantOfLocalHour(dayNumber(row.dteday as string), row.hr as number).toISOString();
      const body = JSON.parse(JSON.stringify({ ...modelInput(row), timestamp }));
      const result = validateRecord(body);
      if (!result.ok) throw new Error(`row ${i}: ${JSON.stringify(result.violations)}`);
      const online = featuresOfRecord(result.record);
      for (let f = 0; f < NUM_FEATURES; f++) {
        if (!Object.is(online[f], matrix[i * NUM_FEATURES + f])) mismatches++;
      }
      if (!Number.isNaN(online[FEATURE_NAMES.indexOf("days_to_holiday")] as number)) withDate++;
    });
    expect(mismatches).toBe(0);
    expect(withDate).toBe(17_379);
  });

  it("puts the raw fields first in schema order, then the derived working-day hour, then the date features", () => {
    expect(FEATURE_SCHEMA_VERSION).toBe(2);
    expect(FEATURE_NAMES.slice(0, 12)).toEqual(RAW_FIELD_NAMES);
    expect(FEATURE_NAMES.slice(12)).toEqual(["workingday_hr", ...DATE_FEATURE_NAMES]);
    const f = featuresOfRecord({ ...VALID, workingday: 1, hr: 17 });
    expect(f[FEATURE_NAMES.indexOf("workingday_hr")]).toBe(41);
    expect(f[FEATURE_NAMES.indexOf("temp")]).toBe(Math.fround(0.24));
  });

  it("leaves the date features NaN without a date, and caps holiday distances at a week", () => {
    const none = featuresOfRecord(VALID);
    for (const name of DATE_FEATURE_NAMES) expect(none[FEATURE_NAMES.indexOf(name)], name).toBeNaN();
    const at = (date: string) => {
      const f = featuresOfRecord({ ...VALID, day: dayNumber(date) });
      return DATE_FEATURE_NAMES.map((n) => f[FEATURE_NAMES.indexOf(n)]);
    };
    expect(at("2012-11-23")).toEqual([7, 1, 0]); // the day after Thanksgiving
    expect(at("2012-11-21")).toEqual([1, 7, 0]); // the day before
    expect(at("2012-12-24")).toEqual([1, 7, 1]); // Christmas Eve, in the year-end break
    expect(at("2012-08-15")).toEqual([7, 7, 0]); // far from any holiday
    // In a batch, rows with and without dates in any order get what each would get alone.
    const days = ["2012-11-23", "2012-11-23", "", "2012-11-23", "2012-11-21", "", "2012-12-24"];
    const mixed = days.map((d) => (d ? { ...VALID, day: dayNumber(d) } : VALID));
    const matrix = featureMatrix(recordsToColumns(mixed));
    mixed.forEach((record, i) => {
      const alone = Array.from(featuresOfRecord(record));
      expect(Array.from(matrix.subarray(i * NUM_FEATURES, (i + 1) * NUM_FEATURES)), `row ${i}`).toEqual(
        alone,
      );
    });
    // A day column with NaN for unknown dates, as recordsToColumns builds it.
    const columns = recordsToColumns([VALID, { ...VALID, day: dayNumber("2012-11-23") }]);
    expect(Array.from(columns.day ?? [])).toEqual([Number.NaN, dayNumber("2012-11-23")]);
  });
});

describe("timestamps", () => {
  const JULY_4 = {
    ...VALID,
    season: 3,
    yr: 1,
    mnth: 7,
    hr: 17,
    holiday: 1,
    weekday: 3,
    workingday: 0,
  };

  it("accepts a timestamp that agrees with the fields and sets the local day", () => {
    const r = validateRecord({ ...JULY_4, timestamp: "2012-07-04T21:00:00Z" });
    expect(r).toEqual({ ok: true, record: { ...JULY_4, day: dayNumber("2012-07-04") } });
    // Any offset, and any instant inside the hour.
    const r2 = validateRecord({ ...JULY_4, timestamp: "2012-07-04T17:59:59.999-04:00" });
    expect(r2.ok && r2.record.day).toBe(dayNumber("2012-07-04"));
  });

  it("names each field that contradicts the timestamp", () => {
    const r = validateRecord({ ...JULY_4, hr: 18, timestamp: "2012-07-04T21:00:00Z" });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.violations).toEqual([
      {
        field: "hr",
        type: "mismatch",
        description:
          "must agree with the timestamp: 2012-07-04T21:00:00Z is 17:00 in Washington, D.C., but hr is 18",
      },
    ]);
    const all = validateRecord(
      { ...JULY_4, yr: 0, mnth: 6, weekday: 4, timestamp: "2012-07-04T21:00:00Z" },
      "inputs[2]",
    );
    expect(all.ok ? [] : all.violations.map((v) => [v.field, v.type])).toEqual([
      ["inputs[2].weekday", "mismatch"],
      ["inputs[2].mnth", "mismatch"],
      ["inputs[2].yr", "mismatch"],
    ]);
  });

  it("uses the local date: 01:00 UTC on July 5th is still July 4th in Washington", () => {
    const r = validateRecord({ ...JULY_4, hr: 21, timestamp: "2012-07-05T01:00:00Z" });
    expect(r.ok && r.record.day).toBe(dayNumber("2012-07-04"));
  });

  it("does not check yr outside 2011–2012, where it is a model setting rather than a fact", () => {
    // 2013-07-04 is a Thursday.
    for (const yr of [0, 1]) {
      const r = validateRecord({ ...JULY_4, yr, weekday: 4, timestamp: "2013-07-04T21:00:00Z" });
      expect(r.ok, `yr ${yr}`).toBe(true);
    }
    const wrongDay = validateRecord({ ...JULY_4, weekday: 3, timestamp: "2013-07-04T21:00:00Z" });
    expect(wrongDay.ok ? [] : wrongDay.violations.map((v) => v.field)).toEqual(["weekday"]);
  });

  it.each([
    ["2012-07-04 21:00:00"],
    ["2012-07-04T21:00:00"], // no offset: would depend on the server's time zone
    ["2012-02-30T10:00:00Z"],
    ["2012-07-04T24:00:00Z"],
    ["yesterday"],
    [""],
    [1341435600000],
    [null],
  ])("rejects timestamp %j as type 'type'", (timestamp) => {
    const r = validateRecord({ ...JULY_4, timestamp });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.violations).toHaveLength(1);
    expect(r.violations[0]).toMatchObject({ field: "timestamp", type: "type" });
    expect(r.violations[0]?.description).toContain("ISO-8601");
  });

  it("checks a day column of a batch against weekday, month and year", () => {
    const columns = recordsToColumns([
      { ...JULY_4, day: dayNumber("2012-07-04") },
      { ...JULY_4, day: dayNumber("2012-07-05") },
      JULY_4,
    ]);
    expect(validateColumns(columns).map((v) => [v.row, v.field, v.type])).toEqual([
      [1, "weekday", "mismatch"],
    ]);
  });

  it("checks every row of a day, not only the first one of its run", () => {
    const day = dayNumber("2012-07-04");
    const columns = recordsToColumns([
      { ...JULY_4, day },
      { ...JULY_4, day, mnth: 6 },
      { ...JULY_4, day },
      { ...JULY_4, day, yr: 0, weekday: 2 },
      { ...JULY_4, day: dayNumber("2013-07-04"), weekday: 4, yr: 1 }, // yr is only checked in 2011–2012
      { ...JULY_4, day: dayNumber("2013-07-04"), weekday: 3, yr: 1 },
    ]);
    expect(validateColumns(columns).map((v) => [v.row, v.field])).toEqual([
      [1, "mnth"],
      [3, "weekday"],
      [3, "yr"],
      [5, "weekday"],
    ]);
  });
});

describe("record validation", () => {
  const violationsOf = (input: unknown) => {
    const r = validateRecord(input);
    if (r.ok) throw new Error("expected violations");
    return r.violations;
  };

  it("accepts a valid record", () => {
    expect(validateRecord(VALID)).toEqual({ ok: true, record: VALID });
  });

  it.each([
    ["season", 0, "an integer in 1..4"],
    ["season", 5, "an integer in 1..4"],
    ["yr", 2, "an integer in 0..1"],
    ["mnth", 13, "an integer in 1..12"],
    ["hr", 24, "an integer in 0..23"],
    ["hr", -1, "an integer in 0..23"],
    ["holiday", 2, "an integer in 0..1"],
    ["weekday", 7, "an integer in 0..6"],
    ["workingday", 3, "an integer in 0..1"],
    ["weathersit", 5, "an integer in 1..4"],
    ["temp", 1.5, "a number in [0, 1]"],
    ["atemp", -0.1, "a number in [0, 1]"],
    ["hum", 2, "a number in [0, 1]"],
    ["windspeed", 1.01, "a number in [0, 1]"],
  ])("rejects %s = %s, naming the field and the allowed range", (field, value, allowed) => {
    const [v, ...rest] = violationsOf({ ...VALID, [field]: value });
    expect(rest).toEqual([]);
    expect(v?.field).toBe(field);
    expect(v?.type).toBe("range");
    expect(v?.description).toContain(allowed);
    expect(v?.description).toContain(`got ${value}`);
  });

  it("rejects a fractional value for an integer field", () => {
    const [v] = violationsOf({ ...VALID, hr: 3.5 });
    expect(v).toMatchObject({ field: "hr", type: "integer" });
  });

  it("rejects strings, null and booleans instead of coercing them", () => {
    const vs = violationsOf({ ...VALID, hr: "3", temp: null, holiday: true });
    expect(vs.map((v) => [v.field, v.type])).toEqual([
      ["hr", "type"],
      ["holiday", "type"],
      ["temp", "type"],
    ]);
    expect(vs[0]?.description).toContain('the string "3"');
  });

  it("reports every missing field and every unknown field", () => {
    const { hr: _hr, temp: _temp, ...rest } = VALID;
    const vs = violationsOf({ ...rest, tempurature: 0.3 });
    expect(vs.map((v) => [v.field, v.type])).toEqual([
      ["hr", "missing"],
      ["temp", "missing"],
      ["tempurature", "extra"],
    ]);
  });

  it("rejects a body that is not an object", () => {
    for (const body of [null, [], 3, "x"]) expect(violationsOf(body)[0]?.type).toBe("object");
  });

  it("names fields with their path inside a batch", () => {
    const r = validateRecord({ ...VALID, hr: 99 }, "inputs[7]");
    expect(r.ok ? "" : r.violations[0]?.field).toBe("inputs[7].hr");
  });

  it("says NaN and Infinity are not allowed (binary protobuf can carry them), not that a number was sent", () => {
    const vs = violationsOf({ ...VALID, temp: Number.NaN, hum: Number.POSITIVE_INFINITY, hr: -Infinity });
    expect(vs.map((v) => [v.field, v.description.split(":")[0]])).toEqual([
      ["hr", "-Infinity is not allowed"],
      ["temp", "NaN is not allowed"],
      ["hum", "Infinity is not allowed"],
    ]);
    for (const v of vs) expect(v.description).not.toContain("got a number");
  });

  it("never puts a huge unknown key or value into a violation", () => {
    const key = "k".repeat(100_000);
    const vs = violationsOf({ ...VALID, [key]: 1, hr: "x".repeat(100_000), temp: Array(100_000).fill(0) });
    for (const v of vs) expect(v.field.length + v.description.length).toBeLessThan(300);
    expect(vs.find((v) => v.field === "temp")?.description).toContain("an array of 100000 items");
  });
});

describe("ViolationList", () => {
  const bad = (row: number) => validateRecord({}, `rows[${row}]`);

  it("lists the first 20 violations of many rows and counts the rest and the rows with errors", () => {
    const list = new ViolationList();
    for (let row = 0; row < 10_000; row++) {
      const r = bad(row);
      list.addRow(r.ok ? [] : r.violations);
    }
    list.addRow([]);
    expect(list.listed).toHaveLength(MAX_LISTED_VIOLATIONS);
    expect(list.listed[0]?.field).toBe("rows[0].season");
    expect(list.total).toBe(120_000);
    expect(list.rowsWithErrors).toBe(10_000);
    expect(list.summary()).toBe("… and 119,980 more violations in 10,000 rows (not listed)");
  });

  it("is full once it lists 20, and still counts what is added without paths", () => {
    const list = new ViolationList();
    const r = bad(0);
    list.addRow(r.ok ? [] : r.violations);
    expect(list.full).toBe(false);
    list.addRow(r.ok ? [] : r.violations);
    expect(list.full).toBe(true);
    const unnamed = validateRecord({ hr: 3 }, "");
    list.addRow(unnamed.ok ? [] : unnamed.violations);
    expect([list.total, list.rowsWithErrors, list.listed.length]).toEqual([35, 3, 20]);
  });

  it("has no summary when every violation is listed", () => {
    const list = new ViolationList();
    const r = bad(0);
    list.addRow(r.ok ? [] : r.violations);
    expect(list.summary()).toBeUndefined();
    expect(list.listed).toHaveLength(12);
  });
});
