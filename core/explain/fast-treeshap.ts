/**
 * Exact path-dependent TreeSHAP for a few rows, from precomputed per-leaf tables (Fast TreeSHAP v2,
 * Yang 2021, arXiv 2109.09847), over the trees of an XGBoost JSON model (gbtree, one target, numeric
 * splits). It computes the values XGBoost's own `predictContribs` computes (Lundberg's TreeSHAP with
 * node covers = `sum_hessian`), in the same layout: `rows × (features + 1)`, bias last.
 *
 * Why tables: XGBoost re-derives every leaf's Shapley weights for every row (O(L·D²) a tree), which
 * costs 10-20 ms a row for 600 trees of depth 6. The weights depend on the row only through which of
 * the leaf's path features the row "satisfies" (follows the path's branch at every split on it), so
 * they are computed once per leaf and pattern, and a row costs O(L·D) lookups a tree.
 *
 * The algebra, per leaf with value v and d distinct path features, feature j with zero fraction z_j
 * (product of cover(child on path) / cover(node) over the path's splits on j) and one fraction
 * o_j ∈ {0, 1} (the row follows the path at all of them):
 *   φ_i += v (o_i − z_i) Σ_{S ⊆ P∖{i}} w(|S|, d) Π_{j∈S} o_j Π_{j∈P∖{i}∖S} z_j,  w(s, d) = s!(d−s−1)!/d!
 * Only S ⊆ M (the satisfied set) survive. With H(A) = Σ_{S⊆A} w(|S|, d) Π_{j∈P∖S} z_j (one number per
 * subset A of the path's features, stored as v·H):
 *   o_i = 1: φ_i += v·H(M∖{i}) · (1 − z_i) / z_i        o_i = 0: φ_i −= v·H(M)
 * (XGBoost's extra root element with z = o = 1 gives the same weights: w(s+1, d+1) + w(s, d+1) = w(s, d).)
 *
 * Memory: Σ over leaves of 2^d float32s. A leaf of d distinct features costs 2^d × 4 bytes, so tables are
 * built only when every leaf has at most `maxPathFeatures` distinct features and the total stays within
 * `maxTableBytes`; otherwise the builder refuses (FastTreeShapDeclined) and the caller keeps XGBoost.
 */

/** Raised when a model is outside what the tables handle; the message says why. Callers fall back. */
export class FastTreeShapDeclined extends Error {
  override readonly name = "FastTreeShapDeclined";
}

export interface FastTreeShapLimits {
  /** Distinct features on one root-to-leaf path; 2^this float32s a leaf. Default 12. */
  maxPathFeatures?: number;
  /**
   * All tables together. Default 16 MiB: the 600-tree depth-6 gbtree needs ~3.7 MiB (at most 9.4 MiB
   * for 600 full trees); the 80-tree depth-12 forest needs ~27 MiB and stays with XGBoost, since a row
   * streams through all the tables and that forest would cost more than XGBoost on the event loop.
   */
  maxTableBytes?: number;
}

export const FAST_TREESHAP_DEFAULT_LIMITS: Required<FastTreeShapLimits> = {
  maxPathFeatures: 12,
  maxTableBytes: 16 * 1024 * 1024,
};

interface XgbTree {
  left_children: number[];
  right_children: number[];
  split_indices: number[];
  split_conditions: number[];
  default_left: (number | boolean)[];
  sum_hessian: number[];
  split_type?: number[];
  tree_param?: { size_leaf_vector?: string; num_deleted?: string };
}

interface XgbModel {
  learner?: {
    learner_model_param?: {
      base_score?: string;
      num_feature?: string;
      num_class?: string;
      num_target?: string;
    };
    objective?: { name?: string };
    gradient_booster?: {
      name?: string;
      model?: { trees?: XgbTree[]; tree_info?: number[]; gbtree_model_param?: { size_leaf_vector?: string } };
    };
  };
}

function decline(msg: string): never {
  throw new FastTreeShapDeclined(`fast TreeSHAP: ${msg}`);
}

/** XGBoost's base margin for the objectives explanations are defined for (ProbToMargin). */
function baseMargin(objective: string, baseScore: number): number {
  if (objective === "reg:squarederror" || objective === "reg:linear") return baseScore;
  if (objective === "count:poisson" || objective === "reg:tweedie") return Math.log(baseScore);
  decline(`objective ${JSON.stringify(objective)} is not supported`);
}

function parseBaseScore(text: string | undefined): number {
  // 1.7 writes "1.8946309E2"; 2.x writes "[1.8946309E2]".
  const value = Number((text ?? "").replace(/^\[|\]$/g, ""));
  if (!Number.isFinite(value)) decline(`base_score ${JSON.stringify(text)} is not a number`);
  return value;
}

