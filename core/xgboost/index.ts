/**
 * Typed wrapper over the libxgboost N-API addon (core/xgboost/src, built by `npm run build:addon`).
 *
 * This is the only module that may import the addon: the native side trusts that arguments were
 * validated here, and re-checks only what it needs to stay memory-safe. Training and
 * `predictAsync` run on the libuv thread pool, so the event loop keeps serving while they work;
 * each occupies one pool thread (4 by default, shared with fs/dns/zlib) for its whole duration.
 *
 * XGBoost parallelises with OpenMP (`nthread`). libgomp busy-waits between parallel regions by
 * default, which on a small or shared machine steals CPU from the event loop and other trainings;
 * so OMP_WAIT_POLICY defaults to PASSIVE below (libgomp reads it once, when the addon is loaded;
 * an explicit setting in the environment wins).
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { types } from "node:util";

/** Row-major, so a JS feature-matrix builder can fill it without transposing; NaN marks a missing value. */
export interface DenseMatrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

/**
 * Metric values after one boosting round, as XGBoost computed them (the last metric of
 * `eval_metric` when several are configured — the one early stopping watches).
 * `valid` is absent when training had no validation set.
 */
export interface RoundEvaluation {
  round: number;
  train: number;
  valid?: number;
}

export interface TrainOptions {
  /**
   * Passed verbatim to XGBoosterSetParam (numbers are stringified). An array value calls
   * XGBoosterSetParam once per element, which is how XGBoost accepts several `eval_metric`s.
   */
  params: Record<string, string | number | readonly (string | number)[]>;
  /** Upper bound on boosting rounds; early stopping or an abort may end training sooner. */
  rounds: number;
  train: DenseMatrix & { labels: Float32Array };
  valid?: DenseMatrix & { labels: Float32Array };
  /**
   * Stop once the last validation metric has not improved for this many rounds. Direction
   * follows XGBoost's Python package: auc, aucpr, map, ndcg, pre (and their `@k` / `-`
   * variants) and interval-regression-accuracy are maximised, every other metric minimised.
   */
  earlyStoppingRounds?: number;
  /**
   * Progress hook, called on the JS thread in round order. Calls are queued by the training
   * thread without waiting, so they may lag a few rounds behind training, but every call is
   * made before the returned promise settles. If it throws, training stops and the promise
   * rejects with the thrown value.
   */
  onRound?: (e: RoundEvaluation) => void;
  /**
   * Checked between boosting rounds (a round in progress completes first). Aborting at any
   * point before the promise settles rejects it with an Error named "AbortError".
   */
  signal?: AbortSignal;
}

export interface TrainResult {
  /**
   * With early stopping this holds only rounds [0, bestIteration], so saving or predicting
   * uses the best model rather than the overfitted tail.
   */
  booster: Booster;
  /** Early stopping's best round; otherwise the last round trained (rounds - 1). */
  bestIteration: number;
  /** Rounds actually trained, including the non-improving tail that triggered early stopping. */
  rounds: number;
  /** One entry per trained round, so callers can plot or audit the whole run. */
  history: RoundEvaluation[];
}

type ImportanceType = "gain" | "weight" | "cover" | "total_gain" | "total_cover";

// ---------------------------------------------------------------------------------------------
// Native addon

interface NativeBooster {
  saveJson(): string;
  predict(data: Float32Array, rows: number, cols: number): Float32Array;
  predictAsync(data: Float32Array, rows: number, cols: number): Promise<Float32Array>;
  predictContribs(data: Float32Array, rows: number, cols: number): Float32Array;
  predictContribsAsync(data: Float32Array, rows: number, cols: number): Promise<Float32Array>;
  featureScore(importanceType: ImportanceType): [string[], number[]];
  setFeatureNames(names: string[]): void;
  numFeatures(): number;
  setParam(name: string, value: string): void;
  dispose(): void;
}

