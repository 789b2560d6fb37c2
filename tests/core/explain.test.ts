import { describe, expect, it } from "vitest";
import {
  DATE_FIELD,
  EXPLAINED_FIELDS,
  explainContributions,
  explanationSpace,
  shapImportance,
} from "../../core/explain/index.js";
import { FEATURE_NAMES, NUM_FEATURES, RAW_FIELD_NAMES } from "../../core/features/index.js";
import { seededRandom } from "../../core/random/index.js";
import { train } from "../../core/xgboost/index.js";

// Additivity on real models over all of hour.csv is tests/pipelines/explain-additivity.test.ts (minutes
// of TreeSHAP: the integration tier). Here: how contributions are named and aggregated.
const WIDTH = NUM_FEATURES + 1;
const index = (name: string) => FEATURE_NAMES.indexOf(name);

describe("contributions are named by the raw fields", () => {
  // Hand-made contributions: feature f contributes f + 1, the bias is 100.
  const row = Float32Array.from({ length: WIDTH }, (_, f) => (f === NUM_FEATURES ? 100 : f + 1));

  it("adds each derived feature to its source field(s) and lists it in `derived`", () => {
    const [e] = explainContributions(row, 1, "prediction", "hour");
    if (!e) throw new Error("no explanation");
    expect(e.contributions.map((c) => c.feature)).toEqual([...RAW_FIELD_NAMES, "hour"]);
    const value = (field: string) => e.contributions.find((c) => c.feature === field)?.value;
    const own = (feature: string) => index(feature) + 1;
    // workingday_hr is split evenly between its two fields.
    expect(value("hr")).toBeCloseTo(own("hr") + own("workingday_hr") / 2, 9);
    expect(value("workingday")).toBeCloseTo(own("workingday") + own("workingday_hr") / 2, 9);
    expect(value("hour")).toBeCloseTo(
      own("days_to_holiday") + own("days_since_holiday") + own("year_end_break"),
      9,
    );
    expect(value("temp")).toBe(own("temp"));
    expect(e.derived).toEqual([
      { feature: "workingday_hr", value: own("workingday_hr"), from: ["hr", "workingday"] },
      { feature: "days_to_holiday", value: own("days_to_holiday"), from: ["hour"] },
      { feature: "days_since_holiday", value: own("days_since_holiday"), from: ["hour"] },
      { feature: "year_end_break", value: own("year_end_break"), from: ["hour"] },
    ]);
    const total = row.slice(0, NUM_FEATURES).reduce((a, b) => a + b, 0);
    expect(e.contributions.reduce((a, c) => a + c.value, 0)).toBeCloseTo(total, 9);
    expect(e.bias).toBe(100);
    expect(e.prediction).toBeCloseTo(100 + total, 9);
  });

  it("names the date field `timestamp` by default (the legacy JSON key)", () => {
    const [e] = explainContributions(row, 1, "prediction");
    expect(DATE_FIELD).toBe("timestamp");
    expect(e?.contributions.at(-1)?.feature).toBe("timestamp");
    expect(EXPLAINED_FIELDS.at(-1)).toBe("timestamp");
  });

  it("global importance is the mean |SHAP| per feature and per field (after aggregation)", () => {
    // Row 2 negates row 1: means of |.| are the row-1 magnitudes.
    const two = new Float32Array(2 * WIDTH);
    two.set(row);
    two.set(
      row.map((v) => -v),
      WIDTH,
    );
    const g = shapImportance(two, 2, "prediction");
    expect(g.rows).toBe(2);
    expect(g.features.hr).toBeCloseTo(index("hr") + 1, 9);
    expect(g.fields.hr).toBeCloseTo(index("hr") + 1 + (index("workingday_hr") + 1) / 2, 9);
    expect(Object.keys(g.fields)).toEqual([...EXPLAINED_FIELDS]);
  });

  it("refuses contributions of the wrong width and unknown objectives, saying what was expected", () => {
    expect(() => explainContributions(new Float32Array(WIDTH - 1), 1, "prediction")).toThrow(
      /expected 1 rows × 17 \(features \+ bias\)/,
    );
    expect(() => explanationSpace("reg:pseudohubererror")).toThrow(/reg:pseudohubererror/);
    expect(explanationSpace("reg:tweedie")).toBe("log");
  });
});

describe("Booster.predictContribs (the addon)", () => {
  it("returns rows × (features + 1) adding up to the prediction, and checks its input like predict", async () => {
    const random = seededRandom(7);
    const rows = 400;
    const cols = 3;
    const data = Float32Array.from({ length: rows * cols }, () => random() * 2 - 1);
    const labels = Float32Array.from({ length: rows }, (_, r) => 5 * (data[r * cols] as number) + 1);
    const { booster } = await train({
      params: { max_depth: 3, eta: 0.3, nthread: 1, base_score: 1 },
      rounds: 20,
      train: { data, rows, cols, labels },
    });
    const m = { data: data.subarray(0, 10 * cols), rows: 10, cols };
    const contribs = booster.predictContribs(m);
    expect(contribs).toHaveLength(10 * (cols + 1));
    expect(await booster.predictContribsAsync(m)).toEqual(contribs);
    const predictions = booster.predict(m);
    for (let r = 0; r < 10; r++) {
      const sum = contribs.subarray(r * (cols + 1), (r + 1) * (cols + 1)).reduce((a, b) => a + b, 0);
      expect(sum).toBeCloseTo(predictions[r] as number, 4);
      // Only column 0 carries signal: the noise columns explain (almost) nothing.
      expect(Math.abs(contribs[r * (cols + 1)] as number)).toBeGreaterThan(
        Math.abs(contribs[r * (cols + 1) + 1] as number),
      );
    }
    expect(booster.predictContribs({ data: new Float32Array(0), rows: 0, cols })).toHaveLength(0);
    expect(() => booster.predictContribs({ data: new Float32Array(4), rows: 1, cols: 4 })).toThrow(
      /matrix.cols 4 does not match numFeatures 3/,
    );
    booster.dispose();
    expect(() => booster.predictContribs(m)).toThrow(/disposed/);
  });
});
