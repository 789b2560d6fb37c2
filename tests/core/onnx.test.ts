import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decodeModelSummary,
  OnnxModel,
  OnnxWorkerModel,
  type XGBoostJsonGradientBooster,
  type XGBoostJsonModel,
  type XGBoostJsonTree,
  xgboostToOnnx,
} from "../../core/onnx/index.js";
import { train } from "../../core/xgboost/index.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

// ---------------------------------------------------------------------------------------------------------
// Hand-written fixtures

const leaf = (value: number) => ({ left: -1, right: -1, feature: 0, value, defaultLeft: 0 });
const split = (feature: number, threshold: number, left: number, right: number, defaultLeft: 0 | 1) => ({
  left,
  right,
  feature,
  value: threshold,
  defaultLeft,
});

function tree(nodes: ReturnType<typeof leaf>[]): XGBoostJsonTree {
  return {
    left_children: nodes.map((n) => n.left),
    right_children: nodes.map((n) => n.right),
    split_indices: nodes.map((n) => n.feature),
    split_conditions: nodes.map((n) => n.value),
    default_left: nodes.map((n) => n.defaultLeft),
    base_weights: nodes.map((n) => n.value),
    split_type: nodes.map(() => 0),
    tree_param: { num_feature: "2", num_nodes: String(nodes.length), size_leaf_vector: "0" },
  };
}

function model<B extends XGBoostJsonGradientBooster>(objective: string, booster: B, numFeature = 2) {
  return {
    version: [1, 7, 4],
    learner: {
      learner_model_param: {
        base_score: "5E-1",
        num_feature: String(numFeature),
        num_class: "0",
        num_target: "1",
      },
      objective: { name: objective },
      gradient_booster: booster,
      feature_names: [],
      feature_types: [],
    },
  } satisfies XGBoostJsonModel;
}

/**
 * Tree 0: x0 < 1 ? (0.25) : (x1 < 2.5 ? -0.5 : 1.0), missing x0 → left, missing x1 → right.
 * Tree 1: x1 < 0.5 ? 0.125 : -0.25, missing x1 → right.
 */
function gbtreeFixture(objective = "reg:squarederror") {
  const trees = [
    tree([split(0, 1, 1, 2, 1), leaf(0.25), split(1, 2.5, 3, 4, 0), leaf(-0.5), leaf(1)]),
    tree([split(1, 0.5, 1, 2, 0), leaf(0.125), leaf(-0.25)]),
  ];
  return model(objective, {
    name: "gbtree",
    model: {
      gbtree_model_param: { num_trees: "2", num_parallel_tree: "1", size_leaf_vector: "0" },
      trees,
      tree_info: [0, 0],
    },
  });
}

const FEATURES2 = ["a", "b"];
// biome-ignore format: one row per line
const TREE_ROWS = new Float32Array([
  1, 2.5, // ties at both thresholds → right, right: 1 - 0.25
  0.999, 0, // left, left: 0.25 + 0.125
  Number.NaN, Number.NaN, // x0 missing → default left; x1 missing → default right: 0.25 - 0.25
  5, Number.NaN, // right, x1 missing → right: 1 - 0.25
  2, 1, // right then left: -0.5 - 0.25
]);
const TREE_SUMS = [0.75, 0.375, 0, 0.75, -0.75];

function expectClose(actual: Float32Array, expected: number[], tol: number) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i] as number;
    const a = actual[i] as number;
    if (!(Math.abs(a - e) <= tol)) expect.fail(`row ${i}: got ${a}, expected ${e} (tol ${tol})`);
  }
}

async function predictWith(bytes: Uint8Array, data: Float32Array, rows: number): Promise<Float32Array> {
  const m = await OnnxModel.load(bytes);
  try {
    return await m.predict(data, rows);
  } finally {
    await m.release();
  }
}