interface NativeShapTables {
  contributions(data: Float32Array, rows: number, cols: number): Float32Array;
  contributionsAsync(data: Float32Array, rows: number, cols: number): Promise<Float32Array>;
  stats(): { numFeatures: number; bias: number; tableBytes: number; leaves: number };
  dispose(): void;
}

interface NativeTrainResult {
  booster: NativeBooster;
  bestIteration: number;
  rounds: number;
  history: RoundEvaluation[];
}

interface NativeAddon {
  version: string;
  NativeBooster: {
    loadJson(json: string): NativeBooster;
    loadJsonAsync(json: string | Uint8Array): Promise<NativeBooster>;
  };
  buildShapTables(
    model: string | Uint8Array,
    maxPathFeatures: number,
    maxTableBytes: number,
  ): Promise<NativeShapTables>;
  train(options: {
    params: [string, string][];
    rounds: number;
    cols: number;
    trainData: Float32Array;
    trainLabels: Float32Array;
    trainRows: number;
    validData?: Float32Array;
    validLabels?: Float32Array;
    validRows?: number;
    earlyStoppingRounds: number;
    onRound?: (e: RoundEvaluation) => void;
  }): { promise: Promise<NativeTrainResult>; abort(): void };
}

const ADDON_PATH = join("core", "xgboost", "build", "Release", "xgboost_addon.node");

/**
 * The addon lives in the source tree even when this file runs compiled from dist/, so look for it
 * under every enclosing package root rather than next to this file. Checking for the addon itself
 * (not just package.json) keeps working if a build step ever copies a package.json into dist/.
 */
function findAddon(): { found?: string; candidates: string[] } {
  const candidates: string[] = [];
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json"))) {
      const candidate = join(dir, ADDON_PATH);
      candidates.push(candidate);
      if (existsSync(candidate)) return { found: candidate, candidates };
    }
    const parent = dirname(dir);
    if (parent === dir) return { candidates };
    dir = parent;
  }
}

function loadAddon(): NativeAddon {
  const hint = "Build it with `npm run build:addon` (needs a C++ toolchain and libxgboost-dev).";
  const { found, candidates } = findAddon();
  if (!found) {
    throw new Error(
      `XGBoost native addon not found (looked for ${candidates.join(", ") || ADDON_PATH}). ${hint}`,
    );
  }
  try {
    return createRequire(import.meta.url)(found) as NativeAddon;
  } catch (err) {
    throw new Error(
      `Failed to load the XGBoost native addon at ${found}: ${(err as Error).message}. ${hint}`,
      {
        cause: err,
      },
    );
  }
}

process.env.OMP_WAIT_POLICY ??= "PASSIVE";
const addon = loadAddon();

/** Keeps the Booster constructor private to this module without a separate factory class. */
const CONSTRUCT = Symbol("Booster.construct");

/** The libxgboost actually linked, recorded in model metadata so a model's provenance is reproducible. */
export const xgboostVersion: string = addon.version;

// ---------------------------------------------------------------------------------------------
// Validation: native code re-checks only for memory safety, so the messages users see come from here.

const MAX_INT32 = 2 ** 31 - 1;
const IMPORTANCE_TYPES: readonly ImportanceType[] = ["gain", "weight", "cover", "total_gain", "total_cover"];

function checkInteger(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const what =
      min === 0 ? "a non-negative integer" : min === 1 ? "a positive integer" : `an integer >= ${min}`;
    throw new RangeError(
      `${name} must be ${what}${max < Number.MAX_SAFE_INTEGER ? ` <= ${max}` : ""}, got ${value}`,
    );
  }
  return value;
}

function checkMatrix(m: unknown, name: string, minRows: number): asserts m is DenseMatrix {
  if (typeof m !== "object" || m === null) throw new TypeError(`${name} must be a DenseMatrix object`);
  const { data, rows, cols } = m as Partial<DenseMatrix>;
  // util.types works across realms (vm contexts), unlike instanceof.
  if (!types.isFloat32Array(data)) throw new TypeError(`${name}.data must be a Float32Array`);
  checkInteger(rows, `${name}.rows`, minRows);
  checkInteger(cols, `${name}.cols`, 1);
  const expected = (rows as number) * (cols as number);
  if (data.length !== expected) {
    throw new RangeError(
      `${name}.data length must equal rows*cols (got ${data.length}, expected ${rows}*${cols} = ${expected})`,
    );
  }
}

