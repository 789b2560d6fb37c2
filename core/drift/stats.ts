/**
 * Drift statistics between a reference sample and a current sample of one feature: pure functions
 * over arrays of finite numbers (categorical features are numeric codes). Each reproduces SciPy's
 * function of the same name, or Evidently's stattest of the same name where Evidently wraps SciPy,
 * and tests/core/drift.test.ts compares each against SciPy/NumPy run live.
 *
 * Inputs must be non-empty and finite (detect.ts drops NaN and ±Infinity first, as Evidently does);
 * anything else throws a RangeError.
 */

import { chi2Sf, ksTwoSampleOuterSf, ksTwoSampleSquareSf, kstwoSf, ndtr, roundHalfEven } from "./special.js";

export type FeatureKind = "numeric" | "categorical";

function checked(values: ArrayLike<number>, what: string): Float64Array {
  if (values.length === 0) throw new RangeError(`${what} is empty`);
  const out = Float64Array.from(values);
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i]))
      throw new RangeError(`${what} has a non-finite value (${out[i]}) at index ${i}`);
  }
  return out;
}

function sortedCopy(values: ArrayLike<number>, what: string): Float64Array {
  return checked(values, what).sort();
}

function gcd(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

/** Arithmetic mean. */
export function mean(values: ArrayLike<number>): number {
  const x = checked(values, "mean input");
  let s = 0;
  for (const v of x) s += v;
  return s / x.length;
}

/** Population standard deviation (ddof = 0), as `np.std(x)`: sqrt(Σ(x − x̄)² / n). */
export function populationStd(values: ArrayLike<number>): number {
  const x = checked(values, "std input");
  let s = 0;
  for (const v of x) s += v;
  const m = s / x.length;
  let ss = 0;
  for (const v of x) ss += (v - m) * (v - m);
  return Math.sqrt(ss / x.length);
}

/** Distinct values, ascending (−0 and 0 are one value, as in pandas' `nunique`). */
export function distinctValues(values: ArrayLike<number>): number[] {
  const set = new Set<number>();
  for (let i = 0; i < values.length; i++) set.add(values[i] as number);
  return [...set].sort((a, b) => a - b);
}

export interface KsTest {
  /** D = sup_x |F_ref(x) − F_cur(x)| (on the exact path, rounded to a multiple of 1/lcm(n1, n2), as SciPy reports it). */
  statistic: number;
  /** Two-sided p-value, Pr(D ≥ observed) under H0: both samples from one continuous distribution. */
  pValue: number;
  /** "exact" when max(n1, n2) ≤ 10 000 (and the exact count stays in [0, 1]), else "asymp". */
  method: "exact" | "asymp";
}

/**
 * Two-sample Kolmogorov–Smirnov test, two-sided, as `scipy.stats.ks_2samp(a, b)` with its default
 * `method="auto"`:
 *  - D = max over the pooled values of |F_a(x) − F_b(x)| (empirical CDFs, right-continuous; ties
 *    are handled by evaluating both CDFs at every pooled value);
 *  - exact p-value when max(n1, n2) ≤ 10 000: with h = round(D·lcm), the proportion of the
 *    C(n1 + n2, n1) equally likely orderings whose path leaves the band |x/n1 − y/n2| < h/lcm
 *    (Hodges 1958), which cannot go below about 1e-16;
 *  - otherwise, and if the exact count fails, `kstwo.sf(D, round(n1·n2 / (n1 + n2)))`, the
 *    one-sample two-sided distribution at the effective size.
 */
export function ks2samp(a: ArrayLike<number>, b: ArrayLike<number>): KsTest {
  const x = sortedCopy(a, "ks2samp: first sample");
  const y = sortedCopy(b, "ks2samp: second sample");
  const n1 = x.length;
  const n2 = y.length;
  // Walk the pooled sorted values; at each distinct value both ECDFs count everything ≤ it.
  let i = 0;
  let j = 0;
  let maxS = Number.NEGATIVE_INFINITY;
  let minS = Number.POSITIVE_INFINITY;
  while (i < n1 || j < n2) {
    const v =
      j >= n2 || (i < n1 && (x[i] as number) <= (y[j] as number)) ? (x[i] as number) : (y[j] as number);
    while (i < n1 && (x[i] as number) <= v) i++;
    while (j < n2 && (y[j] as number) <= v) j++;
    const diff = i / n1 - j / n2;
    if (diff > maxS) maxS = diff;
    if (diff < minS) minS = diff;
  }
  const minusMin = Math.min(Math.max(-minS, 0), 1);
  let d = Math.max(minusMin, maxS);

  if (Math.max(n1, n2) <= 10_000) {
    const g = gcd(n1, n2);
    const lcm = (n1 / g) * n2;
    const h = roundHalfEven(d * lcm);
    d = h / lcm;
    if (h === 0) return { statistic: d, pValue: 1, method: "exact" };
    const p = n1 === n2 ? ksTwoSampleSquareSf(n1, h) : ksTwoSampleOuterSf(n1, n2, g, h);
    if (p >= 0 && p <= 1) return { statistic: d, pValue: p, method: "exact" };
  }
  const m = Math.max(n1, n2);
  const n = Math.min(n1, n2);
  const en = (m * n) / (m + n);
  const p = kstwoSf(roundHalfEven(en), d);
  return { statistic: d, pValue: Math.min(Math.max(p, 0), 1), method: "asymp" };
}

export interface ChiSquareTest {
  /** Pearson's χ² = Σ (observed − expected)² / expected. */
  statistic: number;
  /** Pr(χ²_df ≥ statistic); NaN when df = 0 (one category), as SciPy. */
  pValue: number;
  /** Number of categories − 1. */
  df: number;
}

/**
 * Pearson's χ² goodness-of-fit test, `scipy.stats.chisquare(f_obs, f_exp)`: statistic
 * Σ (o − e)² / e over the categories, p-value from the χ² survival function with k − 1 degrees of
 * freedom. An expected count of 0 with a positive observed count gives χ² = ∞ and p = 0. Like
 * SciPy, rejects totals that differ by more than a relative 1.5e-8.
 */
export function chiSquareTest(observed: ArrayLike<number>, expected: ArrayLike<number>): ChiSquareTest {
  const o = checked(observed, "chiSquareTest: observed counts");
  const e = checked(expected, "chiSquareTest: expected counts");
  if (o.length !== e.length) {
    throw new RangeError(`chiSquareTest: ${o.length} observed counts but ${e.length} expected counts`);
  }
  let so = 0;
  let se = 0;
  for (let i = 0; i < o.length; i++) {
    so += o[i] as number;
    se += e[i] as number;
  }
  if (Math.abs(so - se) / Math.min(so, se) > Math.sqrt(2 ** -52)) {
    throw new RangeError(`chiSquareTest: observed total ${so} and expected total ${se} differ`);
  }
  let stat = 0;
  for (let i = 0; i < o.length; i++) {
    const diff = (o[i] as number) - (e[i] as number);
    stat += (diff * diff) / (e[i] as number);
  }
  const df = o.length - 1;
  return { statistic: stat, pValue: chi2Sf(stat, df), df };
}

export interface CategoryCounts {
  /** Union of the categories seen on either side, ascending. */
  categories: number[];
  reference: number[];
  current: number[];
}

/** Counts of each category (the union of both sides' values) in the reference and current samples. */
export function categoryCounts(reference: ArrayLike<number>, current: ArrayLike<number>): CategoryCounts {
  const ref = checked(reference, "reference");
  const cur = checked(current, "current");
  const refMap = new Map<number, number>();
  const curMap = new Map<number, number>();
  for (const v of ref) refMap.set(v, (refMap.get(v) ?? 0) + 1);
  for (const v of cur) curMap.set(v, (curMap.get(v) ?? 0) + 1);
  const categories = [...new Set([...refMap.keys(), ...curMap.keys()])].sort((a, b) => a - b);
  return {
    categories,
    reference: categories.map((c) => refMap.get(c) ?? 0),
    current: categories.map((c) => curMap.get(c) ?? 0),
  };
}

/**
 * Evidently's `chisquare` stattest: over the union of categories, observed = current counts and
 * expected = reference counts × (n_current / n_reference), then `scipy.stats.chisquare`. A category
 * absent from the reference but present in the current sample makes χ² = ∞ (p = 0).
 */
export function chiSquare(reference: ArrayLike<number>, current: ArrayLike<number>): ChiSquareTest {
  const counts = categoryCounts(reference, current);
  const kNorm = current.length / reference.length;
  return chiSquareTest(
    counts.current,
    counts.reference.map((c) => c * kNorm),
  );
}

export interface ZTest {
  /** z = (p_ref − p_cur) / sqrt(P(1 − P)(1/n_ref + 1/n_cur)), P the pooled proportion. */
  statistic: number;
  /** 2·(1 − Φ(|z|)), evaluated in that form as Evidently does (so it bottoms out near 1e-16). */
  pValue: number;
}

/**
 * Evidently's `z` stattest (its default for features with at most two distinct values on a small
 * reference): a two-proportion z-test on the indicator "value ≠ smallest category". When both sides
 * hold one and the same single value, p = 1 (and z = 0).
 */
export function zTest(reference: ArrayLike<number>, current: ArrayLike<number>): ZTest {
  const counts = categoryCounts(reference, current);
  if (counts.categories.length === 1) return { statistic: 0, pValue: 1 };
  const n1 = reference.length;
  const n2 = current.length;
  const p1 = (n1 - (counts.reference[0] as number)) / n1;
  const p2 = (n2 - (counts.current[0] as number)) / n2;
  const pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
  const z = (p1 - p2) / Math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2));
  return { statistic: z, pValue: 2 * (1 - ndtr(Math.abs(z))) };
}

