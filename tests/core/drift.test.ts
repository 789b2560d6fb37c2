/**
 * core/drift against SciPy/NumPy computed live (tests/helpers/scipy.ts, `.venv` from
 * `bash scripts/python-venv.sh`): no expected number here is typed in by hand. Fixtures are drawn
 * from a seeded generator, so every run compares the same data.
 *
 * DRIFT_REPORT=1 prints the largest relative difference seen per statistic.
 */

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  binnedPercents,
  CATEGORICAL_MAX_DISTINCT,
  chi2Sf,
  chiSquare,
  chiSquareTest,
  DEFAULT_DRIFT_THRESHOLDS,
  datasetDrift,
  defaultTest,
  erfc,
  featureDrift,
  gammainc,
  gammaincc,
  histogram,
  histogramBinEdges,
  histogramCounts,
  inferKind,
  jensenShannon,
  jensenShannonDistance,
  ks2samp,
  kstwoSf,
  lgamma,
  ndtr,
  populationStd,
  psi,
  smirnovSf,
  wassersteinDistance,
  wassersteinNormed,
  zTest,
} from "../../core/drift/index.js";
import { seededRandom } from "../../core/random/index.js";
import { type ScipyRequest, scipy } from "../helpers/scipy.js";

// ---------------------------------------------------------------- seeded fixtures

function normal(seed: number, n: number, mean = 0, sd = 1): number[] {
  const u = seededRandom(seed);
  const out: number[] = [];
  while (out.length < n) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const t = 2 * Math.PI * u();
    out.push(mean + sd * r * Math.cos(t));
    if (out.length < n) out.push(mean + sd * r * Math.sin(t));
  }
  return out;
}

/** Integers: the number of successes in `trials` Bernoulli(p) draws (many ties). */
function binomial(seed: number, n: number, trials: number, p: number): number[] {
  const u = seededRandom(seed);
  return Array.from({ length: n }, () => {
    let k = 0;
    for (let i = 0; i < trials; i++) if (u() < p) k++;
    return k;
  });
}

/** Category codes drawn with the given probabilities (codes = `codes[i]`). */
function categorical(seed: number, n: number, probs: number[], codes?: number[]): number[] {
  const u = seededRandom(seed);
  return Array.from({ length: n }, () => {
    let r = u();
    for (let i = 0; i < probs.length; i++) {
      r -= probs[i] as number;
      if (r < 0) return codes?.[i] ?? i;
    }
    return codes?.[probs.length - 1] ?? probs.length - 1;
  });
}

const rounded = (xs: number[], digits: number) => xs.map((x) => Number(x.toFixed(digits)));

// ---------------------------------------------------------------- comparison bookkeeping

const worst = new Map<string, { rel: number; abs: number }>();

/** |actual − expected| ≤ abs + rel·|expected| (NaN only matches NaN, ±∞ only itself). */
function close(statistic: string, actual: number, expected: number, rel: number, abs = 0, what = ""): void {
  const seen = worst.get(statistic) ?? { rel: 0, abs: 0 };
  if (Number.isNaN(expected) || !Number.isFinite(expected)) {
    expect(actual, `${statistic} ${what}`).toBe(expected);
    worst.set(statistic, seen);
    return;
  }
  const diff = Math.abs(actual - expected);
  const relDiff = expected === 0 ? (diff === 0 ? 0 : Number.POSITIVE_INFINITY) : diff / Math.abs(expected);
  seen.rel = Math.max(seen.rel, diff <= abs && relDiff > 1 ? 0 : relDiff);
  seen.abs = Math.max(seen.abs, diff);
  worst.set(statistic, seen);
  if (!(diff <= abs + rel * Math.abs(expected))) {
    expect.fail(
      `${statistic} ${what}: got ${actual}, SciPy ${expected} (difference ${diff}, relative ${relDiff})`,
    );
  }
}

afterAll(() => {
  if (!process.env.DRIFT_REPORT) return;
  const rows = [...worst].map(
    ([k, v]) => `${k.padEnd(28)} max rel ${v.rel.toExponential(2)}  max abs ${v.abs.toExponential(2)}`,
  );
  console.log(`largest differences vs SciPy/NumPy:\n${rows.join("\n")}`);
});

// ---------------------------------------------------------------- the SciPy batch