function checkLabelled(m: unknown, name: string): asserts m is DenseMatrix & { labels: Float32Array } {
  checkMatrix(m, name, 1);
  const { labels } = m as { labels?: unknown };
  if (!types.isFloat32Array(labels)) throw new TypeError(`${name}.labels must be a Float32Array`);
  if (labels.length !== m.rows) {
    throw new RangeError(`${name}.labels length ${labels.length} does not match rows ${m.rows}`);
  }
}

function paramString(value: unknown, name: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  throw new TypeError(`${name} must be a string or a finite number, got ${String(value)}`);
}

function paramPairs(params: unknown): [string, string][] {
  if (typeof params !== "object" || params === null || Array.isArray(params)) {
    throw new TypeError("params must be an object of XGBoost parameters");
  }
  const pairs: [string, string][] = [];
  for (const [key, value] of Object.entries(params)) {
    if (key === "") throw new TypeError("params keys must be non-empty");
    const values: unknown[] = Array.isArray(value) ? value : [value];
    values.forEach((v, i) => {
      pairs.push([key, paramString(v, Array.isArray(value) ? `params.${key}[${i}]` : `params.${key}`)]);
    });
  }
  return pairs;
}

function abortError(signal: AbortSignal): Error {
  const err = new Error("XGBoost training was aborted", { cause: signal.reason });
  err.name = "AbortError";
  return Object.assign(err, { code: "ABORT_ERR" });
}

