import { describe, expect, it } from "vitest";
import {
  FEATURE_NAMES,
  featureMatrix,
  featuresOfRecord,
  NUM_FEATURES,
  RAW_FIELD_NAMES,
  validateRecord,
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

  it("puts the raw fields first in schema order, then the derived working-day hour", () => {
    expect(FEATURE_NAMES.slice(0, 12)).toEqual(RAW_FIELD_NAMES);
    const f = featuresOfRecord({ ...VALID, workingday: 1, hr: 17 });
    expect(f[FEATURE_NAMES.indexOf("workingday_hr")]).toBe(41);
    expect(f[FEATURE_NAMES.indexOf("temp")]).toBe(Math.fround(0.24));
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
});
