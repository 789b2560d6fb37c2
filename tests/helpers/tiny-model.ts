import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FEATURE_NAMES, FEATURE_SCHEMA_VERSION } from "../../core/features/index.js";
import { type XGBoostJsonModel, xgboostToOnnx } from "../../core/onnx/index.js";
import type { HourConditions } from "../../gen/bikeshare/v1/common_pb.js";
import { ServingModel } from "../../services/predict/serving-model.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../../services/registry/model-card.js";
import type { ModelVersion, Registry } from "../../services/registry/registry.js";

/**
 * A real model small enough to write by hand: one tree, `hr < 12 → 100`, else 300 (base score 0.5 plus
 * the leaf), exact in float32. Fast tests serve it through the real ONNX path without training anything.
 */
export const TINY_MORNING = 100;
export const TINY_AFTERNOON = 300;

const HR = FEATURE_NAMES.indexOf("hr");

function tinyXgboostModel(): XGBoostJsonModel {
  const numFeature = String(FEATURE_NAMES.length);
  // Node 0 splits on hr at 12 (BRANCH_LT: hr < 12 goes left); a missing hr goes left too.
  const values = [12, TINY_MORNING - 0.5, TINY_AFTERNOON - 0.5];
  return {
    version: [1, 7, 4],
    learner: {
      learner_model_param: { base_score: "5E-1", num_feature: numFeature, num_class: "0", num_target: "1" },
      objective: { name: "reg:squarederror" },
      gradient_booster: {
        name: "gbtree",
        model: {
          gbtree_model_param: { num_trees: "1", num_parallel_tree: "1", size_leaf_vector: "0" },
          trees: [
            {
              left_children: [1, -1, -1],
              right_children: [2, -1, -1],
              split_indices: [HR, 0, 0],
              split_conditions: values,
              default_left: [1, 0, 0],
              base_weights: values,
              split_type: [0, 0, 0],
              tree_param: { num_feature: numFeature, num_nodes: "3", size_leaf_vector: "0" },
            },
          ],
          tree_info: [0],
        },
      },
      feature_names: [],
      feature_types: [],
    },
  };
}

export const TINY_CARD: ModelCard = {
  family: "gbtree",
  objective: "reg:squarederror",
  params: { max_depth: 1 },
  featureNames: [...FEATURE_NAMES],
  featureSchemaVersion: FEATURE_SCHEMA_VERSION,
  featureImportance: { hr: 1 },
  metrics: { test_rmse: 42 },
  rows: { train: 1 },
  windows: {},
  dataUntil: "2012-09-01",
  dataFingerprint: "tiny-fixture",
  dataSource: "hand-written",
  rounds: 1,
  xgboostVersion: "1.7.4",
  trainingSeconds: 0,
};

/** Registers the tiny model as the next version of `modelName` (a finished run with its card and ONNX graph). */
export async function registerTinyModel(registry: Registry, modelName: string): Promise<ModelVersion> {
  const run = await registry.createRun({ experiment: "fast-tests" });
  const onnx = xgboostToOnnx(tinyXgboostModel(), { featureNames: [...FEATURE_NAMES] });
  await registry.putArtifact(run.id, ARTIFACT_ONNX, onnx);
  await registry.putArtifact(run.id, ARTIFACT_CARD, Buffer.from(JSON.stringify(TINY_CARD)));
  await registry.endRun(run.id, "finished");
  return registry.createModelVersion({ modelName, runId: run.id });
}

/** The tiny model registered and loaded into ONNX Runtime, as the server serves a version. */
export async function loadTinyModel(registry: Registry, modelName: string): Promise<ServingModel> {
  return ServingModel.load(registry, await registerTinyModel(registry, modelName), 1);
}

/** Wednesday 2012-07-11 at `hr` o'clock in Washington, D.C. (EDT, UTC-4). */
export function conditionsAt(hr: number, withHour = false): Partial<HourConditions> {
  return {
    season: 3,
    yr: 1,
    mnth: 7,
    hr,
    holiday: 0,
    weekday: 3,
    workingday: 1,
    weathersit: 1,
    temp: 0.7,
    atemp: 0.65,
    hum: 0.5,
    windspeed: 0.2,
    ...(withHour ? { hour: timestampFromDate(new Date(Date.UTC(2012, 6, 11, hr + 4))) } : {}),
  };
}