function isNativeAbort(err: unknown): boolean {
  return err instanceof Error && (err as { code?: unknown }).code === "ABORT_ERR";
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Trains off the event loop. Inputs are copied before this returns, so the caller's arrays may be
 * reused immediately; the copies and the DMatrices built from them are freed when training ends,
 * whether it succeeds, fails or is aborted.
 */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  if (typeof opts !== "object" || opts === null) throw new TypeError("train options must be an object");
  const params = paramPairs(opts.params);
  const rounds = checkInteger(opts.rounds, "rounds", 1, MAX_INT32);
  checkLabelled(opts.train, "train");
  if (opts.valid !== undefined) {
    checkLabelled(opts.valid, "valid");
    if (opts.valid.cols !== opts.train.cols) {
      throw new RangeError(`valid.cols ${opts.valid.cols} does not match train.cols ${opts.train.cols}`);
    }
  }
  let earlyStoppingRounds = 0;
  if (opts.earlyStoppingRounds !== undefined) {
    earlyStoppingRounds = checkInteger(opts.earlyStoppingRounds, "earlyStoppingRounds", 1, MAX_INT32);
    if (opts.valid === undefined)
      throw new TypeError("earlyStoppingRounds requires valid (a validation set)");
  }
  if (opts.onRound !== undefined && typeof opts.onRound !== "function") {
    throw new TypeError("onRound must be a function");
  }
  const { signal } = opts;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new TypeError("signal must be an AbortSignal");
  if (signal?.aborted) throw abortError(signal);

  const job = addon.train({
    params,
    rounds,
    cols: opts.train.cols,
    trainData: opts.train.data,
    trainLabels: opts.train.labels,
    trainRows: opts.train.rows,
    ...(opts.valid
      ? { validData: opts.valid.data, validLabels: opts.valid.labels, validRows: opts.valid.rows }
      : {}),
    earlyStoppingRounds,
    ...(opts.onRound ? { onRound: opts.onRound } : {}),
  });
  const onAbort = () => job.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  let native: NativeTrainResult;
  try {
    native = await job.promise;
  } catch (err) {
    throw signal?.aborted && isNativeAbort(err) ? abortError(signal) : err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  // An abort that arrived after the last round still wins: the caller asked not to get a model.
  if (signal?.aborted) {
    native.booster.dispose();
    throw abortError(signal);
  }
  return {
    booster: new Booster(CONSTRUCT, native.booster),
    bestIteration: native.bestIteration,
    rounds: native.rounds,
    history: native.history,
  };
}

/**
 * A trained model. The native handle is freed by dispose() or, if that is forgotten, when this
 * object is garbage-collected — but V8 does not see native memory, so long-lived processes that
 * churn through models should dispose explicitly.
 *
 * Predictions may run concurrently (XGBoost's in-place prediction is thread-safe); setParam and
 * setFeatureNames wait for in-flight predictAsync calls on this booster, blocking the JS thread
 * meanwhile.
 */
export class Booster {
  #native: NativeBooster | undefined;

  /** Not for direct use: boosters come from train() or Booster.loadJson(). */
  constructor(token: typeof CONSTRUCT, native: NativeBooster) {
    if (token !== CONSTRUCT) throw new TypeError("Use train() or Booster.loadJson() to obtain a Booster");
    this.#native = native;
  }

  /** Accepts what saveJson() produced (XGBoost's JSON model format), e.g. from the model registry. */
  static loadJson(json: string): Booster {
    if (typeof json !== "string" || json.trim() === "")
      throw new TypeError("json must be a non-empty string");
    // XGBoost sniffs the first byte to tell JSON from its binary formats, so leading whitespace
    // (easily added by file tooling) would make it misread valid JSON as binary.
    return new Booster(CONSTRUCT, addon.NativeBooster.loadJson(json.trimStart()));
  }

  /**
   * loadJson on the libuv thread pool: XGBoost parses the 600-tree model for ~0.4 s, which on the event
   * loop would hold every other request. Takes the bytes as read (a Buffer) or a string.
   */
  static async loadJsonAsync(json: string | Uint8Array): Promise<Booster> {
    if (!(typeof json === "string" || types.isUint8Array(json)) || json.length === 0) {
      throw new TypeError("json must be a non-empty string or Uint8Array");
    }
    return new Booster(CONSTRUCT, await addon.NativeBooster.loadJsonAsync(json));
  }

  /** JSON rather than UBJ/binary so models can be diffed, inspected and converted (ONNX export). */
  saveJson(): string {
    return this.#live().saveJson();
  }

  /** Synchronous for small batches, where a thread-pool hop would cost more than the prediction. */
  predict(m: DenseMatrix): Float32Array {
    const native = this.#live();
    this.#checkInput(native, m);
    if (m.rows === 0) return new Float32Array(0);
    return native.predict(m.data, m.rows, m.cols);
  }

  /**
   * For large batches that would stall the event loop. The input is copied first, so the caller may
   * reuse `m.data` immediately; dispose() while this is pending is safe (the model is freed after).
   */
  async predictAsync(m: DenseMatrix): Promise<Float32Array> {
    const native = this.#live();
    this.#checkInput(native, m);
    if (m.rows === 0) return new Float32Array(0);
    return native.predictAsync(m.data, m.rows, m.cols);
  }

  /**
   * Per-feature contributions to each row's margin, `rows × (cols + 1)` row-major with the bias (the
   * expected margin) last: XGBoost's own TreeSHAP for tree boosters, weight × value for gblinear (a
   * missing value contributes 0, as it does to the prediction). A row sums to the margin, which is the
   * prediction for reg:squarederror and its log for count:poisson and reg:tweedie. Synchronous: a row
   * costs milliseconds for a 600-tree model or a deep forest (bench/explain.ts); TreeShapTables gives the
   * same values in a fraction of that.
   */
  predictContribs(m: DenseMatrix): Float32Array {
    const native = this.#live();
    this.#checkInput(native, m);
    if (m.rows === 0) return new Float32Array(0);
    return native.predictContribs(m.data, m.rows, m.cols);
  }

  /** predictContribs on the thread pool, for batches that would stall the event loop; input copied first. */
  async predictContribsAsync(m: DenseMatrix): Promise<Float32Array> {
    const native = this.#live();
    this.#checkInput(native, m);
    if (m.rows === 0) return new Float32Array(0);
    return native.predictContribsAsync(m.data, m.rows, m.cols);
  }

  /**
   * Keyed by the names given to setFeatureNames() (else "f0", "f1", …). Features never used in a
   * split are absent, as in XGBoost itself.
   */
  featureScore(importanceType: ImportanceType): Record<string, number> {
    const native = this.#live();
    if (!IMPORTANCE_TYPES.includes(importanceType)) {
      throw new RangeError(
        `importanceType must be one of ${IMPORTANCE_TYPES.join(", ")}, got ${String(importanceType)}`,
      );
    }
    const [names, scores] = native.featureScore(importanceType);
    return Object.fromEntries(names.map((name, i) => [name, scores[i] ?? Number.NaN]));
  }

  /** Lets featureScore report domain names; they are also stored in saveJson() output. */
  setFeatureNames(names: string[]): void {
    const native = this.#live();
    if (!Array.isArray(names)) throw new TypeError("names must be an array of strings");
    const seen = new Set<string>();
    names.forEach((name, i) => {
      if (typeof name !== "string" || name === "")
        throw new TypeError(`names[${i}] must be a non-empty string`);
      if (seen.has(name))
        throw new RangeError(`names[${i}] duplicates "${name}"; feature names must be unique`);
      seen.add(name);
    });
    const expected = native.numFeatures();
    if (names.length !== expected) {
      throw new RangeError(`names length ${names.length} does not match numFeatures ${expected}`);
    }
    native.setFeatureNames([...names]);
  }

  /** So callers can check a feature matrix against the model before predicting. */
  numFeatures(): number {
    return this.#live().numFeatures();
  }

  /**
   * For inference-time settings such as nthread. XGBoost validates lazily, so an invalid value
   * surfaces as an error from the next predict rather than from this call.
   */
  setParam(name: string, value: string | number): void {
    const native = this.#live();
    if (typeof name !== "string" || name === "") throw new TypeError("name must be a non-empty string");
    native.setParam(name, paramString(value, "value"));
  }

  /** Frees the native model now instead of whenever GC runs. Safe to call more than once. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  #live(): NativeBooster {
    if (this.#native === undefined) throw new Error("Booster has been disposed and can no longer be used");
    return this.#native;
  }

  #checkInput(native: NativeBooster, m: DenseMatrix): void {
    checkMatrix(m, "matrix", 0);
    const expected = native.numFeatures();
    if (m.cols !== expected)
      throw new RangeError(`matrix.cols ${m.cols} does not match numFeatures ${expected}`);
  }
}

// ---------------------------------------------------------------------------------------------
// TreeSHAP tables

/** Raised when a model is outside what the tables reproduce exactly; the message says why. Callers fall back. */
export class TreeShapDeclined extends Error {
  override readonly name = "TreeShapDeclined";
}

export interface TreeShapLimits {
  /** Distinct features on one root-to-leaf path; 2^this float32s a leaf. Default 12, at most 24. */
  maxPathFeatures?: number;
  /**
   * All tables together. Default 16 MiB: the 600-tree depth-6 gbtree needs ~3.7 MiB (at most 9.4 MiB
   * for 600 full trees); the 80-tree depth-12 forest needs ~27 MiB and stays with XGBoost, since a row
   * reads through all its tables (bench/explain.ts gives the figure).
   */
  maxTableBytes?: number;
}

export const TREESHAP_DEFAULT_LIMITS: Required<TreeShapLimits> = {
  maxPathFeatures: 12,
  maxTableBytes: 16 * 1024 * 1024,
};

/**
 * XGBoost's own TreeSHAP values (`Booster.predictContribs`, the same layout: `rows × (cols + 1)`, bias
 * last), from per-leaf tables precomputed once per model (Fast TreeSHAP v2; the algebra is in
 * src/treeshap.h). A row then costs one pass over the nodes and d + 1 lookups a leaf instead of
 * XGBoost's O(L·D²) a tree: well under a millisecond for the 600-tree gbtree (bench/explain.ts).
 *
 * Built on the libuv thread pool (parsing the JSON model and filling the tables), held in native memory
 * that V8 does not see: dispose() frees it (else garbage collection does, eventually).
 */
export class TreeShapTables {
  #native: NativeShapTables | undefined;
  readonly numFeatures: number;
  /** The expected margin: XGBoost's bias column. */
  readonly bias: number;
  /** Bytes held by the tables (the dominant memory). */
  readonly tableBytes: number;
  /** Leaves across all trees. */
  readonly leaves: number;

  /** Not for direct use: tables come from TreeShapTables.build(). */
  constructor(token: typeof CONSTRUCT, native: NativeShapTables) {
    if (token !== CONSTRUCT) throw new TypeError("Use TreeShapTables.build() to obtain tables");
    this.#native = native;
    const stats = native.stats();
    this.numFeatures = stats.numFeatures;
    this.bias = stats.bias;
    this.tableBytes = stats.tableBytes;
    this.leaves = stats.leaves;
  }

  /**
   * From an XGBoost JSON model (saveJson / the registry's native artifact, as a string or the bytes read),
   * off the event loop. Rejects with TreeShapDeclined for anything it does not reproduce exactly:
   * gblinear, dart (tree weights), multi-output or vector leaves, categorical splits, a zero-cover
   * branch on a path, an objective without an explanation space, or tables beyond `limits`.
   */
  static async build(model: string | Uint8Array, limits: TreeShapLimits = {}): Promise<TreeShapTables> {
    if (!(typeof model === "string" || types.isUint8Array(model))) {
      throw new TypeError("model must be a string or a Uint8Array");
    }
    const maxPathFeatures = limits.maxPathFeatures ?? TREESHAP_DEFAULT_LIMITS.maxPathFeatures;
    const maxTableBytes = limits.maxTableBytes ?? TREESHAP_DEFAULT_LIMITS.maxTableBytes;
    checkInteger(maxPathFeatures, "maxPathFeatures", 1, 24);
    checkInteger(maxTableBytes, "maxTableBytes", 0);
    try {
      return new TreeShapTables(
        CONSTRUCT,
        await addon.buildShapTables(model, maxPathFeatures, maxTableBytes),
      );
    } catch (error) {
      if ((error as { declined?: unknown }).declined === true) {
        throw new TreeShapDeclined((error as Error).message);
      }
      throw error;
    }
  }

  /** On the calling thread: for the few rows of a request (a row of the 600-tree gbtree: ~0.3 ms). */
  contributions(m: DenseMatrix): Float32Array {
    const native = this.#live();
    this.#checkInput(m);
    if (m.rows === 0) return new Float32Array(0);
    return native.contributions(m.data, m.rows, m.cols);
  }

  /** The same on the libuv thread pool, for batches that would stall the event loop; input copied first. */
  async contributionsAsync(m: DenseMatrix): Promise<Float32Array> {
    const native = this.#live();
    this.#checkInput(m);
    if (m.rows === 0) return new Float32Array(0);
    return native.contributionsAsync(m.data, m.rows, m.cols);
  }

  /** Frees the tables now (after any contributionsAsync in flight). Safe to call more than once. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  #live(): NativeShapTables {
    if (this.#native === undefined) {
      throw new Error("TreeSHAP tables have been disposed and can no longer be used");
    }
    return this.#native;
  }

  #checkInput(m: DenseMatrix): void {
    checkMatrix(m, "matrix", 0);
    if (m.cols !== this.numFeatures) {
      throw new RangeError(`matrix.cols ${m.cols} does not match the model's ${this.numFeatures} features`);
    }
  }
}