function nth<T>(xs: readonly T[], i: number): T {
  const x = xs[i];
  if (x === undefined) throw new Error(`no fixture ${i}`);
  return x;
}

const requests: ScipyRequest[] = [];
let results: number[][] | undefined;
let scipyError: unknown;
/** Queues a request (at collection time); the returned getter reads its result after beforeAll. */
function ref(req: ScipyRequest): () => number[] {
  const index = requests.push(req) - 1;
  return () => {
    if (scipyError !== undefined) throw scipyError;
    const r = results?.[index];
    if (!r) throw new Error("SciPy results are missing");
    return r;
  };
}

// KS fixtures: [label, a, b], covering the exact (square and unequal) and asymptotic paths.
const small = normal(1, 200);
const ksCases: [string, number[], number[]][] = [
  ["normal vs shifted normal, 200 vs 150", small, normal(2, 150, 0.3)],
  ["same distribution, 200 vs 150", small, normal(3, 150)],
  ["equal sizes 100 vs 100 (square path)", normal(4, 100), normal(5, 100, 0.5)],
  ["equal sizes 60 vs 60, no shift", normal(6, 60), normal(7, 60)],
  ["ties: binomial integers, 300 vs 280", binomial(8, 300, 20, 0.4), binomial(9, 280, 20, 0.45)],
  ["integer-valued, few values, 50 vs 70", binomial(10, 50, 6, 0.5), binomial(11, 70, 6, 0.5)],
  [
    "rounded to 1 decimal (heavy ties), 400 vs 380",
    rounded(normal(12, 400), 1),
    rounded(normal(13, 380, 0.1), 1),
  ],
  ["identical samples", small, small],
  ["disjoint samples 40 vs 50", normal(14, 40), normal(15, 50, 100)],
  ["n = 1 vs n = 1", [1], [2]],
  ["n = 1 vs 5", [0.5], [0.1, 0.2, 0.9, 1.3, 2]],
  ["1000 vs 10000 (gcd 1000)", normal(16, 1000), normal(17, 10_000, 0.05)],
  ["997 vs 10000 (lcm ~1e7)", normal(18, 997), normal(19, 10_000, 0.1)],
  ["asymptotic 12000 vs 11000, no shift", normal(20, 12_000), normal(21, 11_000)],
  ["asymptotic 12000 vs 11000, shift 0.05", normal(20, 12_000), normal(22, 11_000, 0.05)],
  ["asymptotic 12000 vs 11000, shift 0.08 (2·smirnov branch)", normal(20, 12_000), normal(30, 11_000, 0.08)],
  ["asymptotic 500 vs 12000", normal(23, 500), normal(24, 12_000, 0.1)],
  ["asymptotic 3 vs 20000", [0.2, 1.1, -0.4], normal(25, 20_000)],
  ["asymptotic 130 vs 10001, shift 0.2 (n ≤ 140 branches)", normal(26, 130), normal(27, 10_001, 0.2)],
  ["asymptotic 11000 vs 10500, shift 1 (p underflows)", normal(28, 11_000), normal(29, 10_500, 1)],
];
const ksRefs = ksCases.map(([, a, b]) => ref({ op: "ks_2samp", a, b }));

// Grids for the special functions.
const gammaGrid: [number, number][] = [];
for (const a of [0.5, 1, 1.5, 2.5, 4, 9.5, 10, 12.5, 50, 500.5, 5000]) {
  for (const f of [0.001, 0.3, 0.9, 1, 1.1, 2, 4, 8]) gammaGrid.push([a, a * f]);
}
const ksGrid: [number, number][] = [];
for (const n of [1, 2, 5, 17, 80, 140, 141, 480, 3000, 5739, 100_000, 100_001]) {
  for (const x of [0.004, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.97]) ksGrid.push([n, x]);
}
const normGrid = [-30, -8, -3, -1, -0.5, -0.1, 0, 0.2, 0.6, 1, 2.5, 5, 9, 20];
const lgammaGrid = [1e-6, 0.1, 0.5, 1, 1.5, 2, 3, 7.25, 9.99, 10, 10.5, 42, 171.5, 1e4, 1e7];
const gammaRefs = {
  q: ref({ op: "gammaincc", a: gammaGrid.map((g) => g[0]), x: gammaGrid.map((g) => g[1]) }),
  p: ref({ op: "gammainc", a: gammaGrid.map((g) => g[0]), x: gammaGrid.map((g) => g[1]) }),
  chi2: ref({ op: "chi2_sf", x: gammaGrid.map((g) => 2 * g[1]), df: gammaGrid.map((g) => 2 * g[0]) }),
  lgamma: ref({ op: "gammaln", x: lgammaGrid }),
  ndtr: ref({ op: "ndtr", x: normGrid }),
  erfc: ref({ op: "erfc", x: normGrid }),
  kstwo: ref({ op: "kstwo_sf", n: ksGrid.map((g) => g[0]), x: ksGrid.map((g) => g[1]) }),
  smirnov: ref({ op: "smirnov", n: ksGrid.map((g) => g[0]), x: ksGrid.map((g) => g[1]) }),
};