/** Shapley weights w(s, d) = s!(d−s−1)!/d! for s < d ≤ maxD, at [d * (maxD + 1) + s]. */
function shapleyWeights(maxD: number): Float64Array {
  const w = new Float64Array((maxD + 1) * (maxD + 1));
  const fact = [1];
  for (let i = 1; i <= maxD; i++) fact.push((fact[i - 1] as number) * i);
  for (let d = 1; d <= maxD; d++) {
    for (let s = 0; s < d; s++) {
      w[d * (maxD + 1) + s] = ((fact[s] as number) * (fact[d - s - 1] as number)) / (fact[d] as number);
    }
  }
  return w;
}

function popcount(x: number): number {
  let n = 0;
  for (let v = x; v !== 0; v &= v - 1) n++;
  return n;
}

export class FastTreeShap {
  private constructor(
    readonly numFeatures: number,
    /** base margin + Σ trees' cover-weighted mean leaf value: XGBoost's bias column. */
    readonly bias: number,
    /**
     * Every node of every tree in preorder (a split's left child follows it). For a split: its feature,
     * float32 threshold, default direction, right child, and the slot (bit) of its feature among the
     * distinct features of the path so far. For a leaf (`nodeLeaf` ≥ 0): its index.
     */
    private readonly nodeFeature: Int32Array,
    private readonly nodeThreshold: Float32Array,
    private readonly nodeDefaultLeft: Uint8Array,
    private readonly nodeRight: Int32Array,
    private readonly nodeSlot: Uint8Array,
    private readonly nodeLeaf: Int32Array,
    private readonly treeRoots: Int32Array,
    /** Per leaf: where its features and table start, and how many distinct path features it has. */
    private readonly leafSlotStart: Int32Array,
    private readonly leafSlots: Uint8Array,
    private readonly leafTable: Int32Array,
    /** Per leaf feature slot: the model feature and (1 − z) / z. */
    private readonly slotFeature: Int32Array,
    private readonly slotRatio: Float64Array,
    /** v·H(A) for every leaf and subset A of its path features. */
    private readonly tables: Float32Array,
  ) {}

  /** Bytes held by the precomputed tables (the dominant memory). */
  get tableBytes(): number {
    return this.tables.byteLength;
  }

  /** Leaves across all trees. */
  get leaves(): number {
    return this.leafSlots.length;
  }

