/**
 * Performance estimation without labels by direct loss estimation (NannyML's DLE for regression):
 * a second model learns the production model's absolute error from its inputs and its prediction,
 * on labelled rows the production model was not fitted on. Applied to a live window's inputs, it
 * estimates the window's error before the actual counts arrive.
 *
 * The loss model is a small gradient-boosted ensemble of depth-limited regression trees on binned
 * inputs, written here so that the monitor needs no native library. An absolute-error model
 * estimates MAE directly; RMSE needs E[e²] = E[|e|]² + Var(|e|), which a model of E[|e|] misses, so
 * the ratio κ = mean(e²) / mean(â²) is measured on a held-out half of the fitting rows and the
 * estimate is sqrt(κ · mean(â²)).
 */

export interface LossTree {
  /** Per node: the input column, or -1 for a leaf. */
  feature: number[];
  threshold: number[];
  left: number[];
  right: number[];
  value: number[];
}

export interface PerformanceEstimator {
  kind: "direct-loss-estimation";
  version: 1;
  /** Input columns, in order: the model's features, then its prediction. */
  inputs: string[];
  base: number;
  learningRate: number;
  trees: LossTree[];
  /** mean(e²) / mean(â²) on held-out rows: turns estimated absolute errors into an RMSE. */
  kappa: number;
  /** What the loss model was fitted on, e.g. the test window of the production model. */
  fittedOn: {
    rows: number;
    rmse: number;
    mae: number;
    description: string;
    /**
     * The estimator's own estimate over the rows it was fitted on. Live estimates are compared with
     * this, not with the realised RMSE there: whatever bias the loss model has cancels in the ratio.
     * Absent from estimators stored before it existed.
     */
    estimatedRmse?: number;
  };
}

export interface LossModelOptions {
  rounds: number;
  depth: number;
  learningRate: number;
  minLeafRows: number;
  bins: number;
}

export const DEFAULT_LOSS_MODEL_OPTIONS: Readonly<LossModelOptions> = Object.freeze({
  rounds: 80,
  depth: 3,
  learningRate: 0.1,
  minLeafRows: 20,
  bins: 16,
});

/** Inputs of the loss model: one row-major matrix of the model's features plus the prediction column. */
export interface LossInputs {
  names: readonly string[];
  /** Row-major [rows × names.length - 1]: the model's features (NaN allowed). */
  features: ArrayLike<number>;
  predictions: ArrayLike<number>;
}

function checkInputs(x: LossInputs, where: string): { rows: number; cols: number } {
  const rows = x.predictions.length;
  const featureCols = x.names.length;
  if (featureCols === 0) throw new Error(`${where}: names is empty`);
  if (x.features.length !== rows * featureCols) {
    throw new Error(
      `${where}: features has ${x.features.length} values, expected ${rows} rows × ${featureCols} names`,
    );
  }
  for (let i = 0; i < rows; i++) {
    if (!Number.isFinite(x.predictions[i] as number)) {
      throw new Error(`${where}: predictions[${i}] is not a finite number`);
    }
  }
  return { rows, cols: featureCols + 1 };
}

const at = (x: LossInputs, featureCols: number, r: number, c: number) =>
  c === featureCols ? (x.predictions[r] as number) : (x.features[r * featureCols + c] as number);

function quantileThresholds(values: number[], bins: number): number[] {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  const out: number[] = [];
  for (let b = 1; b < bins; b++) {
    const v = finite[Math.floor((b * finite.length) / bins)];
    if (v !== undefined && v !== out.at(-1) && v !== finite.at(-1)) out.push(v);
  }
  return out;
}

function fitTrees(
  x: LossInputs,
  rowsIdx: number[],
  target: Float64Array,
  o: LossModelOptions,
): { base: number; trees: LossTree[] } {
  const featureCols = x.names.length;
  const cols = featureCols + 1;
  const thresholds = Array.from({ length: cols }, (_, c) =>
    quantileThresholds(
      rowsIdx.map((r) => at(x, featureCols, r, c)),
      o.bins,
    ),
  );
  const base = rowsIdx.reduce((s, r) => s + (target[r] as number), 0) / Math.max(1, rowsIdx.length);
  const fitted = new Float64Array(target.length).fill(base);
  const trees: LossTree[] = [];
  for (let round = 0; round < o.rounds; round++) {
    const tree: LossTree = { feature: [], threshold: [], left: [], right: [], value: [] };
    const grow = (members: number[], depth: number): number => {
      const id = tree.feature.length;
      let sum = 0;
      for (const r of members) sum += (target[r] as number) - (fitted[r] as number);
      tree.feature.push(-1);
      tree.threshold.push(0);
      tree.left.push(-1);
      tree.right.push(-1);
      tree.value.push(members.length > 0 ? (o.learningRate * sum) / members.length : 0);
      if (depth >= o.depth || members.length < 2 * o.minLeafRows) return id;
      let best = { gain: 1e-9, c: -1, t: 0 };
      const total = members.length;
      for (let c = 0; c < cols; c++) {
        for (const t of thresholds[c] as number[]) {
          let nl = 0;
          let sl = 0;
          for (const r of members) {
            if (at(x, featureCols, r, c) <= t) {
              nl++;
              sl += (target[r] as number) - (fitted[r] as number);
            }
          }
          const nr = total - nl;
          if (nl < o.minLeafRows || nr < o.minLeafRows) continue;
          const sr = sum - sl;
          const gain = (sl * sl) / nl + (sr * sr) / nr - (sum * sum) / total;
          if (gain > best.gain) best = { gain, c, t };
        }
      }
      if (best.c < 0) return id;
      const l = members.filter((r) => at(x, featureCols, r, best.c) <= best.t);
      const rr = members.filter((r) => !(at(x, featureCols, r, best.c) <= best.t));
      tree.feature[id] = best.c;
      tree.threshold[id] = best.t;
      tree.left[id] = grow(l, depth + 1);
      tree.right[id] = grow(rr, depth + 1);
      return id;
    };
    grow(rowsIdx, 0);
    for (const r of rowsIdx) fitted[r] = (fitted[r] as number) + leafValue(tree, x, featureCols, r);
    trees.push(tree);
  }
  return { base, trees };
}