describe("xgboostToOnnx: hand-written fixtures", () => {
  it("gbtree squared error: ties go right (BRANCH_LT), NaN follows default_left", async () => {
    const bytes = xgboostToOnnx(gbtreeFixture(), { featureNames: FEATURES2 });
    const out = await predictWith(bytes, TREE_ROWS, 5);
    expectClose(
      out,
      TREE_SUMS.map((s) => 0.5 + s),
      1e-6,
    );
  });

  it("accepts the model as a JSON string and stores metadata + names", async () => {
    const bytes = xgboostToOnnx(JSON.stringify(gbtreeFixture()), {
      featureNames: FEATURES2,
      inputName: "x",
      outputName: "y",
      metadata: { run_id: "abc", dataset: "hour.csv" },
    });
    const m = await OnnxModel.load(bytes, { intraOpThreads: 1 });
    try {
      expect(m.inputName).toBe("x");
      expect(m.outputName).toBe("y");
      expect(m.numFeatures).toBe(2);
      expect(m.metadata.run_id).toBe("abc");
      expect(m.metadata.dataset).toBe("hour.csv");
      expect(m.metadata.xgboost_objective).toBe("reg:squarederror");
      expect(m.metadata.xgboost_booster).toBe("gbtree");
      expect(JSON.parse(m.metadata.feature_names ?? "null")).toEqual(FEATURES2);
      expect(m.featureNames).toEqual(FEATURES2);
      expect((await m.predict(new Float32Array(0), 0)).length).toBe(0);
    } finally {
      await m.release();
    }
    const summary = decodeModelSummary(bytes);
    expect(summary.irVersion).toBe(8);
    expect(summary.opsetImports).toEqual([
      { domain: "", version: 16 },
      { domain: "ai.onnx.ml", version: 3 },
    ]);
  });

  it("extra trailing input columns are ignored by tree models (num_feature < F)", async () => {
    const rows = 5;
    const wide = new Float32Array(rows * 3);
    for (let r = 0; r < rows; r++) {
      wide[r * 3] = TREE_ROWS[r * 2] as number;
      wide[r * 3 + 1] = TREE_ROWS[r * 2 + 1] as number;
      wide[r * 3 + 2] = 1000 + r;
    }
    const bytes = xgboostToOnnx(gbtreeFixture(), { featureNames: ["a", "b", "unused"] });
    expectClose(
      await predictWith(bytes, wide, rows),
      TREE_SUMS.map((s) => 0.5 + s),
      1e-6,
    );
  });

  it("count:poisson adds exp() and uses log(base_score) as the base margin", async () => {
    const bytes = xgboostToOnnx(gbtreeFixture("count:poisson"), { featureNames: FEATURES2 });
    const out = await predictWith(bytes, TREE_ROWS, 5);
    expectClose(
      out,
      TREE_SUMS.map((s) => Math.exp(Math.log(0.5) + s)),
      1e-6,
    );
  });

  it("dart multiplies leaves by weight_drop; single-leaf trees work", async () => {
    const gb = gbtreeFixture().learner.gradient_booster.model;
    const trees = [...gb.trees, tree([leaf(2)])];
    const m = model("reg:squarederror", {
      name: "dart",
      gbtree: {
        name: "gbtree",
        model: {
          gbtree_model_param: { num_trees: "3", num_parallel_tree: "1" },
          trees,
          tree_info: [0, 0, 0],
        },
      },
      weight_drop: [0.5, 2, 0.25],
    });
    const out = await predictWith(xgboostToOnnx(m, { featureNames: FEATURES2 }), TREE_ROWS, 5);
    // per-row leaf values of tree 0 and tree 1 (see TREE_ROWS comments)
    const t0 = [1, 0.25, 0.25, 1, -0.5];
    const t1 = [-0.25, 0.125, -0.25, -0.25, -0.25];
    expectClose(
      out,
      t0.map((v, i) => 0.5 + 0.5 * v + 2 * (t1[i] as number) + 0.25 * 2),
      1e-6,
    );
  });

  it("gblinear: dot product + bias + base_score, NaN counts as 0", async () => {
    // weights: 3 features then the bias
    const m = model("reg:squarederror", { name: "gblinear", model: { weights: [0.5, -2, 0.25, 1.5] } }, 3);
    // biome-ignore format: one row per line
    const rows = new Float32Array([
      1, 2, 4,
      Number.NaN, 1, 0,
      0, 0, 0,
      -4, Number.NaN, Number.NaN,
    ]);
    const bytes = xgboostToOnnx(m, { featureNames: ["a", "b", "c"] });
    const out = await predictWith(bytes, rows, 4);
    expectClose(out, [0.5 - 4 + 1 + 1.5 + 0.5, -2 + 2, 2, -2 + 2], 1e-6);

    const pois = model("count:poisson", { name: "gblinear", model: { weights: [0.5, -2, 0.25, 1.5] } }, 3);
    const outP = await predictWith(xgboostToOnnx(pois, { featureNames: ["a", "b", "c"] }), rows, 4);
    expectClose(
      outP,
      [0.5 - 4 + 1 + 1.5, -2 + 1.5, 1.5, -2 + 1.5].map((s) => Math.exp(Math.log(0.5) + s)),
      1e-6,
    );
  });
});

