/**
 * XGBoost (1.7 JSON model format) → ONNX converter.
 *
 * - gbtree / dart → one `ai.onnx.ml.TreeEnsembleRegressor` (BRANCH_LT splits, missing values routed by
 *   `default_left`, leaf values scaled by the dart tree weights), base_values = base margin.
 * - gblinear → `Where(IsNaN(X), 0, X)` (XGBoost treats missing values as absent, i.e. contributing 0) followed
 *   by `ai.onnx.ml.LinearRegressor` with intercept = bias + base margin.
 * - Log-link objectives (count:poisson, reg:tweedie, reg:gamma) append an `Exp` node; their base margin is
 *   log(base_score) because base_score is stored on the response scale.
 *
 * The graph input is float32 [N, F] (F = featureNames.length) and the output float32 [N, 1].
 */
import {
  attrFloat,
  attrFloats,
  attrInt,
  attrInts,
  attrString,
  attrStrings,
  encodeModel,
  type NodeProto,
  TensorDataType,
} from "./onnx-proto.js";

// ---------------------------------------------------------------------------------------------------------
// XGBoost JSON model (the subset this converter reads)

export interface XGBoostJsonTree {
  left_children: number[];
  right_children: number[];
  split_indices: number[];
  split_conditions: number[];
  default_left: Array<number | boolean>;
  base_weights?: number[];
  split_type?: number[];
  tree_param?: { num_feature?: string; num_nodes?: string; size_leaf_vector?: string };
  id?: number;
}

export interface XGBoostJsonGbtreeModel {
  gbtree_model_param?: { num_trees?: string; num_parallel_tree?: string; size_leaf_vector?: string };
  trees: XGBoostJsonTree[];
  tree_info?: number[];
}

export interface XGBoostJsonGradientBooster {
  name: string;
  /** gbtree: the tree model; gblinear: `{ weights }`. */
  model?: XGBoostJsonGbtreeModel | { weights: number[] };
  /** dart only: the wrapped gbtree and per-tree weights. */
  gbtree?: { name?: string; model: XGBoostJsonGbtreeModel };
  weight_drop?: number[];
}

export interface XGBoostJsonModel {
  version?: number[];
  learner: {
    learner_model_param: {
      base_score: string;
      num_feature: string;
      num_class?: string;
      num_target?: string;
    };
    objective: { name: string };
    gradient_booster: XGBoostJsonGradientBooster;
    feature_names?: string[];
    feature_types?: string[];
  };
}

export interface OnnxExportOptions {
  /** Column names of the model input, in order. The ONNX input is [N, featureNames.length]. */
  featureNames: readonly string[];
  /** Graph input name (default "features"). */
  inputName?: string;
  /** Graph output name (default "prediction"). */
  outputName?: string;
  /** Extra ModelProto.metadata_props entries. */
  metadata?: Record<string, string>;
}

/** Metadata keys written by the exporter; `opts.metadata` must not reuse them. */
export const ONNX_METADATA_KEYS = {
  featureNames: "feature_names",
  objective: "xgboost_objective",
  booster: "xgboost_booster",
  baseScore: "xgboost_base_score",
  numTrees: "xgboost_num_trees",
  xgboostVersion: "xgboost_version",
} as const;

export const ONNX_PRODUCER_NAME = "bikeshare-xgboost-onnx";
export const ONNX_PRODUCER_VERSION = "0.1.0";
/** IR 8 with ai.onnx 16 and ai.onnx.ml 3 is the ONNX 1.11 release set; ai.onnx.ml 5 deprecates TreeEnsembleRegressor. */
export const ONNX_IR_VERSION = 8;
export const ONNX_OPSET = 16;
export const ONNX_ML_OPSET = 3;
const ML_DOMAIN = "ai.onnx.ml";

type Link = "identity" | "log";

const OBJECTIVE_LINKS: Readonly<Record<string, Link>> = {
  "reg:squarederror": "identity",
  "reg:pseudohubererror": "identity",
  "reg:absoluteerror": "identity",
  "count:poisson": "log",
  "reg:tweedie": "log",
  "reg:gamma": "log",
};