  /**
   * Builds the tables from an XGBoost JSON model (Booster.saveJson / the registry's native artifact).
   * Throws FastTreeShapDeclined for anything it does not reproduce exactly: gblinear, dart (tree
   * weights), multi-output or vector leaves, categorical splits, a zero-cover child on a path, an
   * objective without an explanation space, or tables beyond `limits`.
   */
  static fromXgboostJson(json: string | object, limits: FastTreeShapLimits = {}): FastTreeShap {
    const maxPathFeatures = limits.maxPathFeatures ?? FAST_TREESHAP_DEFAULT_LIMITS.maxPathFeatures;
    const maxTableBytes = limits.maxTableBytes ?? FAST_TREESHAP_DEFAULT_LIMITS.maxTableBytes;
    if (!Number.isInteger(maxPathFeatures) || maxPathFeatures < 1 || maxPathFeatures > 24) {
      throw new RangeError(`maxPathFeatures must be an integer in [1, 24], got ${maxPathFeatures}`);
    }
    const model = (typeof json === "string" ? JSON.parse(json) : json) as XgbModel;
    const learner = model.learner;
    const booster = learner?.gradient_booster;
    if (booster?.name !== "gbtree") decline(`booster ${JSON.stringify(booster?.name)} is not gbtree`);
    const param = learner?.learner_model_param ?? {};
    if (Number(param.num_class ?? 0) > 1 || Number(param.num_target ?? 1) > 1) decline("multi-output model");
    const numFeatures = Number(param.num_feature);
    if (!Number.isInteger(numFeatures) || numFeatures < 1) decline("num_feature missing");
    const base = baseMargin(learner?.objective?.name ?? "", parseBaseScore(param.base_score));
    const trees = booster.model?.trees;
    if (!Array.isArray(trees)) decline("no trees");
    if ((booster.model?.tree_info ?? []).some((g) => g !== 0)) decline("trees of several output groups");

    // First pass: the nodes in preorder and every leaf's path, checked against the limits before the
    // tables are allocated.
    const nodeFeature: number[] = [];
    const nodeThreshold: number[] = [];
    const nodeDefaultLeft: number[] = [];
    const nodeRight: number[] = [];
    const nodeSlot: number[] = [];
    const nodeLeaf: number[] = [];
    const treeRoots: number[] = [];
    interface Leaf {
      value: number;
      features: number[];
      zero: number[];
    }
    const leaves: Leaf[] = [];
    let tableEntries = 0;
    let bias = base;
    for (const [t, tree] of trees.entries()) {
      if (Number(tree.tree_param?.size_leaf_vector ?? 0) > 1) decline(`tree ${t} has vector leaves`);
      if (Number(tree.tree_param?.num_deleted ?? 0) !== 0) decline(`tree ${t} has deleted nodes`);
      if ((tree.split_type ?? []).some((s) => s !== 0)) decline(`tree ${t} has categorical splits`);
      const cover = tree.sum_hessian;
      // Cover-weighted mean leaf value of a subtree, as XGBoost's FillNodeMeanValues computes it.
      const meanOf = (node: number, depth: number): number => {
        if (depth > 64) decline(`tree ${t} is deeper than 64 (or has a cycle)`);
        const left = tree.left_children[node] as number;
        if (left === -1) return tree.split_conditions[node] as number;
        const right = tree.right_children[node] as number;
        return (
          (meanOf(left, depth + 1) * (cover[left] as number) +
            meanOf(right, depth + 1) * (cover[right] as number)) /
          (cover[node] as number)
        );
      };
      bias += meanOf(0, 0);
      // The path so far: distinct features in order of first split (their slots) and zero fractions.
      const features: number[] = [];
      const zero: number[] = [];
      treeRoots.push(nodeFeature.length);
      const walk = (node: number): void => {
        const id = nodeFeature.length;
        const left = tree.left_children[node] as number;
        if (left === -1) {
          if (features.length > maxPathFeatures) {
            decline(
              `a leaf of tree ${t} has ${features.length} distinct path features (limit ${maxPathFeatures})`,
            );
          }
          if (zero.some((z) => !(z > 0))) decline(`tree ${t} has a zero-cover branch on a path`);
          tableEntries += 2 ** features.length;
          if (tableEntries * 4 > maxTableBytes) {
            decline(`tables would exceed ${(maxTableBytes / 2 ** 20).toFixed(0)} MiB`);
          }
          nodeFeature.push(-1);
          nodeThreshold.push(0);
          nodeDefaultLeft.push(0);
          nodeRight.push(-1);
          nodeSlot.push(0);
          nodeLeaf.push(leaves.length);
          leaves.push({
            value: tree.split_conditions[node] as number,
            features: [...features],
            zero: [...zero],
          });
          return;
        }
        const right = tree.right_children[node] as number;
        const feature = tree.split_indices[node] as number;
        if (!Number.isInteger(feature) || feature < 0 || feature >= numFeatures) {
          decline(`tree ${t} splits on feature ${feature}`);
        }
        let slot = features.indexOf(feature);
        const added = slot === -1;
        if (added) {
          slot = features.push(feature) - 1;
          zero.push(1);
        }
        if (slot > 30) decline(`tree ${t} has more than 31 distinct features on a path`);
        nodeFeature.push(feature);
        nodeThreshold.push(tree.split_conditions[node] as number);
        nodeDefaultLeft.push(tree.default_left[node] ? 1 : 0);
        nodeRight.push(-1);
        nodeSlot.push(slot);
        nodeLeaf.push(-1);
        const w = cover[node] as number;
        const before = zero[slot] as number;
        zero[slot] = before * ((cover[left] as number) / w);
        walk(left);
        nodeRight[id] = nodeFeature.length;
        zero[slot] = before * ((cover[right] as number) / w);
        walk(right);
        zero[slot] = before;
        if (added) {
          features.pop();
          zero.pop();
        }
      };
      walk(0);
    }

    // Second pass: the tables. For each leaf, g(S) = w(|S|, d) Π_{j∉S} z_j for S ≠ P, then the subset
    // sum H(A) = Σ_{S⊆A} g(S), scaled by the leaf value.
    const maxD = leaves.reduce((m, l) => Math.max(m, l.features.length), 0);
    const weights = shapleyWeights(maxD);
    const tables = new Float32Array(tableEntries);
    const L = leaves.length;
    const leafSlotStart = new Int32Array(L);
    const leafSlots = new Uint8Array(L);
    const leafTable = new Int32Array(L);
    const slots = leaves.reduce((s, l) => s + l.features.length, 0);
    const slotFeature = new Int32Array(slots);
    const slotRatio = new Float64Array(slots);
    let s = 0;
    let off = 0;
    for (const [i, leaf] of leaves.entries()) {
      const d = leaf.features.length;
      leafSlotStart[i] = s;
      leafSlots[i] = d;
      for (let j = 0; j < d; j++) {
        const z = leaf.zero[j] as number;
        slotFeature[s + j] = leaf.features[j] as number;
        slotRatio[s + j] = (1 - z) / z;
      }
      s += d;
      leafTable[i] = off;
      const size = 2 ** d;
      const full = size - 1;
      for (let set = 0; set < full; set++) {
        let g = weights[d * (maxD + 1) + popcount(set)] as number;
        for (let j = 0; j < d; j++) if ((set & (1 << j)) === 0) g *= leaf.zero[j] as number;
        tables[off + set] = g;
      }
      // The full set is never looked up (some feature is always left out); 0 keeps the sums clean.
      tables[off + full] = 0;
      for (let j = 0; j < d; j++) {
        const bit = 1 << j;
        for (let set = 0; set < size; set++) {
          if ((set & bit) !== 0) {
            tables[off + set] = (tables[off + set] as number) + (tables[off + (set ^ bit)] as number);
          }
        }
      }
      for (let set = 0; set < size; set++) tables[off + set] = (tables[off + set] as number) * leaf.value;
      off += size;
    }
    return new FastTreeShap(
      numFeatures,
      bias,
      Int32Array.from(nodeFeature),
      Float32Array.from(nodeThreshold),
      Uint8Array.from(nodeDefaultLeft),
      Int32Array.from(nodeRight),
      Uint8Array.from(nodeSlot),
      Int32Array.from(nodeLeaf),
      Int32Array.from(treeRoots),
      leafSlotStart,
      leafSlots,
      leafTable,
      slotFeature,
      slotRatio,
      tables,
    );
  }