// Categorical fixtures: [label, reference, current].
const weather = [0.65, 0.26, 0.08, 0.01];
const categoricalCases: [string, number[], number[]][] = [
  [
    "weather-like, same mix",
    categorical(30, 800, weather, [1, 2, 3, 4]),
    categorical(31, 600, weather, [1, 2, 3, 4]),
  ],
  [
    "weather-like, shifted mix",
    categorical(32, 800, weather, [1, 2, 3, 4]),
    categorical(33, 600, [0.5, 0.3, 0.15, 0.05], [1, 2, 3, 4]),
  ],
  [
    "category missing in current",
    categorical(34, 500, [0.4, 0.3, 0.2, 0.1], [1, 2, 3, 4]),
    categorical(35, 450, [0.45, 0.35, 0.2], [1, 2, 3]),
  ],
  [
    "new category in current",
    categorical(36, 500, [0.5, 0.3, 0.2], [1, 2, 3]),
    categorical(37, 450, [0.45, 0.3, 0.2, 0.05], [1, 2, 3, 4]),
  ],
  ["equal samples", categorical(38, 300, [0.2, 0.3, 0.5]), categorical(38, 300, [0.2, 0.3, 0.5])],
  [
    "hours 0–23, 2000 vs 1500",
    categorical(39, 2000, Array(24).fill(1 / 24)),
    categorical(40, 1500, Array(24).fill(1 / 24)),
  ],
];
const chiRefs = categoricalCases.map(([, r, c]) => ref({ op: "evidently_chisquare", ref: r, cur: c }));

const binaryCases: [string, number[], number[]][] = [
  ["holiday-like 0/1, same rate", categorical(41, 700, [0.97, 0.03]), categorical(42, 500, [0.97, 0.03])],
  ["workingday-like 0/1, shifted", categorical(43, 700, [0.32, 0.68]), categorical(44, 500, [0.45, 0.55])],
  ["one value on each side, different", Array(50).fill(0), Array(40).fill(1)],
  ["reference one value, current two", Array(50).fill(1), [...Array(30).fill(1), ...Array(5).fill(2)]],
];
const zRefs = binaryCases.map(([, r, c]) => ref({ op: "evidently_z", ref: r, cur: c }));

// Numeric fixtures for distances and binning.
const numericCases: [string, number[], number[]][] = [
  ["normal vs shifted normal, 1500 vs 1200", normal(50, 1500), normal(51, 1200, 0.25)],
  ["same distribution, 3000 vs 2000", normal(52, 3000, 10, 3), normal(53, 2000, 10, 3)],
  ["wider spread, 1200 vs 900", normal(54, 1200), normal(55, 900, 0, 1.6)],
  ["integer counts with ties (binomial 40)", binomial(56, 1100, 40, 0.3), binomial(57, 1000, 40, 0.33)],
  ["integers with ≤ 20 values (category binning)", binomial(58, 1200, 12, 0.5), binomial(59, 800, 12, 0.6)],
  [
    "rounded temps, current outside reference range",
    rounded(normal(60, 1100, 0.5, 0.15), 2),
    rounded(normal(61, 700, 0.8, 0.1), 2),
  ],
  ["identical samples", normal(62, 1001), normal(62, 1001)],
  ["n = 1 vs n = 1", [3], [5]],
  ["n = 1 vs 4", [3], [1, 2, 6, 7.5]],
];
const numericRefs = numericCases.map(([, r, c]) => ({
  wasserstein: ref({ op: "wasserstein", u: r, v: c }),
  normed: ref({ op: "evidently_wasserstein", ref: r, cur: c }),
  std: ref({ op: "std", x: r }),
  js: ref({ op: "evidently_jensenshannon", ref: r, cur: c, kind: "numeric" }),
  psi: ref({ op: "evidently_psi", ref: r, cur: c, kind: "numeric" }),
  edges: ref({ op: "histogram_bin_edges", x: [...r, ...c], bins: "sturges" }),
}));
const categoricalDistanceRefs = categoricalCases.map(([, r, c]) => ({
  js: ref({ op: "evidently_jensenshannon", ref: r, cur: c, kind: "categorical" }),
  psi: ref({ op: "evidently_psi", ref: r, cur: c, kind: "categorical" }),
}));