function leafValue(tree: LossTree, x: LossInputs, featureCols: number, r: number): number {
  let node = 0;
  while ((tree.feature[node] as number) >= 0) {
    const v = at(x, featureCols, r, tree.feature[node] as number);
    // NaN (an unknown date feature) goes right, as it fails every "≤".
    node = v <= (tree.threshold[node] as number) ? (tree.left[node] as number) : (tree.right[node] as number);
  }
  return tree.value[node] as number;
}

function predictWith(base: number, trees: readonly LossTree[], x: LossInputs, rows: number[]): Float64Array {
  const featureCols = x.names.length;
  const out = new Float64Array(rows.length);
  rows.forEach((r, k) => {
    let v = base;
    for (const t of trees) v += leafValue(t, x, featureCols, r);
    out[k] = Math.max(0, v);
  });
  return out;
}

/**
 * Fits the loss model on rows with known actual counts that the production model was not fitted on
 * (its predictions there are honest errors). `description` says which rows, for the model card.
 */
export function fitPerformanceEstimator(
  x: LossInputs,
  actuals: ArrayLike<number>,
  description: string,
  options: Partial<LossModelOptions> = {},
): PerformanceEstimator {
  const { rows } = checkInputs(x, "fitPerformanceEstimator");
  if (actuals.length !== rows) {
    throw new Error(`fitPerformanceEstimator: actuals has ${actuals.length} values, expected ${rows}`);
  }
  const o: LossModelOptions = { ...DEFAULT_LOSS_MODEL_OPTIONS, ...options };
  if (rows < 4 * o.minLeafRows) {
    throw new Error(
      `fitPerformanceEstimator: ${rows} labelled rows; the loss model needs at least ${4 * o.minLeafRows}`,
    );
  }
  const absError = new Float64Array(rows);
  let sq = 0;
  for (let i = 0; i < rows; i++) {
    const a = actuals[i] as number;
    if (!Number.isFinite(a)) throw new Error(`fitPerformanceEstimator: actuals[${i}] is not a finite number`);
    absError[i] = Math.abs(a - (x.predictions[i] as number));
    sq += (absError[i] as number) ** 2;
  }
  const all = Array.from({ length: rows }, (_, i) => i);
  // κ from alternating blocks of a day (24 rows), so that neither half sees the other's hours.
  const half = (k: 0 | 1) => all.filter((i) => Math.floor(i / 24) % 2 === k);
  let heldSq = 0;
  let heldEst = 0;
  for (const k of [0, 1] as const) {
    const fitOn = half(k);
    const judgeOn = half(k === 0 ? 1 : 0);
    const m = fitTrees(x, fitOn, absError, o);
    const est = predictWith(m.base, m.trees, x, judgeOn);
    judgeOn.forEach((r, j) => {
      heldSq += (absError[r] as number) ** 2;
      heldEst += (est[j] as number) ** 2;
    });
  }
  const { base, trees } = fitTrees(x, all, absError, o);
  const kappa = heldEst > 0 ? heldSq / heldEst : 1;
  const own = predictWith(base, trees, x, all);
  let ownSq = 0;
  for (const v of own) ownSq += v * v;
  return {
    kind: "direct-loss-estimation",
    version: 1,
    inputs: [...x.names, "prediction"],
    base,
    learningRate: o.learningRate,
    trees,
    kappa,
    fittedOn: {
      rows,
      estimatedRmse: Math.sqrt((kappa * ownSq) / rows),
      rmse: Math.sqrt(sq / rows),
      mae: absError.reduce((s, v) => s + v, 0) / rows,
      description,
    },
  };
}

/** Estimated absolute error of every row. */
export function estimateAbsoluteErrors(estimator: PerformanceEstimator, x: LossInputs): Float64Array {
  const { rows } = checkInputs(x, "estimateAbsoluteErrors");
  const expected = estimator.inputs.slice(0, -1);
  if (expected.length !== x.names.length || expected.some((n, i) => n !== x.names[i])) {
    throw new Error(
      `estimateAbsoluteErrors: inputs ${x.names.join(", ")} differ from the estimator's ${expected.join(", ")}`,
    );
  }
  return predictWith(
    estimator.base,
    estimator.trees,
    x,
    Array.from({ length: rows }, (_, i) => i),
  );
}

export interface PerformanceEstimate {
  rows: number;
  rmse: number;
  mae: number;
}

/** Estimated RMSE and MAE of a window of predictions whose actual counts are not known yet. */
export function estimatePerformance(estimator: PerformanceEstimator, x: LossInputs): PerformanceEstimate {
  const abs = estimateAbsoluteErrors(estimator, x);
  if (abs.length === 0) throw new Error("estimatePerformance: the window has no rows");
  let s = 0;
  let s2 = 0;
  for (const v of abs) {
    s += v;
    s2 += v * v;
  }
  return { rows: abs.length, rmse: Math.sqrt((estimator.kappa * s2) / abs.length), mae: s / abs.length };
}
