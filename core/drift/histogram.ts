/**
 * Shared-bin histograms of a feature's reference and current data, for drift reports.
 */

import { type FeatureKind, inferKind } from "./detect.js";
import { categoryCounts, histogramBinEdges, histogramCounts } from "./stats.js";

export type DriftHistogram =
  | {
      kind: "numeric";
      /** nBins + 1 shared edges; bin i is [edges[i], edges[i+1]), the last bin closed. */
      edges: number[];
      /** Share of each side's values in each bin (each array sums to 1). */
      reference: number[];
      current: number[];
    }
  | {
      kind: "categorical";
      /** Union of both sides' categories, ascending. */
      categories: number[];
      reference: number[];
      current: number[];
    };

function finite(values: ArrayLike<number>, side: string): Float64Array {
  const out: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (Number.isFinite(v)) out.push(v);
  }
  if (out.length === 0) throw new Error(`histogram: the ${side} data has no finite values`);
  return Float64Array.from(out);
}

/**
 * Proportions of the reference and current values in shared bins. Numeric: `bins` equal-width bins
 * (or Sturges' rule) over the pooled range, as `np.histogram_bin_edges(concat, bins)`; categorical:
 * one bin per category. NaN and ±Infinity are left out; `kind` defaults to `inferKind(reference)`.
 */
export function histogram(
  reference: ArrayLike<number>,
  current: ArrayLike<number>,
  bins: number | "sturges" = "sturges",
  kind?: FeatureKind,
): DriftHistogram {
  const ref = finite(reference, "reference");
  const cur = finite(current, "current");
  if ((kind ?? inferKind(ref)) === "categorical") {
    const counts = categoryCounts(ref, cur);
    return {
      kind: "categorical",
      categories: counts.categories,
      reference: counts.reference.map((c) => c / ref.length),
      current: counts.current.map((c) => c / cur.length),
    };
  }
  const pooled = new Float64Array(ref.length + cur.length);
  pooled.set(ref);
  pooled.set(cur, ref.length);
  const edges = histogramBinEdges(pooled, bins);
  return {
    kind: "numeric",
    edges,
    reference: histogramCounts(ref, edges).map((c) => c / ref.length),
    current: histogramCounts(cur, edges).map((c) => c / cur.length),
  };
}