const jsVectors: [string, number[], number[], number | undefined][] = [
  ["with zeros", [0.5, 0.5, 0, 0], [0, 0.1, 0.4, 0.5], undefined],
  ["unnormalised counts", [10, 20, 30], [30, 20, 10], undefined],
  ["base 2, disjoint", [1, 0], [0, 1], 2],
  ["identical", [0.2, 0.3, 0.5], [0.2, 0.3, 0.5], undefined],
];
const jsRefs = jsVectors.map(([, p, q, base]) =>
  ref(base === undefined ? { op: "jensenshannon", p, q } : { op: "jensenshannon", p, q, base }),
);

const histogramData = normal(70, 500, 5, 2);
const histogramCases: [string, number[], number | "sturges"][] = [
  ["sturges", histogramData, "sturges"],
  ["10 bins", histogramData, 10],
  ["1 bin", histogramData, 1],
  ["constant data", [4, 4, 4], "sturges"],
  ["integers, 7 bins", binomial(71, 300, 30, 0.5), 7],
];
const histogramRefs = histogramCases.map(([, x, bins]) => ref({ op: "histogram_bin_edges", x, bins }));
// np.histogram with those edges (fixed after the edges are known: same rule, NumPy's own edges)
const histogramCountRefs = histogramCases.map(([, x, bins]) =>
  ref({ op: "histogram", x, edges: histogramBinEdges(x, bins) }),
);

// ---------------------------------------------------------------- tests against SciPy