describe("xgboostToOnnx / OnnxModel: errors", () => {
  it("rejects an unknown objective by name", () => {
    expect(() => xgboostToOnnx(gbtreeFixture("reg:logistic"), { featureNames: FEATURES2 })).toThrow(
      /unsupported objective "reg:logistic"/,
    );
    expect(() => xgboostToOnnx(gbtreeFixture("rank:pairwise"), { featureNames: FEATURES2 })).toThrow(
      /unsupported objective "rank:pairwise"/,
    );
  });

  it("rejects multiclass and multi-output models", () => {
    const mc = gbtreeFixture("multi:softprob");
    mc.learner.learner_model_param.num_class = "3";
    expect(() => xgboostToOnnx(mc, { featureNames: FEATURES2 })).toThrow(/multiclass.*num_class=3/);

    const grouped = gbtreeFixture();
    grouped.learner.gradient_booster.model.tree_info = [0, 1];
    expect(() => xgboostToOnnx(grouped, { featureNames: FEATURES2 })).toThrow(/several output groups/);

    const mo = gbtreeFixture();
    mo.learner.learner_model_param.num_target = "2";
    expect(() => xgboostToOnnx(mo, { featureNames: FEATURES2 })).toThrow(/multi-output.*num_target=2/);
  });

  it("rejects bad feature lists, unknown boosters, reserved metadata keys and non-JSON input", () => {
    expect(() => xgboostToOnnx(gbtreeFixture(), { featureNames: ["a"] })).toThrow(
      /model uses 2 features but only 1 featureNames/,
    );
    const named = gbtreeFixture() as XGBoostJsonModel;
    named.learner.feature_names = ["b", "a"];
    expect(() => xgboostToOnnx(named, { featureNames: FEATURES2 })).toThrow(/feature 0 is "b" in the model/);
    const other = model("reg:squarederror", { name: "gbforest" });
    expect(() => xgboostToOnnx(other, { featureNames: FEATURES2 })).toThrow(/unsupported booster "gbforest"/);
    expect(() =>
      xgboostToOnnx(gbtreeFixture(), { featureNames: FEATURES2, metadata: { feature_names: "x" } }),
    ).toThrow(/reserved/);
    expect(() => xgboostToOnnx("{not json", { featureNames: FEATURES2 })).toThrow(/not valid JSON/);
    const cat = gbtreeFixture();
    (cat.learner.gradient_booster.model.trees[0] as XGBoostJsonTree).split_type = [1, 0, 0, 0, 0];
    expect(() => xgboostToOnnx(cat, { featureNames: FEATURES2 })).toThrow(/categorical/);
  });

  it("predict validates the feature count", async () => {
    const m = await OnnxModel.load(xgboostToOnnx(gbtreeFixture(), { featureNames: FEATURES2 }));
    try {
      await expect(m.predict(new Float32Array(5), 2)).rejects.toThrow(
        /feature count mismatch: got 5 values for 2 rows, expected 4 \(2 rows x 2 features\)/,
      );
      await expect(m.predict(new Float32Array(4), 1.5)).rejects.toThrow(
        /rows must be a non-negative integer/,
      );
    } finally {
      await m.release();
    }
    await expect(m.predict(new Float32Array(2), 1)).rejects.toThrow(/released/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Parity against the native booster on the real dataset

const FEATURE_COLUMNS = [
  "season",
  "yr",
  "mnth",
  "hr",
  "holiday",
  "weekday",
  "workingday",
  "weathersit",
  "temp",
  "atemp",
  "hum",
  "windspeed",
];

function loadHourCsv(): { data: Float32Array; labels: Float32Array; rows: number; cols: number } {
  const lines = readFileSync(`${ROOT}data/raw/hour.csv`, "utf8")
    .split(/\r?\n/)
    .filter((l) => l.length > 0);
  const header = (lines[0] ?? "").split(",");
  const featureIdx = FEATURE_COLUMNS.map((c) => header.indexOf(c));
  const labelIdx = header.indexOf("cnt");
  if (featureIdx.some((i) => i < 0) || labelIdx < 0) throw new Error(`unexpected header: ${lines[0]}`);
  const rows = lines.length - 1;
  const cols = FEATURE_COLUMNS.length;
  const data = new Float32Array(rows * cols);
  const labels = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const fields = (lines[r + 1] as string).split(",");
    for (let c = 0; c < cols; c++) data[r * cols + c] = Number(fields[featureIdx[c] as number]);
    labels[r] = Number(fields[labelIdx]);
  }
  return { data, labels, rows, cols };
}

describe("ONNX parity with the native XGBoost booster (data/raw/hour.csv)", () => {
  let ds: ReturnType<typeof loadHourCsv>;
  const report: string[] = [];

  beforeAll(async () => {
    ds = loadHourCsv();
  });

  afterAll(() => {
    if (report.length > 0) console.log(`ONNX parity (max |diff|, max rel diff):\n${report.join("\n")}`);
  });

  /** Max abs/rel differences, failing on the first row outside |onnx - native| <= 1e-3 * max(1, |native|). */
  function compare(label: string, onnx: Float32Array, native: Float32Array): void {
    expect(onnx.length).toBe(ds.rows);
    expect(native.length).toBe(ds.rows);
    let maxAbs = 0;
    let maxRel = 0;
    let bad = -1;
    for (let i = 0; i < ds.rows; i++) {
      const n = native[i] as number;
      const d = Math.abs((onnx[i] as number) - n);
      maxAbs = Math.max(maxAbs, d);
      maxRel = Math.max(maxRel, d / Math.max(1, Math.abs(n)));
      if (bad < 0 && !(d <= 1e-3 * Math.max(1, Math.abs(n)))) bad = i;
    }
    report.push(`  ${label}: ${maxAbs.toExponential(3)}, ${maxRel.toExponential(3)}`);
    if (bad >= 0) expect.fail(`${label}: row ${bad} onnx=${onnx[bad]} native=${native[bad]}`);
  }

  const common = { tree_method: "hist", max_depth: 6, nthread: 2, seed: 7 };
  const families: Array<[string, Record<string, string | number>, number, number]> = [
    ["gbtree squarederror", { ...common, objective: "reg:squarederror", eta: 0.1 }, 300, 300],
    [
      "random forest",
      {
        ...common,
        objective: "reg:squarederror",
        num_parallel_tree: 50,
        subsample: 0.8,
        colsample_bynode: 0.8,
        eta: 1,
      },
      1,
      50,
    ],
    ["gblinear", { booster: "gblinear", objective: "reg:squarederror", eta: 0.5, nthread: 2 }, 100, 0],
    ["gbtree count:poisson", { ...common, objective: "count:poisson", eta: 0.1 }, 200, 200],
    ["dart", { ...common, booster: "dart", objective: "reg:squarederror", eta: 0.3, rate_drop: 0.1 }, 40, 40],
  ];

  it.each(families)("%s", async (name, params, rounds, expectedTrees) => {
    const { booster } = await train({
      params,
      rounds,
      train: { data: ds.data, rows: ds.rows, cols: ds.cols, labels: ds.labels },
    });
    // Missing values: blank out every 7th cell (rows then exercise default_left / gblinear's "absent = 0").
    const holes = ds.data.map((v, i) => (i % 7 === 3 ? Number.NaN : v));
    let native: Float32Array;
    let nativeHoles: Float32Array;
    let json: string;
    try {
      // Stored in the JSON as learner.feature_names, which the exporter checks against featureNames.
      booster.setFeatureNames(FEATURE_COLUMNS);
      native = booster.predict({ data: ds.data, rows: ds.rows, cols: ds.cols });
      nativeHoles = booster.predict({ data: holes, rows: ds.rows, cols: ds.cols });
      json = booster.saveJson();
    } finally {
      booster.dispose();
    }
    const bytes = xgboostToOnnx(json, { featureNames: FEATURE_COLUMNS });
    expect(decodeModelSummary(bytes).metadata.xgboost_num_trees).toBe(String(expectedTrees));
    const m = await OnnxModel.load(bytes);
    try {
      compare(name, await m.predict(ds.data, ds.rows), native);
      compare(`${name} (with NaNs)`, await m.predict(holes, ds.rows), nativeHoles);
    } finally {
      await m.release();
    }
    // sanity: the model actually learned something (not a constant prediction)
    expect(Math.max(...native) - Math.min(...native)).toBeGreaterThan(10);
  });
});

describe("OnnxWorkerModel: the same predictions, on a thread of its own", () => {
  let ds: ReturnType<typeof loadHourCsv>;
  let bytes: Uint8Array;

  beforeAll(async () => {
    ds = loadHourCsv();
    const { booster } = await train({
      params: { tree_method: "hist", max_depth: 6, nthread: 2, seed: 7, eta: 0.1 },
      rounds: 300,
      train: { data: ds.data, rows: ds.rows, cols: ds.cols, labels: ds.labels },
    });
    try {
      booster.setFeatureNames(FEATURE_COLUMNS);
      bytes = xgboostToOnnx(booster.saveJson(), { featureNames: FEATURE_COLUMNS });
    } finally {
      booster.dispose();
    }
  });

  it("predicts exactly what OnnxModel predicts, NaNs included, and keeps the model's metadata", async () => {
    const holes = ds.data.map((v, i) => (i % 7 === 3 ? Number.NaN : v));
    const inThread = await OnnxModel.load(bytes);
    const worker = await OnnxWorkerModel.load(bytes);
    try {
      expect(worker.featureNames).toEqual(FEATURE_COLUMNS);
      expect(worker.numFeatures).toBe(FEATURE_COLUMNS.length);
      // Several in flight at once come back to the right callers.
      const [a, b] = await Promise.all([worker.predict(ds.data, ds.rows), worker.predict(holes, ds.rows)]);
      expect(a).toEqual(await inThread.predict(ds.data, ds.rows));
      expect(b).toEqual(await inThread.predict(holes, ds.rows));
      expect(await worker.predict(new Float32Array(0), 0)).toEqual(new Float32Array(0));
    } finally {
      await inThread.release();
      await worker.release();
    }
  });

  it("spreads predictions over several workers, each answer going to its own caller", async () => {
    const inThread = await OnnxModel.load(bytes);
    const pool = await OnnxWorkerModel.load(bytes, { workers: 2 });
    try {
      // Four different inputs in flight over two workers: each caller must get its own rows back.
      const inputs = [0, 1, 2, 3].map((k) => ds.data.map((v, i) => (i % 5 === k ? Number.NaN : v)));
      const answers = await Promise.all(inputs.map((x) => pool.predict(x, ds.rows)));
      for (const [k, x] of inputs.entries()) expect(answers[k]).toEqual(await inThread.predict(x, ds.rows));
    } finally {
      await inThread.release();
      await pool.release();
    }
    await expect(OnnxWorkerModel.load(bytes, { workers: 0 })).rejects.toThrow(
      /workers must be an integer in 1..64, got 0/,
    );
  });

  it("leaves the calling thread free while it predicts", async () => {
    const rows = ds.rows * 8;
    const data = new Float32Array(rows * ds.cols);
    for (let k = 0; k < 8; k++) data.set(ds.data, k * ds.data.length);
    // Timer ticks that fire during one large prediction: the in-thread model blocks them all.
    const ticksDuring = async (predict: () => Promise<Float32Array>) => {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      const started = performance.now();
      await predict();
      clearInterval(timer);
      return { ticks, ms: performance.now() - started };
    };
    const inThread = await OnnxModel.load(bytes);
    const worker = await OnnxWorkerModel.load(bytes);
    try {
      const blocked = await ticksDuring(() => inThread.predict(data, rows));
      const free = await ticksDuring(() => worker.predict(data, rows));
      expect(blocked.ms).toBeGreaterThan(100);
      expect(blocked.ticks).toBeLessThanOrEqual(1);
      expect(free.ticks).toBeGreaterThan(free.ms / 5 / 3);
    } finally {
      await inThread.release();
      await worker.release();
    }
  });

  it("names what is wrong: feature count, row count, a broken model, a released model", async () => {
    const m = await OnnxWorkerModel.load(bytes);
    await expect(m.predict(new Float32Array(5), 2)).rejects.toThrow(
      /feature count mismatch: got 5 values for 2 rows, expected 24 \(2 rows x 12 features\)/,
    );
    await expect(m.predict(new Float32Array(12), 1.5)).rejects.toThrow(/rows must be a non-negative integer/);
    await m.release();
    await expect(m.predict(new Float32Array(12), 1)).rejects.toThrow(/released/);
    await expect(OnnxWorkerModel.load(bytes.subarray(0, bytes.length - 9))).rejects.toThrow(
      /OnnxWorkerModel.load: not a valid ONNX model \(premature EOF\)/,
    );
  });
});