/**
 * First Wasserstein (earth mover's) distance between the two empirical distributions, as
 * `scipy.stats.wasserstein_distance(u, v)`: ∫ |F_u(x) − F_v(x)| dx, summed exactly over the gaps
 * between consecutive pooled values.
 */
export function wassersteinDistance(u: ArrayLike<number>, v: ArrayLike<number>): number {
  const us = sortedCopy(u, "wassersteinDistance: first sample");
  const vs = sortedCopy(v, "wassersteinDistance: second sample");
  const all = new Float64Array(us.length + vs.length);
  all.set(us);
  all.set(vs, us.length);
  all.sort();
  let iu = 0;
  let iv = 0;
  let total = 0;
  for (let k = 0; k < all.length - 1; k++) {
    const a = all[k] as number;
    while (iu < us.length && (us[iu] as number) <= a) iu++;
    while (iv < vs.length && (vs[iv] as number) <= a) iv++;
    total += Math.abs(iu / us.length - iv / vs.length) * ((all[k + 1] as number) - a);
  }
  return total;
}

/**
 * Evidently's `wasserstein` stattest: the Wasserstein distance divided by the reference's population
 * standard deviation (`np.std`, ddof 0), floored at 0.001 so a constant reference does not divide
 * by zero. It is in units of reference standard deviations; Evidently calls drift at ≥ 0.1.
 */