describe("drift statistics match SciPy/NumPy computed live", () => {
  // A missing venv fails every test here with the command to run (never a skip).
  beforeAll(() => {
    try {
      results = scipy(requests);
    } catch (error) {
      scipyError = error;
    }
  }, 120_000);

  it("two-sample KS: statistic and p-value as scipy.stats.ks_2samp (method auto)", () => {
    ksCases.forEach(([label, a, b], i) => {
      const [stat, p] = nth(ksRefs, i)() as [number, number];
      const ours = ks2samp(a, b);
      expect(ours.method).toBe(Math.max(a.length, b.length) <= 10_000 ? "exact" : "asymp");
      close("ks statistic", ours.statistic, stat, 1e-12, 0, label);
      close("ks p-value", ours.pValue, p, 1e-6, 1e-14, label);
    });
  });

  it("KS distributions: kstwo.sf and smirnov on a grid covering every method branch", () => {
    const kstwo = gammaRefs.kstwo();
    const smirnov = gammaRefs.smirnov();
    ksGrid.forEach(([n, x], i) => {
      close("kstwo.sf", kstwoSf(n, x), kstwo[i] as number, 1e-8, 1e-15, `n=${n} x=${x}`);
      close("smirnov", smirnovSf(n, x), smirnov[i] as number, 1e-8, 1e-15, `n=${n} x=${x}`);
    });
  });

  it("incomplete gamma, chi-square sf, ln Γ, Φ and erfc", () => {
    const [q, p, chi2] = [gammaRefs.q(), gammaRefs.p(), gammaRefs.chi2()];
    gammaGrid.forEach(([a, x], i) => {
      close("gammaincc", gammaincc(a, x), q[i] as number, 1e-10, 1e-300, `a=${a} x=${x}`);
      close("gammainc", gammainc(a, x), p[i] as number, 1e-10, 1e-300, `a=${a} x=${x}`);
      close("chi2.sf", chi2Sf(2 * x, 2 * a), chi2[i] as number, 1e-10, 1e-300, `x=${2 * x} df=${2 * a}`);
    });
    lgammaGrid.forEach((x, i) => {
      close("gammaln", lgamma(x), gammaRefs.lgamma()[i] as number, 1e-13, 1e-14, `x=${x}`);
    });
    normGrid.forEach((x, i) => {
      close("ndtr", ndtr(x), gammaRefs.ndtr()[i] as number, 1e-12, 1e-300, `x=${x}`);
      close("erfc", erfc(x), gammaRefs.erfc()[i] as number, 1e-12, 1e-300, `x=${x}`);
    });
    expect(chi2Sf(3, 0)).toBeNaN(); // as scipy.stats.chi2.sf(3, 0)
  });

  it("chi-square: Evidently's expected = reference share × current total, then scipy.stats.chisquare", () => {
    categoricalCases.forEach(([label, r, c], i) => {
      const [stat, p] = nth(chiRefs, i)() as [number, number];
      const ours = chiSquare(r, c);
      close("chisquare statistic", ours.statistic, stat, 1e-12, 1e-12, label);
      close("chisquare p-value", ours.pValue, p, 1e-9, 1e-300, label);
    });
    // a category only in the current data makes χ² infinite, p = 0 (as SciPy)
    expect(chiSquare([1, 1, 2, 2], [1, 2, 3]).pValue).toBe(0);
  });

  it("z-test for two categories as Evidently's z stattest", () => {
    binaryCases.forEach(([label, r, c], i) => {
      close("z p-value", zTest(r, c).pValue, nth(zRefs, i)()[0] as number, 1e-9, 1e-15, label);
    });
    expect(zTest([3, 3], [3, 3, 3])).toEqual({ statistic: 0, pValue: 1 });
  });

  it("Wasserstein distance, reference std, and Evidently's normed distance", () => {
    numericCases.forEach(([label, r, c], i) => {
      const refs = nth(numericRefs, i);
      close("wasserstein", wassersteinDistance(r, c), refs.wasserstein()[0] as number, 1e-12, 1e-15, label);
      close("np.std", populationStd(r), refs.std()[0] as number, 1e-12, 1e-15, label);
      close("wasserstein normed", wassersteinNormed(r, c), refs.normed()[0] as number, 1e-12, 1e-15, label);
    });
  });

  it("Jensen–Shannon distance and PSI on Evidently's binning (numeric and categorical)", () => {
    numericCases.forEach(([label, r, c], i) => {
      const refs = nth(numericRefs, i);
      close(
        "jensenshannon (numeric)",
        jensenShannon(r, c, "numeric"),
        refs.js()[0] as number,
        1e-10,
        1e-15,
        label,
      );
      close("psi (numeric)", psi(r, c, "numeric"), refs.psi()[0] as number, 1e-10, 1e-15, label);
      const edges = binnedPercents(r, c, "numeric", false).edges;
      if (edges) {
        const numpyEdges = refs.edges() as number[];
        expect(edges.length, label).toBe(numpyEdges.length);
        edges.forEach((e, k) => {
          close("histogram edges", e, numpyEdges[k] as number, 1e-15, 1e-15, label);
        });
      }
    });
    categoricalCases.forEach(([label, r, c], i) => {
      const refs = nth(categoricalDistanceRefs, i);
      close(
        "jensenshannon (categorical)",
        jensenShannon(r, c, "categorical"),
        refs.js()[0] as number,
        1e-10,
        1e-15,
        label,
      );
      close("psi (categorical)", psi(r, c, "categorical"), refs.psi()[0] as number, 1e-10, 1e-15, label);
    });
    jsVectors.forEach(([label, p, q, base], i) => {
      close(
        "jensenshannon (vectors)",
        jensenShannonDistance(p, q, base),
        nth(jsRefs, i)()[0] as number,
        1e-12,
        1e-15,
        label,
      );
    });
  });

  it("histogram bin edges and counts as np.histogram_bin_edges / np.histogram", () => {
    histogramCases.forEach(([label, x, bins], i) => {
      const edges = histogramBinEdges(x, bins);
      const numpyEdges = nth(histogramRefs, i)() as number[];
      expect(edges.length, label).toBe(numpyEdges.length);
      edges.forEach((e, k) => {
        close("histogram edges", e, numpyEdges[k] as number, 1e-15, 1e-15, label);
      });
      expect(histogramCounts(x, edges), label).toEqual(nth(histogramCountRefs, i)());
    });
  });

  it("featureDrift reports the selected test's SciPy value", () => {
    const [label, a, b] = ksCases[0] as [string, number[], number[]];
    const ks = featureDrift("temp", a, b);
    expect(ks.test).toBe("ks");
    close("ks p-value", ks.statistic, nth(ksRefs, 0)()[1] as number, 1e-6, 1e-14, label);

    const [, r, c] = numericCases[0] as [string, number[], number[]];
    const w = featureDrift("hum", r, c);
    expect(w.test).toBe("wasserstein");
    close(
      "wasserstein normed",
      w.statistic,
      nth(numericRefs, 0).normed()[0] as number,
      1e-12,
      0,
      "featureDrift",
    );
    close("psi (numeric)", w.psi, nth(numericRefs, 0).psi()[0] as number, 1e-10, 0, "featureDrift");

    const [, cr, cc] = categoricalCases[1] as [string, number[], number[]];
    const chi = featureDrift("weathersit", cr, cc);
    expect(chi).toMatchObject({ test: "chisquare", kind: "categorical" });
    close("chisquare p-value", chi.statistic, nth(chiRefs, 1)()[1] as number, 1e-9, 0, "featureDrift");

    const [, hr, hc] = categoricalCases[5] as [string, number[], number[]];
    const js = featureDrift("hr", hr, hc, "categorical");
    expect(js.test).toBe("jensenshannon");
    close(
      "jensenshannon (categorical)",
      js.statistic,
      nth(categoricalDistanceRefs, 5).js()[0] as number,
      1e-10,
      0,
      "featureDrift",
    );
  });
});

