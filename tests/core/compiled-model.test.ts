import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  FEATURE_NAMES,
  FEATURE_SCHEMA_VERSION,
  featureMatrix,
  type RawRecord,
  recordsToColumns,
} from "../../core/features/index.js";
import { CompiledModel, encodeModel, OnnxModel, xgboostToOnnx } from "../../core/onnx/index.js";
import { train } from "../../core/xgboost/index.js";
import { COMPILED_MAX_ROWS, ServingModel } from "../../services/predict/serving-model.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX } from "../../services/registry/model-card.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import {
  conditionsAt,
  loadTinyModel,
  TINY_AFTERNOON,
  TINY_CARD,
  TINY_MORNING,
} from "../helpers/tiny-model.js";

const csv = readHourCsvRecords();
const records = csv.map((r) => Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f]])) as RawRecord);
const cols = FEATURE_NAMES.length;
const rows = records.length;
/** All of hour.csv through the real feature pipeline (date features NaN: the records carry no day). */
const data = featureMatrix(recordsToColumns(records));
const labels = Float32Array.from(csv, (r) => Number(r.cnt));
/** Dates known, so the date features are real values too. */
const dated = featureMatrix(
  recordsToColumns(records.map((r, i) => ({ ...r, day: 15_000 + Math.floor(i / 24) }))),
);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

describe("CompiledModel: parity with ONNX Runtime and the native booster on all of hour.csv", () => {
  const common = { tree_method: "hist", max_depth: 6, nthread: 2, seed: 7 };
  const families: Array<[string, Record<string, string | number>, number]> = [
    ["gbtree", { ...common, objective: "reg:squarederror", eta: 0.1 }, 150],
    [
      "random forest",
      { ...common, max_depth: 12, num_parallel_tree: 30, subsample: 0.8, colsample_bynode: 0.8, eta: 1 },
      1,
    ],
    ["linear", { booster: "gblinear", objective: "reg:squarederror", eta: 0.5, nthread: 2 }, 50],
    ["gbtree count:poisson", { ...common, objective: "count:poisson", eta: 0.1 }, 100],
    ["gbtree reg:tweedie", { ...common, objective: "reg:tweedie", eta: 0.1 }, 60],
  ];

  it.each(families)("%s", async (_name, params, rounds) => {
    const { booster } = await train({ params, rounds, train: { data, rows, cols, labels } });
    // Every 7th cell missing as well: NaN goes by each split's default direction, and is 0 in a linear model.
    const holes = dated.map((v, i) => (i % 7 === 3 ? Number.NaN : v));
    const inputs = [data, dated, holes];
    let native: Float32Array[];
    let json: string;
    try {
      booster.setFeatureNames([...FEATURE_NAMES]);
      native = inputs.map((x) => booster.predict({ data: x, rows, cols }));
      json = booster.saveJson();
    } finally {
      booster.dispose();
    }
    const bytes = xgboostToOnnx(json, { featureNames: [...FEATURE_NAMES] });
    const compiled = CompiledModel.fromOnnx(bytes);
    const onnx = await OnnxModel.load(bytes);
    try {
      for (const [k, x] of inputs.entries()) {
        const fast = compiled.predict(x, rows);
        // Row by row as the server calls it, and all at once: the same answers.
        const one = Float32Array.from({ length: rows }, (_, r) => {
          return compiled.predict(x.subarray(r * cols, (r + 1) * cols), 1)[0] as number;
        });
        expect(one).toEqual(fast);
        expect(maxAbsDiff(fast, await onnx.predict(x, rows))).toBeLessThanOrEqual(1e-3);
        expect(maxAbsDiff(fast, native[k] as Float32Array)).toBeLessThanOrEqual(1e-3);
        expect(Math.max(...fast) - Math.min(...fast)).toBeGreaterThan(10);
      }
    } finally {
      await onnx.release();
    }
  });
});