export function wassersteinNormed(reference: ArrayLike<number>, current: ArrayLike<number>): number {
  return wassersteinDistance(reference, current) / Math.max(populationStd(reference), 0.001);
}

/**
 * Bin edges as `np.histogram_bin_edges(values, bins)`: `bins` equal-width bins between min and max
 * (widened by ±0.5 when they coincide), or for "sturges" ⌈range / (range / (log₂ n + 1))⌉ bins.
 * Edges are `np.linspace(first, last, nBins + 1)`: first + i·step, the last one exactly `last`.
 */
export function histogramBinEdges(values: ArrayLike<number>, bins: number | "sturges"): number[] {
  const x = checked(values, "histogramBinEdges input");
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of x) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const range = hi - lo;
  let first = lo;
  let last = hi;
  if (first === last) {
    first -= 0.5;
    last += 0.5;
  }
  let nBins: number;
  if (bins === "sturges") {
    const width = range / (Math.log2(x.length) + 1);
    nBins = width ? Math.ceil((last - first) / width) : 1;
  } else {
    if (!Number.isInteger(bins) || bins < 1)
      throw new RangeError(`bins must be a positive integer, got ${bins}`);
    nBins = bins;
  }
  const delta = last - first;
  const step = delta / nBins;
  const edges = new Array<number>(nBins + 1);
  for (let i = 0; i <= nBins; i++) edges[i] = step === 0 ? (i / nBins) * delta + first : i * step + first;
  edges[nBins] = last;
  for (let i = 0; i < nBins; i++) {
    if (!((edges[i] as number) < (edges[i + 1] as number))) {
      throw new RangeError(`too many bins (${nBins}) for the data range [${first}, ${last}]`);
    }
  }
  return edges;
}

/**
 * Counts per bin as `np.histogram(values, edges)`: bin i holds edges[i] ≤ x < edges[i+1], the last
 * bin also holds x = last edge; values outside [first, last] are not counted.
 */
export function histogramCounts(values: ArrayLike<number>, edges: readonly number[]): number[] {
  const nBins = edges.length - 1;
  if (nBins < 1) throw new RangeError("histogramCounts needs at least two edges");
  const counts = new Array<number>(nBins).fill(0);
  const first = edges[0] as number;
  const last = edges[nBins] as number;
  for (let k = 0; k < values.length; k++) {
    const v = values[k] as number;
    if (!(v >= first && v <= last)) continue;
    let bin: number;
    if (v === last) {
      bin = nBins - 1;
    } else {
      // largest i with edges[i] ≤ v
      let lo = 0;
      let hi = nBins;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if ((edges[mid] as number) <= v) lo = mid;
        else hi = mid;
      }
      bin = lo;
    }
    counts[bin] = (counts[bin] as number) + 1;
  }
  return counts;
}

export interface BinnedPercents {
  /** Shared bin edges (numeric binning) — absent when binned by category. */
  edges?: number[];
  /** The categories (categorical binning) — absent when binned by value range. */
  categories?: number[];
  reference: number[];
  current: number[];
}