// ---------------------------------------------------------------- detection rules (no SciPy needed)

describe("Evidently's default test selection", () => {
  const numericRef = (n: number) => normal(80, n);
  const cats = (n: number, seed = 81) => categorical(seed, n, [0.4, 0.3, 0.2, 0.1], [1, 2, 3, 4]);

  it("switches from tests to distances above 1000 reference rows", () => {
    expect(featureDrift("temp", numericRef(1000), normal(82, 300)).test).toBe("ks");
    expect(featureDrift("temp", numericRef(1001), normal(82, 300)).test).toBe("wasserstein");
    expect(featureDrift("season", cats(1000), cats(300, 83)).test).toBe("chisquare");
    expect(featureDrift("season", cats(1001), cats(300, 83)).test).toBe("jensenshannon");
    const t = { largeReferenceRows: 99 };
    expect(featureDrift("temp", numericRef(99), normal(82, 30), undefined, t).test).toBe("ks");
    expect(featureDrift("temp", numericRef(100), normal(82, 30), undefined, t).test).toBe("wasserstein");
  });

  it("counts a feature with at most 5 distinct reference values as categorical", () => {
    expect(CATEGORICAL_MAX_DISTINCT).toBe(5);
    const five = categorical(84, 400, [0.2, 0.2, 0.2, 0.2, 0.2], [0, 1, 2, 3, 4]);
    const six = categorical(85, 400, Array(6).fill(1 / 6), [0, 1, 2, 3, 4, 5]);
    expect(inferKind(five)).toBe("categorical");
    expect(inferKind(six)).toBe("numeric");
    expect(featureDrift("weekday", five, five.slice(0, 200))).toMatchObject({
      kind: "categorical",
      test: "chisquare",
    });
    expect(featureDrift("weekday", six, six.slice(0, 200))).toMatchObject({ kind: "numeric", test: "ks" });
    // NaN does not count as a distinct value
    expect(inferKind([...five, Number.NaN])).toBe("categorical");
  });

  it("picks by distinct values of both sides together, as Evidently does for numeric features", () => {
    const ref = categorical(86, 300, [0.25, 0.25, 0.25, 0.25], [1, 2, 3, 4]);
    const cur = [...categorical(87, 200, [0.25, 0.25, 0.25, 0.25], [1, 2, 3, 4]), 5, 6];
    // numeric, 6 distinct values pooled → KS; the same data declared categorical → chi-square
    expect(featureDrift("x", ref, cur, "numeric").test).toBe("ks");
    expect(featureDrift("x", ref, cur, "categorical").test).toBe("chisquare");
    // numeric with 3–5 pooled values → chi-square on a small reference, JS on a large one
    expect(featureDrift("x", ref, ref, "numeric").test).toBe("chisquare");
    const big = categorical(88, 1500, [0.25, 0.25, 0.25, 0.25], [1, 2, 3, 4]);
    expect(featureDrift("x", big, ref, "numeric").test).toBe("jensenshannon");
    expect(defaultTest(big, [...ref, 9, 10], "numeric")).toBe("wasserstein");
  });

  it("uses the z-test for at most two distinct values on a small reference", () => {
    const holiday = categorical(89, 700, [0.97, 0.03]);
    expect(featureDrift("holiday", holiday, categorical(90, 300, [0.97, 0.03]))).toMatchObject({
      test: "z",
      kind: "categorical",
    });
    expect(featureDrift("holiday", holiday, holiday, "numeric").test).toBe("z");
    expect(featureDrift("const", [7, 7, 7], [7, 7])).toMatchObject({
      test: "z",
      statistic: 1,
      drifted: false,
    });
    expect(featureDrift("holiday", categorical(91, 1200, [0.97, 0.03]), holiday).test).toBe("jensenshannon");
  });
});