  /**
   * Contributions of `rows` rows of `cols` features (row-major, NaN = missing: the split's default
   * direction, as XGBoost's DMatrix treats NaN), as `Booster.predictContribs` lays them out:
   * `rows × (cols + 1)` float32, the bias last.
   */
  contributions(data: Float32Array, rows: number, cols: number): Float32Array {
    if (cols !== this.numFeatures) {
      throw new RangeError(`cols: the model has ${this.numFeatures} features, got ${cols}`);
    }
    if (!Number.isInteger(rows) || rows < 0 || data.length !== rows * cols) {
      throw new RangeError(`data: expected rows × cols = ${rows} × ${cols} values, got ${data.length}`);
    }
    const width = cols + 1;
    const out = new Float32Array(rows * width);
    const phi = new Float64Array(width);
    const { nodeFeature, nodeThreshold, nodeDefaultLeft, nodeRight, nodeSlot, nodeLeaf, treeRoots } = this;
    const { leafSlotStart, leafSlots, leafTable, slotFeature, slotRatio, tables } = this;
    const n = nodeFeature.length;
    // Per node, the bits of the path features the row satisfies so far (parents precede children).
    const satisfied = new Int32Array(n);
    for (let r = 0; r < rows; r++) {
      const row = r * cols;
      for (let t = 0; t < treeRoots.length; t++) satisfied[treeRoots[t] as number] = -1;
      phi.fill(0);
      for (let k = 0; k < n; k++) {
        const sat = satisfied[k] as number;
        const leaf = nodeLeaf[k] as number;
        if (leaf < 0) {
          const x = data[row + (nodeFeature[k] as number)] as number;
          // Float32 against float32, like XGBoost's `fvalue < split_cond`; NaN takes the default branch.
          const left = Number.isNaN(x) ? nodeDefaultLeft[k] === 1 : x < (nodeThreshold[k] as number);
          const off = sat & ~(1 << (nodeSlot[k] as number));
          satisfied[k + 1] = left ? sat : off;
          satisfied[nodeRight[k] as number] = left ? off : sat;
          continue;
        }
        const d = leafSlots[leaf] as number;
        const m = sat & ((1 << d) - 1);
        const t = leafTable[leaf] as number;
        const here = tables[t + m] as number;
        const ss = leafSlotStart[leaf] as number;
        for (let j = 0; j < d; j++) {
          const f = slotFeature[ss + j] as number;
          const bit = 1 << j;
          if ((m & bit) !== 0) {
            phi[f] = (phi[f] as number) + (tables[t + (m ^ bit)] as number) * (slotRatio[ss + j] as number);
          } else {
            phi[f] = (phi[f] as number) - here;
          }
        }
      }
      const o = r * width;
      for (let f = 0; f < cols; f++) out[o + f] = phi[f] as number;
      out[o + cols] = this.bias;
    }
    return out;
  }
}