function fillZeroes(percents: number[]): number[] {
  let minNonZero = Number.POSITIVE_INFINITY;
  for (const p of percents) if (p !== 0 && p < minNonZero) minNonZero = p;
  const fill = minNonZero <= 0.0001 ? minNonZero / 10 ** 6 : 0.0001;
  return percents.map((p) => (p === 0 ? fill : p));
}

/**
 * Evidently's `get_binned_data`: the share of each side in shared bins.
 *  - numeric features whose reference has more than 20 distinct values: bins are
 *    `np.histogram_bin_edges(reference ∪ current, bins="sturges")`;
 *  - otherwise (categorical, or few distinct values): one bin per category of the union.
 * With `fillZeroes` (PSI) an empty bin gets the side's smallest non-zero share / 10⁶ when that share
 * is ≤ 0.0001, otherwise 0.0001, so that logarithms stay finite.
 */
export function binnedPercents(
  reference: ArrayLike<number>,
  current: ArrayLike<number>,
  kind: FeatureKind,
  fillZeroesFlag: boolean,
): BinnedPercents {
  const ref = checked(reference, "reference");
  const cur = checked(current, "current");
  let out: BinnedPercents;
  if (kind === "numeric" && distinctValues(ref).length > 20) {
    const pooled = new Float64Array(ref.length + cur.length);
    pooled.set(ref);
    pooled.set(cur, ref.length);
    const edges = histogramBinEdges(pooled, "sturges");
    out = {
      edges,
      reference: histogramCounts(ref, edges).map((c) => c / ref.length),
      current: histogramCounts(cur, edges).map((c) => c / cur.length),
    };
  } else {
    const counts = categoryCounts(ref, cur);
    out = {
      categories: counts.categories,
      reference: counts.reference.map((c) => c / ref.length),
      current: counts.current.map((c) => c / cur.length),
    };
  }
  if (fillZeroesFlag) {
    out.reference = fillZeroes(out.reference);
    out.current = fillZeroes(out.current);
  }
  return out;
}

function relEntr(x: number, y: number): number {
  if (x > 0 && y > 0) return x * Math.log(x / y);
  if (x === 0 && y >= 0) return 0;
  return Number.POSITIVE_INFINITY;
}

/**
 * Jensen–Shannon distance between two discrete distributions, as
 * `scipy.spatial.distance.jensenshannon(p, q, base)`: both are normalised to sum 1, m = (p + q)/2,
 * JS = sqrt((KL(p‖m) + KL(q‖m)) / 2), natural log unless `base` is given. Bounded by sqrt(ln 2)
 * (1 with base 2). Rounding can make the sum a hair below 0 for identical inputs, where SciPy
 * returns NaN: this returns 0.
 */
export function jensenShannonDistance(p: ArrayLike<number>, q: ArrayLike<number>, base?: number): number {
  const pp = checked(p, "jensenShannonDistance: p");
  const qq = checked(q, "jensenShannonDistance: q");
  if (pp.length !== qq.length) {
    throw new RangeError(`jensenShannonDistance: p has ${pp.length} entries but q has ${qq.length}`);
  }
  let sp = 0;
  let sq = 0;
  for (let i = 0; i < pp.length; i++) {
    sp += pp[i] as number;
    sq += qq[i] as number;
  }
  let left = 0;
  let right = 0;
  for (let i = 0; i < pp.length; i++) {
    const a = (pp[i] as number) / sp;
    const b = (qq[i] as number) / sq;
    const m = (a + b) / 2;
    left += relEntr(a, m);
    right += relEntr(b, m);
  }
  let js = left + right;
  if (base !== undefined) js /= Math.log(base);
  return Math.sqrt(Math.max(js, 0) / 2);
}

/**
 * Evidently's `jensenshannon` stattest: `jensenShannonDistance` of the two sides' binned shares
 * (`binnedPercents` without zero filling), natural log. Evidently calls drift at ≥ 0.1.
 */
export function jensenShannon(
  reference: ArrayLike<number>,
  current: ArrayLike<number>,
  kind: FeatureKind,
): number {
  const binned = binnedPercents(reference, current, kind, false);
  return jensenShannonDistance(binned.reference, binned.current);
}

/**
 * Population stability index as Evidently's `psi` stattest computes it: over the bins of
 * `binnedPercents(…, fillZeroes = true)`, PSI = Σ (ref_i − cur_i) · ln(ref_i / cur_i).
 * Rule of thumb: < 0.1 stable, 0.1–0.25 some shift, > 0.25 a large shift (Evidently's threshold: 0.1).
 */
export function psi(reference: ArrayLike<number>, current: ArrayLike<number>, kind: FeatureKind): number {
  const binned = binnedPercents(reference, current, kind, true);
  let total = 0;
  for (let i = 0; i < binned.reference.length; i++) {
    const r = binned.reference[i] as number;
    const c = binned.current[i] as number;
    total += (r - c) * Math.log(r / c);
  }
  return total;
}