describe("drift decisions and thresholds", () => {
  it("flags p-values below the threshold: KS at ≤, chi-square and z strictly below (Evidently)", () => {
    const a = normal(100, 200);
    const b = normal(101, 150, 0.3);
    const p = ks2samp(a, b).pValue;
    expect(featureDrift("temp", a, b, "numeric", { pValue: p }).drifted).toBe(true);
    expect(featureDrift("temp", a, b, "numeric", { pValue: p * 0.999 }).drifted).toBe(false);

    const r = categorical(102, 800, [0.65, 0.26, 0.08, 0.01], [1, 2, 3, 4]);
    const c = categorical(103, 600, [0.6, 0.28, 0.1, 0.02], [1, 2, 3, 4]);
    const pc = chiSquare(r, c).pValue;
    expect(featureDrift("weathersit", r, c, "categorical", { pValue: pc }).drifted).toBe(false);
    expect(featureDrift("weathersit", r, c, "categorical", { pValue: pc * 1.001 }).drifted).toBe(true);

    const res = featureDrift("temp", a, b);
    expect(res.threshold).toBe(DEFAULT_DRIFT_THRESHOLDS.pValue);
    expect(res.drifted).toBe(res.statistic <= 0.05);
  });

  it("flags distances at or above the threshold", () => {
    const r = normal(104, 2000);
    const c = normal(105, 1000, 0.15);
    const d = wassersteinNormed(r, c);
    expect(featureDrift("temp", r, c, "numeric", { distance: d })).toMatchObject({
      drifted: true,
      threshold: d,
    });
    expect(featureDrift("temp", r, c, "numeric", { distance: d * 1.001 }).drifted).toBe(false);
    expect(featureDrift("temp", r, c).threshold).toBe(0.1);
  });

  it("calls dataset drift when the drifted share reaches datasetShare", () => {
    const same = normal(106, 300);
    const moved = normal(107, 300, 2);
    const reference = { a: normal(108, 300), b: normal(109, 300), c: normal(110, 300), d: normal(111, 300) };
    const current = { a: moved, b: moved, c: same, d: same };
    const half = datasetDrift(reference, current);
    expect(half.features.map((f) => f.drifted)).toEqual([true, true, false, false]);
    expect(half.driftedShare).toBe(0.5);
    expect(half.datasetDrift).toBe(true);
    expect(datasetDrift(reference, current, undefined, { datasetShare: 0.6 }).datasetDrift).toBe(false);
    const quarter = datasetDrift(reference, { ...current, b: same });
    expect(quarter).toMatchObject({ driftedShare: 0.25, datasetDrift: false });
    expect(
      datasetDrift({ x: [1, 2, 2, 3] }, { x: [1, 2, 3, 3] }, { x: "categorical" }).features[0]?.kind,
    ).toBe("categorical");
  });

  it("drops NaN and ±Infinity, counts them per side, and computes on the rest", () => {
    const r = normal(112, 300);
    const c = normal(113, 250, 0.2);
    const dirtyR = [Number.NaN, ...r, Number.POSITIVE_INFINITY];
    const dirtyC = [...c.slice(0, 100), Number.NaN, Number.NaN, Number.NEGATIVE_INFINITY, ...c.slice(100)];
    const clean = featureDrift("temp", r, c);
    const dirty = featureDrift("temp", Float64Array.from(dirtyR), dirtyC);
    expect(dirty.missing).toEqual({ reference: 2, current: 3 });
    expect(dirty.rows).toEqual({ reference: 300, current: 250 });
    expect(clean.missing).toEqual({ reference: 0, current: 0 });
    expect({ ...dirty, missing: clean.missing }).toEqual(clean);
  });

  it("rejects empty or all-missing data, naming the feature", () => {
    expect(() => featureDrift("temp", [], [1, 2])).toThrow(/feature "temp": the reference data is empty/);
    expect(() => featureDrift("hum", [1, 2], [Number.NaN, Number.NaN])).toThrow(
      /feature "hum": the current data has only missing values \(2/,
    );
    expect(() => datasetDrift({ temp: [1, 2, 3] }, {})).toThrow(
      /feature "temp" is missing from the current data/,
    );
    expect(() => datasetDrift({}, {})).toThrow(/at least one feature/);
    expect(() => datasetDrift({ a: [1] }, { a: [1], b: [2] })).toThrow(
      /feature "b" is missing from the reference/,
    );
    expect(() => featureDrift("temp", [1, 2], [1, 2], undefined, { pValue: 0 })).toThrow(RangeError);
    expect(() => featureDrift("temp", [1, 2], [1, 2], undefined, { distance: Number.NaN })).toThrow(
      /distance/,
    );
    expect(() => featureDrift("temp", [1, 2], [1, 2], "ordinal" as never)).toThrow(
      /feature "temp": unknown kind/,
    );
    expect(() => ks2samp([], [1])).toThrow(RangeError);
    expect(() => ks2samp([1, Number.NaN], [1])).toThrow(/non-finite/);
    expect(() => chiSquareTest([1, 2], [1])).toThrow(/2 observed counts but 1/);
    expect(() => chiSquareTest([1, 2], [1, 1])).toThrow(/totals|differ/);
  });

  it("handles equal samples and single observations", () => {
    const x = normal(114, 50);
    expect(featureDrift("temp", x, x)).toMatchObject({ test: "ks", statistic: 1, drifted: false, psi: 0 });
    expect(wassersteinDistance([3], [3])).toBe(0);
    expect(wassersteinNormed([3], [5])).toBe(2 / 0.001); // std of one value is 0: floored at 0.001
    expect(jensenShannon([2, 2, 3], [2, 3, 2, 2, 3, 2], "categorical")).toBeCloseTo(0, 15);
    expect(chiSquare([1, 1], [1]).pValue).toBeNaN(); // one category: no degrees of freedom (SciPy: NaN)
  });
});

describe("histogram for reports", () => {
  it("bins numeric data on shared edges and returns each side's proportions", () => {
    const r = normal(120, 400);
    const c = normal(121, 300, 1);
    const h = histogram(r, c, 12);
    if (h.kind !== "numeric") throw new Error("expected numeric");
    expect(h.edges).toHaveLength(13);
    expect(h.edges).toEqual(histogramBinEdges([...r, ...c], 12));
    expect(h.reference.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 12);
    expect(h.current.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 12);
    expect(h.reference).toEqual(histogramCounts(r, h.edges).map((n) => n / 400));
    const sturges = histogram([...r, Number.NaN], c);
    expect(sturges.kind === "numeric" && sturges.edges.length).toBe(
      histogramBinEdges([...r, ...c], "sturges").length,
    );
  });

  it("gives category proportions over the union of categories", () => {
    expect(histogram([1, 1, 2, 3], [2, 2, 4, Number.NaN])).toEqual({
      kind: "categorical",
      categories: [1, 2, 3, 4],
      reference: [0.5, 0.25, 0.25, 0],
      current: [0, 2 / 3, 0, 1 / 3],
    });
    expect(() => histogram([Number.NaN], [1])).toThrow(/reference data has no finite values/);
  });
});