function fail(msg: string): never {
  throw new Error(`xgboostToOnnx: ${msg}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseIntParam(value: unknown, what: string, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isInteger(n) || n < 0)
    fail(`${what} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return n;
}

/** XGBoost writes base_score as a float string ("5E-1"); XGBoost ≥ 2.1 writes a vector ("[5E-1]"). */
function parseBaseScore(value: unknown): number {
  const raw = typeof value === "number" ? String(value) : value;
  if (typeof raw !== "string") fail("learner_model_param.base_score is missing");
  let s: string = raw.trim();
  if (s.startsWith("[") && s.endsWith("]")) {
    const parts = s.slice(1, -1).split(",");
    if (parts.length !== 1) fail(`multi-output base_score ${s} is not supported`);
    s = (parts[0] ?? "").trim();
  }
  const n = Number(s);
  if (s === "" || !Number.isFinite(n))
    fail(`learner_model_param.base_score ${JSON.stringify(value)} is not a number`);
  return Math.fround(n);
}

function asModel(model: string | XGBoostJsonModel): XGBoostJsonModel {
  let parsed: unknown = model;
  if (typeof model === "string") {
    try {
      parsed = JSON.parse(model);
    } catch (e) {
      fail(
        `model is not valid JSON (${(e as Error).message}); pass an XGBoost JSON model, not UBJSON/binary`,
      );
    }
  }
  if (!isObject(parsed) || !isObject(parsed.learner)) fail("not an XGBoost JSON model (missing `learner`)");
  const learner = parsed.learner;
  if (!isObject(learner.learner_model_param)) fail("missing learner.learner_model_param");
  if (!isObject(learner.objective) || typeof learner.objective.name !== "string") {
    fail("missing learner.objective.name");
  }
  if (!isObject(learner.gradient_booster) || typeof learner.gradient_booster.name !== "string") {
    fail("missing learner.gradient_booster.name");
  }
  return parsed as unknown as XGBoostJsonModel;
}

// ---------------------------------------------------------------------------------------------------------
// Tree ensemble

interface EnsembleArrays {
  treeIds: number[];
  nodeIds: number[];
  featureIds: number[];
  modes: string[];
  values: number[];
  trueIds: number[];
  falseIds: number[];
  missingTrue: number[];
  targetTreeIds: number[];
  targetNodeIds: number[];
  targetWeights: number[];
}

function numberArray(tree: Record<string, unknown>, key: string, t: number, n?: number): number[] {
  const v = tree[key];
  if (!Array.isArray(v)) fail(`tree ${t}: missing array ${key}`);
  if (n !== undefined && v.length !== n) fail(`tree ${t}: ${key} has ${v.length} entries, expected ${n}`);
  return v as number[];
}

function addTree(out: EnsembleArrays, raw: unknown, t: number, weight: number, numFeature: number): void {
  if (!isObject(raw)) fail(`tree ${t} is not an object`);
  const left = numberArray(raw, "left_children", t);
  const n = left.length;
  if (n === 0) fail(`tree ${t} has no nodes`);
  const right = numberArray(raw, "right_children", t, n);
  const splitIdx = numberArray(raw, "split_indices", t, n);
  const cond = numberArray(raw, "split_conditions", t, n);
  const defLeft = numberArray(raw, "default_left", t, n);
  const splitType = Array.isArray(raw.split_type) ? (raw.split_type as number[]) : undefined;
  const sizeLeafVector = isObject(raw.tree_param) ? Number(raw.tree_param.size_leaf_vector ?? 0) : 0;
  if (sizeLeafVector > 1)
    fail(`tree ${t} has vector leaves (size_leaf_vector=${sizeLeafVector}); multi-output is not supported`);

  // Walk from the root so pruned/deleted nodes that XGBoost keeps in the arrays are skipped.
  const seen = new Uint8Array(n);
  const stack = [0];
  while (stack.length > 0) {
    const id = stack.pop() as number;
    if (!Number.isInteger(id) || id < 0 || id >= n)
      fail(`tree ${t}: child index ${id} out of range [0, ${n})`);
    if (seen[id]) fail(`tree ${t}: node ${id} is reachable twice (corrupt tree)`);
    seen[id] = 1;
    const l = left[id] as number;
    const value = Number(cond[id]);
    if (!Number.isFinite(value))
      fail(`tree ${t} node ${id}: split_condition/leaf value ${cond[id]} is not finite`);
    out.treeIds.push(t);
    out.nodeIds.push(id);
    if (l === -1) {
      out.featureIds.push(0);
      out.modes.push("LEAF");
      out.values.push(0);
      out.trueIds.push(0);
      out.falseIds.push(0);
      out.missingTrue.push(0);
      out.targetTreeIds.push(t);
      out.targetNodeIds.push(id);
      out.targetWeights.push(weight === 1 ? value : Math.fround(value * weight));
      continue;
    }
    const r = right[id] as number;
    const f = splitIdx[id] as number;
    if (splitType !== undefined && (splitType[id] ?? 0) !== 0) {
      fail(`tree ${t} node ${id}: categorical splits are not supported`);
    }
    if (!Number.isInteger(f) || f < 0 || f >= numFeature) {
      fail(`tree ${t} node ${id}: split feature ${f} out of range [0, ${numFeature})`);
    }
    out.featureIds.push(f);
    // XGBoost goes left when x < split_condition, so "true" = left with BRANCH_LT (BRANCH_LEQ is wrong at ties).
    out.modes.push("BRANCH_LT");
    out.values.push(value);
    out.trueIds.push(l);
    out.falseIds.push(r);
    const dl = defLeft[id] as unknown;
    out.missingTrue.push(dl === true || dl === 1 ? 1 : 0);
    stack.push(r, l);
  }
}

function treeEnsembleNode(
  trees: unknown[],
  weights: number[] | undefined,
  baseMargin: number,
  numFeature: number,
  input: string,
  output: string,
): NodeProto {
  const a: EnsembleArrays = {
    treeIds: [],
    nodeIds: [],
    featureIds: [],
    modes: [],
    values: [],
    trueIds: [],
    falseIds: [],
    missingTrue: [],
    targetTreeIds: [],
    targetNodeIds: [],
    targetWeights: [],
  };
  for (let t = 0; t < trees.length; t++) {
    const w = weights === undefined ? 1 : Number(weights[t]);
    if (!Number.isFinite(w)) fail(`dart weight_drop[${t}] is ${weights?.[t]}`);
    addTree(a, trees[t], t, w, numFeature);
  }
  return {
    opType: "TreeEnsembleRegressor",
    domain: ML_DOMAIN,
    name: "xgboost_trees",
    inputs: [input],
    outputs: [output],
    attributes: [
      attrInt("n_targets", 1),
      attrString("aggregate_function", "SUM"),
      attrString("post_transform", "NONE"),
      attrFloats("base_values", [baseMargin]),
      attrInts("nodes_treeids", a.treeIds),
      attrInts("nodes_nodeids", a.nodeIds),
      attrInts("nodes_featureids", a.featureIds),
      attrStrings("nodes_modes", a.modes),
      attrFloats("nodes_values", a.values),
      attrInts("nodes_truenodeids", a.trueIds),
      attrInts("nodes_falsenodeids", a.falseIds),
      attrInts("nodes_missing_value_tracks_true", a.missingTrue),
      attrInts("target_treeids", a.targetTreeIds),
      attrInts("target_nodeids", a.targetNodeIds),
      attrInts("target_ids", new Array<number>(a.targetTreeIds.length).fill(0)),
      attrFloats("target_weights", a.targetWeights),
    ],
  };
}

function gbtreeModel(booster: XGBoostJsonGradientBooster): {
  trees: unknown[];
  weights: number[] | undefined;
} {
  let model: unknown;
  let weights: number[] | undefined;
  if (booster.name === "dart") {
    model = booster.gbtree?.model;
    if (!Array.isArray(booster.weight_drop)) fail("dart booster is missing weight_drop");
    weights = booster.weight_drop;
  } else {
    model = booster.model;
  }
  if (!isObject(model) || !Array.isArray(model.trees)) fail(`${booster.name} booster has no trees array`);
  const trees = model.trees as unknown[];
  if (trees.length === 0) fail(`${booster.name} booster has no trees`);
  if (weights !== undefined && weights.length !== trees.length) {
    fail(`dart weight_drop has ${weights.length} entries for ${trees.length} trees`);
  }
  const param = isObject(model.gbtree_model_param) ? model.gbtree_model_param : {};
  const numTrees = parseIntParam(param.num_trees, "gbtree_model_param.num_trees", trees.length);
  if (numTrees !== trees.length)
    fail(`gbtree_model_param.num_trees=${numTrees} but ${trees.length} trees stored`);
  // Random forests (num_parallel_tree > 1) store every parallel tree in `trees`; they are simply summed.
  const numParallelTree = parseIntParam(param.num_parallel_tree, "gbtree_model_param.num_parallel_tree", 1);
  if (numParallelTree < 1 || trees.length % numParallelTree !== 0) {
    fail(`${trees.length} trees is not a multiple of num_parallel_tree=${numParallelTree}`);
  }
  if (Array.isArray(model.tree_info) && model.tree_info.some((g) => g !== 0)) {
    fail("trees belong to several output groups (multiclass/multi-output models are not supported)");
  }
  return { trees, weights };
}

// ---------------------------------------------------------------------------------------------------------
// Public API

/**
 * Converts an XGBoost JSON model (string or parsed object) into a serialized ONNX ModelProto.
 * Throws a descriptive error for unsupported boosters, objectives and multi-output/multiclass models.
 */
export function xgboostToOnnx(model: string | XGBoostJsonModel, opts: OnnxExportOptions): Uint8Array {
  const m = asModel(model);
  const { learner } = m;
  const mp = learner.learner_model_param;
  const inputName = opts.inputName ?? "features";
  const outputName = opts.outputName ?? "prediction";
  const featureNames = opts.featureNames;

  if (!Array.isArray(featureNames) || featureNames.length === 0) fail("opts.featureNames must be non-empty");
  if (new Set(featureNames).size !== featureNames.length) fail("opts.featureNames contains duplicates");
  if (inputName === "" || outputName === "" || inputName === outputName) {
    fail(`input and output names must be distinct and non-empty (got "${inputName}", "${outputName}")`);
  }

  const numClass = parseIntParam(mp.num_class, "learner_model_param.num_class", 0);
  if (numClass > 1) fail(`multiclass models are not supported (num_class=${numClass})`);
  const numTarget = parseIntParam(mp.num_target, "learner_model_param.num_target", 1);
  if (numTarget > 1) fail(`multi-output models are not supported (num_target=${numTarget})`);

  const objective = learner.objective.name;
  const link = OBJECTIVE_LINKS[objective];
  if (link === undefined) {
    fail(`unsupported objective "${objective}" (supported: ${Object.keys(OBJECTIVE_LINKS).join(", ")})`);
  }

  const numFeature = parseIntParam(mp.num_feature, "learner_model_param.num_feature");
  const F = featureNames.length;
  if (numFeature > F) fail(`model uses ${numFeature} features but only ${F} featureNames were given`);
  const modelNames = learner.feature_names;
  if (Array.isArray(modelNames) && modelNames.length > 0) {
    for (let i = 0; i < modelNames.length; i++) {
      if (modelNames[i] !== featureNames[i]) {
        fail(`feature ${i} is "${modelNames[i]}" in the model but "${featureNames[i]}" in opts.featureNames`);
      }
    }
  }

  const baseScore = parseBaseScore(mp.base_score);
  if (link === "log" && !(baseScore > 0)) fail(`base_score must be > 0 for ${objective}, got ${baseScore}`);
  const baseMargin = link === "log" ? Math.fround(Math.log(baseScore)) : baseScore;

  const booster = learner.gradient_booster;
  const margin = link === "identity" ? outputName : "xgb_margin";
  const nodes: NodeProto[] = [];
  let numTrees = 0;

  if (booster.name === "gbtree" || booster.name === "dart") {
    const { trees, weights } = gbtreeModel(booster);
    numTrees = trees.length;
    nodes.push(treeEnsembleNode(trees, weights, baseMargin, numFeature, inputName, margin));
  } else if (booster.name === "gblinear") {
    const lm = booster.model;
    const w = isObject(lm) && Array.isArray(lm.weights) ? (lm.weights as number[]) : undefined;
    if (w === undefined) fail("gblinear booster is missing model.weights");
    if (w.length !== numFeature + 1) {
      fail(
        `gblinear has ${w.length} weights, expected num_feature+1=${numFeature + 1} ` +
          "(multi-output/multiclass linear models are not supported)",
      );
    }
    const coefficients = new Array<number>(F).fill(0);
    for (let i = 0; i < numFeature; i++) {
      const c = Number(w[i]);
      if (!Number.isFinite(c)) fail(`gblinear weight ${i} is ${w[i]}`);
      coefficients[i] = c;
    }
    const bias = Number(w[numFeature]);
    if (!Number.isFinite(bias)) fail(`gblinear bias is ${w[numFeature]}`);
    // XGBoost drops missing entries from the sparse row, so a NaN feature contributes 0 to the dot product.
    nodes.push(
      {
        opType: "Constant",
        name: "xgb_zero",
        inputs: [],
        outputs: ["xgb_zero"],
        attributes: [attrFloat("value_float", 0)],
      },
      { opType: "IsNaN", name: "xgb_isnan", inputs: [inputName], outputs: ["xgb_isnan"] },
      {
        opType: "Where",
        name: "xgb_fillna",
        inputs: ["xgb_isnan", "xgb_zero", inputName],
        outputs: ["xgb_x"],
      },
      {
        opType: "LinearRegressor",
        domain: ML_DOMAIN,
        name: "xgb_linear",
        inputs: ["xgb_x"],
        outputs: [margin],
        attributes: [
          attrFloats("coefficients", coefficients),
          attrFloats("intercepts", [Math.fround(bias) + baseMargin]),
          attrInt("targets", 1),
          attrString("post_transform", "NONE"),
        ],
      },
    );
  } else {
    fail(`unsupported booster "${booster.name}" (supported: gbtree, dart, gblinear)`);
  }

  if (link === "log") {
    nodes.push({ opType: "Exp", name: "xgb_inverse_link", inputs: [margin], outputs: [outputName] });
  }
  const internal = new Set(nodes.flatMap((n) => n.outputs).filter((o) => o !== outputName));
  for (const name of [inputName, outputName]) {
    if (internal.has(name)) fail(`"${name}" clashes with an internal tensor name`);
  }

  const metadata: Record<string, string> = {};
  const reserved = new Set<string>(Object.values(ONNX_METADATA_KEYS));
  for (const [k, v] of Object.entries(opts.metadata ?? {})) {
    if (reserved.has(k)) fail(`metadata key "${k}" is reserved`);
    if (typeof v !== "string") fail(`metadata value for "${k}" must be a string`);
    metadata[k] = v;
  }
  metadata[ONNX_METADATA_KEYS.featureNames] = JSON.stringify(featureNames);
  metadata[ONNX_METADATA_KEYS.objective] = objective;
  metadata[ONNX_METADATA_KEYS.booster] = booster.name;
  metadata[ONNX_METADATA_KEYS.baseScore] = String(baseScore);
  metadata[ONNX_METADATA_KEYS.numTrees] = String(numTrees);
  if (Array.isArray(m.version)) metadata[ONNX_METADATA_KEYS.xgboostVersion] = m.version.join(".");

  return encodeModel({
    irVersion: ONNX_IR_VERSION,
    producerName: ONNX_PRODUCER_NAME,
    producerVersion: ONNX_PRODUCER_VERSION,
    docString: `XGBoost ${booster.name} (${objective}) converted to ONNX`,
    opsetImports: [
      { domain: "", version: ONNX_OPSET },
      { domain: ML_DOMAIN, version: ONNX_ML_OPSET },
    ],
    graph: {
      name: "xgboost",
      nodes,
      inputs: [{ name: inputName, elemType: TensorDataType.FLOAT, shape: ["N", F] }],
      outputs: [{ name: outputName, elemType: TensorDataType.FLOAT, shape: ["N", 1] }],
    },
    metadataProps: metadata,
  });
}