/** A tree ONNX Runtime runs but xgboostToOnnx never writes (BRANCH_LEQ): `hr <= 12 → 1`, else 2. */
function leqOnnx(): Uint8Array {
  const ints = (name: string, value: number[]) => ({ name, type: "ints" as const, value });
  return encodeModel({
    irVersion: 8,
    opsetImports: [
      { domain: "", version: 16 },
      { domain: "ai.onnx.ml", version: 3 },
    ],
    graph: {
      name: "leq",
      nodes: [
        {
          opType: "TreeEnsembleRegressor",
          domain: "ai.onnx.ml",
          inputs: ["features"],
          outputs: ["prediction"],
          attributes: [
            { name: "n_targets", type: "int", value: 1 },
            { name: "aggregate_function", type: "string", value: "SUM" },
            { name: "post_transform", type: "string", value: "NONE" },
            { name: "base_values", type: "floats", value: [0] },
            ints("nodes_treeids", [0, 0, 0]),
            ints("nodes_nodeids", [0, 1, 2]),
            ints("nodes_featureids", [FEATURE_NAMES.indexOf("hr"), 0, 0]),
            { name: "nodes_modes", type: "strings", value: ["BRANCH_LEQ", "LEAF", "LEAF"] },
            { name: "nodes_values", type: "floats", value: [12, 0, 0] },
            ints("nodes_truenodeids", [1, 0, 0]),
            ints("nodes_falsenodeids", [2, 0, 0]),
            ints("nodes_missing_value_tracks_true", [0, 0, 0]),
            ints("target_treeids", [0, 0]),
            ints("target_nodeids", [1, 2]),
            ints("target_ids", [0, 0]),
            { name: "target_weights", type: "floats", value: [1, 2] },
          ],
        },
      ],
      inputs: [{ name: "features", elemType: 1, shape: ["N", cols] }],
      outputs: [{ name: "prediction", elemType: 1, shape: ["N", 1] }],
    },
    metadataProps: { feature_names: JSON.stringify(FEATURE_NAMES) },
  });
}

describe("ServingModel: the compiled evaluator for few rows, ONNX Runtime otherwise", () => {
  let dir: string;
  let db: Database;
  let registry: Registry;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-compiled-"));
    db = await Database.open(":memory:");
    registry = await Registry.open(db, join(dir, "models"));
  });

  afterAll(async () => {
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const hours = (hrs: number[]) =>
    recordsToColumns(hrs.map((hr) => ({ ...(conditionsAt(hr) as unknown as RawRecord), day: Number.NaN })));

  it("serves a model written by xgboostToOnnx through the evaluator, with the same answers on either side of the limit", async () => {
    const model = await loadTinyModel(registry, "tiny");
    try {
      expect(model.compiledDeclined).toBeUndefined();
      expect(Array.from(await model.predict(hours([8])))).toEqual([TINY_MORNING]);
      const many = Array.from({ length: COMPILED_MAX_ROWS + 1 }, (_, i) => (i % 2 === 0 ? 8 : 15));
      const expected = many.map((hr) => (hr < 12 ? TINY_MORNING : TINY_AFTERNOON));
      expect(Array.from(await model.predict(hours(many)))).toEqual(expected);
      expect(Array.from(await model.predict(hours(many.slice(0, COMPILED_MAX_ROWS))))).toEqual(
        expected.slice(0, COMPILED_MAX_ROWS),
      );
    } finally {
      await model.retire();
    }
  });

  it("leaves a graph the evaluator cannot run to ONNX Runtime, saying why", async () => {
    expect(() => CompiledModel.fromOnnx(leqOnnx())).toThrow(/node mode BRANCH_LEQ is not supported/);
    const run = await registry.createRun({ experiment: "fast-tests" });
    await registry.putArtifact(run.id, ARTIFACT_ONNX, leqOnnx());
    await registry.putArtifact(
      run.id,
      ARTIFACT_CARD,
      Buffer.from(JSON.stringify({ ...TINY_CARD, featureSchemaVersion: FEATURE_SCHEMA_VERSION })),
    );
    await registry.endRun(run.id, "finished");
    const version = await registry.createModelVersion({ modelName: "leq", runId: run.id });
    const model = await ServingModel.load(registry, version, 1);
    try {
      expect(model.compiledDeclined).toMatch(/BRANCH_LEQ/);
      // hr = 12 is where BRANCH_LEQ and the evaluator's `<` part: ONNX Runtime's answer is 1.
      expect(Array.from(await model.predict(hours([12, 13])))).toEqual([1, 2]);
      expect(Array.from(await model.predict(hours([12])))).toEqual([1]);
    } finally {
      await model.retire();
    }
  });
});
