/**
 * Special functions behind the drift tests, in plain double precision. Each one follows the
 * algorithm SciPy uses for the same quantity, so that p-values agree with SciPy's to far better
 * than any drift threshold cares about; tests/core/drift.test.ts checks every one against SciPy.
 *
 * The Kolmogorov–Smirnov pieces follow SciPy's `scipy/stats/_ksstats.py` (Simard & L'Ecuyer's
 * choice of method for the one-sample two-sided distribution) and the lattice-path counts of
 * `scipy.stats.ks_2samp` (Hodges 1958; the 1 − p recursion of Viehmann 2021). SciPy is
 * BSD-3-Clause licensed; the algorithms' references are given with each function.
 */

const EPS = 2 ** -52;
const LN2 = Math.LN2;
const LOG_2PI = Math.log(2 * Math.PI);
const LOG_SQRT_2PI = 0.5 * LOG_2PI;
const SQRT_2PI = Math.sqrt(2 * Math.PI);
/** exp() of anything below this is 0 or subnormal (Cephes' MINLOG). */
const MINLOG = -708.3964185322641;
const E128 = 2 ** 128;
const EM128 = 2 ** -128;

function clip01(p: number): number {
  return Math.min(Math.max(p, 0), 1);
}

/** x · 2^e, without overflowing the intermediate power of two. */
function ldexp(x: number, e: number): number {
  let y = x;
  let k = e;
  while (k > 1000) {
    y *= 2 ** 1000;
    k -= 1000;
  }
  while (k < -1000) {
    y *= 2 ** -1000;
    k += 1000;
  }
  return y * 2 ** k;
}

/** Rounds half to even, like NumPy's `np.round` and Python's `round`. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** Exact product: a·b = p + e with p = fl(a·b) (Dekker's TwoProduct). */
function twoProduct(a: number, b: number): [number, number] {
  const p = a * b;
  const ca = 134217729 * a;
  const ah = ca - (ca - a);
  const al = a - ah;
  const cb = 134217729 * b;
  const bh = cb - (cb - b);
  const bl = b - bh;
  const e = ah * bh - p + ah * bl + al * bh + al * bl;
  return [p, e];
}

// Stirling series coefficients B_{2j} / (2j (2j − 1)), j = 1…8.
const STIRLING = [
  1 / 12,
  -1 / 360,
  1 / 1260,
  -1 / 1680,
  1 / 1188,
  -691 / 360360,
  1 / 156,
  -3617 / 122400,
] as const;

/** ln Γ(x) − [(x − ½) ln x − x + ½ ln 2π] for x ≥ 10 (error below 1e-18). */
function stirlingCorrection(x: number): number {
  const r = 1 / x;
  const r2 = r * r;
  let s = 0;
  for (let j = STIRLING.length - 1; j >= 0; j--) s = s * r2 + (STIRLING[j] as number);
  return s * r;
}

/**
 * ln Γ(x) for x > 0: Stirling's series for x ≥ 10, shifted up by the recurrence Γ(x + 1) = x Γ(x)
 * below that. Absolute error about 1e-15 (relative about 1e-16 away from x = 1 and x = 2).
 */
export function lgamma(x: number): number {
  if (Number.isNaN(x) || x <= 0) return Number.NaN;
  if (x === Number.POSITIVE_INFINITY) return x;
  if (x === 1 || x === 2) return 0;
  if (x >= 10) return (x - 0.5) * Math.log(x) - x + LOG_SQRT_2PI + stirlingCorrection(x);
  let shift = 1;
  let y = x;
  while (y < 10) {
    shift *= y;
    y += 1;
  }
  return (y - 0.5) * Math.log(y) - y + LOG_SQRT_2PI + stirlingCorrection(y) - Math.log(shift);
}

/** ln(1 + t) − t without cancellation for small t. */
function log1pmx(t: number): number {
  if (Math.abs(t) >= 0.5) return Math.log1p(t) - t;
  // ln(1 + t) = 2 atanh(r) with r = t / (2 + t), and t − 2r = t·r.
  const r = t / (2 + t);
  const r2 = r * r;
  let term = r2;
  let sum = 0;
  for (let k = 1; k < 60; k++) {
    const add = term / (2 * k + 1);
    sum += add;
    if (Math.abs(add) <= EPS * Math.abs(sum)) break;
    term *= r2;
  }
  return -t * r + 2 * r * sum;
}

/** ln(x^a e^{−x} / Γ(a)), the common factor of both incomplete gamma functions. */
function logGammaFactor(a: number, x: number): number {
  if (a >= 10) {
    // a·ln x − x − ln Γ(a) = a·(ln(1+t) − t) + ½ ln(a / 2π) − stirling(a), t = (x − a)/a:
    // no large terms cancel, so large a keeps full precision.
    return a * log1pmx((x - a) / a) + 0.5 * Math.log(a / (2 * Math.PI)) - stirlingCorrection(a);
  }
  return a * Math.log(x) - x - lgamma(a);
}

function maxGammaIterations(a: number): number {
  return 10_000 + Math.ceil(50 * Math.sqrt(a));
}

/** P(a, x) by its power series; meant for x < a + 1. */
function gammaPSeries(a: number, x: number): number {
  let term = 1;
  let sum = 1;
  const limit = maxGammaIterations(a);
  for (let n = 1; n < limit; n++) {
    term *= x / (a + n);
    sum += term;
    if (term <= EPS * sum) break;
  }
  return (Math.exp(logGammaFactor(a, x)) / a) * sum;
}

/** Q(a, x) by its continued fraction (modified Lentz); meant for x ≥ a + 1. */
function gammaQContinuedFraction(a: number, x: number): number {
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  const limit = maxGammaIterations(a);
  for (let i = 1; i < limit; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) <= EPS) break;
  }
  return Math.exp(logGammaFactor(a, x)) * h;
}

/**
 * Regularized lower incomplete gamma P(a, x) = γ(a, x) / Γ(a) (SciPy's `gammainc`), a > 0, x ≥ 0.
 */
export function gammainc(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0)) return Number.NaN;
  if (x === 0) return 0;
  if (x === Number.POSITIVE_INFINITY) return 1;
  return x < a + 1 ? gammaPSeries(a, x) : 1 - gammaQContinuedFraction(a, x);
}

/**
 * Regularized upper incomplete gamma Q(a, x) = Γ(a, x) / Γ(a) = 1 − P(a, x) (SciPy's `gammaincc`),
 * a > 0, x ≥ 0. The continued fraction gives Q directly where it is small (x ≥ a + 1), so tiny tail
 * probabilities keep their relative precision.
 */
export function gammaincc(a: number, x: number): number {
  if (!(a > 0) || !(x >= 0)) return Number.NaN;
  if (x === 0) return 1;
  if (x === Number.POSITIVE_INFINITY) return 0;
  return x < a + 1 ? 1 - gammaPSeries(a, x) : gammaQContinuedFraction(a, x);
}

/**
 * Survival function of the χ² distribution with `df` degrees of freedom: Pr(X ≥ x) = Q(df/2, x/2)
 * (SciPy's `chi2.sf`). NaN for df ≤ 0, as SciPy returns.
 */
export function chi2Sf(x: number, df: number): number {
  if (!(df > 0) || Number.isNaN(x)) return Number.NaN;
  if (x <= 0) return 1;
  return gammaincc(df / 2, x / 2);
}

/** erf(x) for |x| < 0.5 by the all-positive series 2x/√π · e^{−x²} · Σ (2x²)^n / (2n+1)!!. */
function erfSmall(x: number): number {
  const x2 = x * x;
  let term = 1;
  let sum = 1;
  for (let n = 1; n < 60; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term <= EPS * sum) break;
  }
  return ((2 * x) / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
}

/** Complementary error function, erfc(x) = Q(½, x²) for x ≥ 0. */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return x;
  if (x < 0) return 2 - erfc(-x);
  if (x < 0.5) return 1 - erfSmall(x);
  return gammaincc(0.5, x * x);
}

/** Error function. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return x;
  if (Math.abs(x) < 0.5) return erfSmall(x);
  return x > 0 ? 1 - erfc(x) : erfc(-x) - 1;
}

/** Standard normal CDF Φ(x), evaluated the way Cephes' `ndtr` (SciPy's `norm.cdf`) does. */
export function ndtr(a: number): number {
  if (Number.isNaN(a)) return a;
  const x = a * Math.SQRT1_2;
  const z = Math.abs(x);
  if (z < Math.SQRT1_2) return 0.5 + 0.5 * erf(x);
  const y = 0.5 * erfc(z);
  return x > 0 ? 1 - y : y;
}

/**
 * One-sided one-sample Kolmogorov–Smirnov survival function Pr(D⁺_n ≥ x) (SciPy's
 * `special.smirnov`): the Birnbaum–Tingey sum
 *   x · Σ_{j=0}^{⌊n(1−x)⌋} C(n, j) (1 − x − j/n)^{n−j} (x + j/n)^{j−1},
 * with the closed forms SciPy uses for x ≤ 1/n and x ≥ 1 − 1/n, and Miller's approximation for
 * n > 10⁶. The terms are all positive and are formed in logarithms; n·x is split exactly so that
 * 1 − x − j/n keeps its precision near the end of the sum.
 */
export function smirnovSf(n: number, x: number): number {
  if (!(Number.isInteger(n) && n > 0) || !(x >= 0 && x <= 1)) return Number.NaN;
  if (n === 1) return 1 - x;
  if (x === 0) return 1;
  if (x === 1) return 0;
  const [p, e] = twoProduct(n, x);
  let nxfl = Math.floor(p);
  let alpha = p - nxfl + e;
  if (alpha < 0) {
    nxfl -= 1;
    alpha += 1;
  } else if (alpha >= 1) {
    nxfl += 1;
    alpha -= 1;
  }
  let n1mxfl = n - nxfl - (alpha === 0 ? 0 : 1);
  if (alpha === 0) n1mxfl -= 1;
  if (nxfl === 0 || (nxfl === 1 && alpha === 0)) {
    // x ≤ 1/n: cdf = x (1 + x)^{n−1}
    return clip01(1 - x * Math.exp((n - 1) * Math.log1p(x)));
  }
  if (-2 * n * x * x < MINLOG) return 0;
  if (nxfl >= n - 1) return clip01(Math.exp(n * Math.log1p(-x)));
  if (n > 1_000_000) {
    const logp = -((6 * n * x + 1) ** 2) / 18 / n;
    return clip01(logp < -LN2 ? Math.exp(logp) : 1 + Math.expm1(logp));
  }
  const nTerms = n1mxfl + 1;
  let sum = 0;
  let logC = 0;
  for (let j = 0; j < nTerms; j++) {
    const oneMinus = (n - j - p - e) / n; // 1 − x − j/n
    const plus = (j + p + e) / n; // x + j/n
    const a = Math.exp(logC + (n - j) * Math.log(oneMinus) + (j - 1) * Math.log(plus));
    sum += a;
    if (a !== 0) {
      if (4 * (nTerms - j) * a < EPS * sum && j !== nTerms - 1) break;
    } else if (j > n / 2) {
      break;
    }
    logC += Math.log((n - j) / (j + 1));
  }
  return clip01(x * sum);
}

/** ln(n! / nⁿ) by Stirling's series with n·ln n removed up front. */
function logFactorialOverPower(n: number): number {
  const rn = 1 / n;
  const y = rn / n;
  // SciPy's _STIRLING_COEFFS (the same B_{2j}/(2j(2j−1)) as STIRLING), evaluated at 1/n².
  let s = 0;
  for (let j = STIRLING.length - 1; j >= 0; j--) s = s * y + (STIRLING[j] as number);
  return Math.log(n) / 2 - n + LOG_2PI / 2 + rn * s;
}

/**
 * Pr(D_n ≤ d) by Durbin's matrix algorithm as Marsaglia, Tsang & Wang (2003) compute it:
 * the (k, k) entry of Hⁿ times n!/nⁿ, with k = ⌈nd⌉, scaling by 2^±128 to stay in range.
 */
function kolmogorovDurbinCdf(n: number, d: number): number {
  if (d >= 1) return 1;
  const nd = n * d;
  if (nd <= 0.5) return 0;
  const k = Math.ceil(nd);
  const h = k - nd;
  const m = 2 * k - 1;
  const v = new Float64Array(m);
  const w = new Float64Array(m);
  let fac = 1;
  for (let j = 1; j <= m; j++) {
    w[j - 1] = fac;
    fac /= j;
    v[j - 1] = (1 - h ** j) * fac;
  }
  const tt = Math.max(2 * h - 1, 0) ** m - 2 * h ** m;
  v[m - 1] = (1 + tt) * fac;

  let H: Float64Array = new Float64Array(m * m);
  for (let i = 1; i < m; i++) {
    for (let r = i - 1; r < m; r++) H[r * m + i] = w[r - (i - 1)] as number;
  }
  for (let r = 0; r < m; r++) H[r * m] = v[r] as number;
  for (let c = 0; c < m; c++) H[(m - 1) * m + c] = v[m - 1 - c] as number;

  const matmul = (A: Float64Array, B: Float64Array): Float64Array => {
    const C = new Float64Array(m * m);
    for (let i = 0; i < m; i++) {
      for (let l = 0; l < m; l++) {
        const a = A[i * m + l] as number;
        if (a === 0) continue;
        const rowB = l * m;
        const rowC = i * m;
        for (let j = 0; j < m; j++) C[rowC + j] = (C[rowC + j] as number) + a * (B[rowB + j] as number);
      }
    }
    return C;
  };

  let Hpwr: Float64Array = new Float64Array(m * m);
  for (let i = 0; i < m; i++) Hpwr[i * m + i] = 1;
  let nn = n;
  let expnt = 0;
  let hExpnt = 0;
  const kk = (k - 1) * m + (k - 1);
  while (nn > 0) {
    if (nn % 2) {
      Hpwr = matmul(Hpwr, H);
      expnt += hExpnt;
    }
    H = matmul(H, H);
    hExpnt *= 2;
    if (Math.abs(H[kk] as number) > E128) {
      for (let i = 0; i < H.length; i++) H[i] = (H[i] as number) / E128;
      hExpnt += 128;
    }
    nn = Math.floor(nn / 2);
  }
  let p = Hpwr[kk] as number;
  for (let i = 1; i <= n; i++) {
    p = (i * p) / n;
    if (Math.abs(p) < EM128) {
      p *= E128;
      expnt -= 128;
    }
  }
  if (expnt !== 0) p = ldexp(p, expnt);
  return clip01(p);
}

function pomeranzBounds(i: number, n: number, ll: number, ceilf: number, roundf: number): [number, number] {
  let j1: number;
  let j2: number;
  if (i === 0) {
    j1 = -ll - ceilf - 1;
    j2 = ll + ceilf - 1;
  } else {
    const half = Math.floor((i + 1) / 2);
    if ((i + 1) % 2 === 0) {
      if (half === n + 1) {
        j1 = n - ll - ceilf - 1;
        j2 = n + ll + ceilf - 1;
      } else {
        j1 = half - 1 - ll - roundf - 1;
        j2 = half + ll - 1 + ceilf - 1;
      }
    } else {
      j1 = half - 1 - ll - 1;
      j2 = half + ll + roundf - 1;
    }
  }
  return [Math.max(j1 + 2, 0), Math.min(j2, n)];
}

/** Pr(D_n ≤ x) by Pomeranz's recursion (1974), as SciPy arranges it (two rows, scaled). */
function kolmogorovPomeranzCdf(n: number, x: number): number {
  const t = n * x;
  const ll = Math.floor(t);
  const f = t - ll;
  const g = Math.min(f, 1 - f);
  const ceilf = f > 0 ? 1 : 0;
  const roundf = f > 0.5 ? 1 : 0;
  const npwrs = 2 * (ll + 1);
  const gpower = new Float64Array(npwrs);
  const twogpower = new Float64Array(npwrs);
  const onem2gpower = new Float64Array(npwrs);
  gpower[0] = 1;
  twogpower[0] = 1;
  onem2gpower[0] = 1;
  const gOverN = g / n;
  const twoGOverN = (2 * g) / n;
  const oneMinusTwoGOverN = (1 - 2 * g) / n;
  for (let m = 1; m < npwrs; m++) {
    gpower[m] = ((gpower[m - 1] as number) * gOverN) / m;
    twogpower[m] = ((twogpower[m - 1] as number) * twoGOverN) / m;
    onem2gpower[m] = ((onem2gpower[m - 1] as number) * oneMinusTwoGOverN) / m;
  }
  let V0 = new Float64Array(npwrs);
  let V1 = new Float64Array(npwrs);
  V1[0] = 1;
  let V0s = 0;
  let V1s = 0;
  let expnt = 0;
  let [j1, j2] = pomeranzBounds(0, n, ll, ceilf, roundf);
  for (let i = 1; i < 2 * n + 2; i++) {
    const k1 = j1;
    [V0, V1] = [V1, V0];
    [V0s, V1s] = [V1s, V0s];
    V1.fill(0);
    [j1, j2] = pomeranzBounds(i, n, ll, ceilf, roundf);
    const pwrs = i === 1 || i === 2 * n + 1 ? gpower : i % 2 ? twogpower : onem2gpower;
    const ln2 = j2 - k1 + 1;
    if (ln2 > 0) {
      // conv = full convolution of V0[k1 − V0s …] (ln2 entries) with pwrs[0 … ln2)
      const start = k1 - V0s;
      const segLen = Math.min(ln2, npwrs - start);
      const pwLen = Math.min(ln2, npwrs);
      const convStart = j1 - k1;
      const convLen = j2 - j1 + 1;
      let max = 0;
      for (let c = 0; c < convLen; c++) {
        const idx = convStart + c;
        let s = 0;
        const lo = Math.max(0, idx - pwLen + 1);
        const hi = Math.min(idx, segLen - 1);
        for (let a = lo; a <= hi; a++) s += (V0[start + a] as number) * (pwrs[idx - a] as number);
        V1[c] = s;
        if (s > max) max = s;
      }
      if (max > 0 && max < EM128) {
        for (let c = 0; c < npwrs; c++) V1[c] = (V1[c] as number) * E128;
        expnt -= 128;
      }
      V1s = V0s + j1 - k1;
    }
  }
  let ans = V1[n - V1s] as number;
  for (let m = 1; m <= n; m++) {
    if (Math.abs(ans) > E128) {
      ans *= EM128;
      expnt += 128;
    }
    ans *= m;
  }
  if (expnt !== 0) ans = ldexp(ans, expnt);
  return clip01(ans);
}

const PI2 = Math.PI ** 2;
const PI4 = Math.PI ** 4;
const PI6 = Math.PI ** 6;

/**
 * Pelz & Good's (1976) approximation to Pr(D_n ≤ x): the Li-Chien/Korolyuk expansion
 * K0 + K1/√n + K2/n + K3/n^{3/2} in z = x√n, rewritten with Jacobi theta identities for small z.
 */
function kolmogorovPelzGoodCdf(n: number, x: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const z = Math.sqrt(n) * x;
  const z2 = z * z;
  const z3 = z2 * z;
  const z4 = z2 * z2;
  const z6 = z4 * z2;
  const qlog = -PI2 / 8 / z2;
  if (qlog < -708) return 0;
  let q = Math.exp(qlog);
  const k1a = -z2;
  const k1b = PI2 / 4;
  const k2a = 6 * z6 + 2 * z4;
  const k2b = ((2 * z4 - 5 * z2) * PI2) / 4;
  const k2c = (PI4 * (1 - 2 * z2)) / 16;
  const k3d = (PI6 * (5 - 30 * z2)) / 64;
  const k3c = (PI4 * (-60 * z2 + 212 * z4)) / 16;
  const k3b = (PI2 * (135 * z4 - 96 * z6)) / 4;
  const k3a = -30 * z6 - 90 * z ** 8;
  const K = [0, 0, 0, 0];
  const maxk = Math.ceil((16 * z) / Math.PI);
  for (let k = maxk; k > 0; k--) {
    const m = 2 * k - 1;
    const m2 = m * m;
    const m4 = m2 * m2;
    const m6 = m4 * m2;
    const qpower = q ** (8 * k);
    const coeffs = [1, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6];
    for (let i = 0; i < 4; i++) K[i] = (K[i] as number) * qpower + (coeffs[i] as number);
  }
  const denominators = [z, 6 * z4, 72 * z ** 7, 6480 * z ** 10];
  for (let i = 0; i < 4; i++) K[i] = ((K[i] as number) * q * SQRT_2PI) / (denominators[i] as number);
  q = Math.exp(-PI2 / 2 / z2);
  let k2extra = 0;
  let k3extra = 0;
  const sqrt3z = Math.sqrt(3) * z;
  for (let k = maxk; k > 0; k--) {
    const k2 = k * k;
    const qp = q ** k2;
    k2extra += k2 * qp;
    const kpi = Math.PI * k;
    k3extra += (sqrt3z + kpi) * (sqrt3z - kpi) * k2 * qp;
  }
  K[2] = (K[2] as number) + (k2extra * PI2 * SQRT_2PI) / (-36 * z3);
  K[3] = (K[3] as number) + (k3extra * PI2 * SQRT_2PI) / (216 * z6);
  let sum = 0;
  for (let i = 0; i < 4; i++) sum += (K[i] as number) / n ** (i / 2);
  return sum;
}

/**
 * Survival function of the two-sided one-sample Kolmogorov–Smirnov statistic, Pr(D_n ≥ x)
 * (SciPy's `stats.kstwo.sf(x, n)`), choosing the method per Simard & L'Ecuyer (2011) exactly as
 * SciPy does: Ruben–Gambino closed forms at the ends, 2·smirnov for x ≥ ½ or large n·x²,
 * Durbin's matrix or Pomeranz's recursion for n ≤ 140, Durbin's matrix or the Pelz–Good
 * approximation for larger n.
 */
export function kstwoSf(n: number, x: number): number {
  if (!(Number.isInteger(n) && n >= 1) || Number.isNaN(x)) return Number.NaN;
  if (x >= 1) return 0;
  if (x <= 0) return 1;
  const t = n * x;
  if (t <= 1) {
    if (t <= 0.5) return 1;
    let prob: number;
    if (n <= 140) {
      prob = 1;
      for (let i = 1; i <= n; i++) prob *= i * (1 / n) * (2 * t - 1);
    } else {
      prob = Math.exp(logFactorialOverPower(n) + n * Math.log(2 * t - 1));
    }
    return clip01(1 - prob);
  }
  if (t >= n - 1) return clip01(2 * (1 - x) ** n);
  if (x >= 0.5) return clip01(2 * smirnovSf(n, x));
  const nx2 = t * x;
  if (n <= 140) {
    if (nx2 <= 0.754693) return clip01(1 - kolmogorovDurbinCdf(n, x));
    if (nx2 <= 4) return clip01(1 - kolmogorovPomeranzCdf(n, x));
    return clip01(2 * smirnovSf(n, x));
  }
  if (nx2 >= 370) return 0;
  if (nx2 >= 2.2) return clip01(2 * smirnovSf(n, x));
  let cdf: number;
  if (nx2 >= 18) cdf = 1;
  else if (n <= 100_000 && n * x ** 1.5 <= 1.4) cdf = kolmogorovDurbinCdf(n, x);
  else cdf = kolmogorovPelzGoodCdf(n, x);
  return clip01(1 - clip01(cdf));
}

/**
 * Two-sample KS with n1 = n2 = n: Pr(D ≥ h/n), the proportion of lattice paths from (0, 0) to (n, n)
 * that touch x − y = ±h: 2 Σ_k (−1)^{k−1} C(2n, n − kh) / C(2n, n), in SciPy's Horner-like
 * nesting that avoids the alternating sum's cancellation.
 */
export function ksTwoSampleSquareSf(n: number, h: number): number {
  let P = 0;
  let k = Math.floor(n / h);
  while (k >= 0) {
    let p1 = 1;
    for (let j = 0; j < h; j++) p1 = ((n - k * h - j) * p1) / (n + k * h + j + 1);
    P = p1 * (1 - P);
    k -= 1;
  }
  return 2 * P;
}

/**
 * Two-sample KS with sizes m, n (gcd g): Pr(D ≥ h / lcm(m, n)), the proportion of lattice paths
 * from (0, 0) to (m, n) that leave the band |x/m − y/n| < h/lcm. Hodges' (1958) "inside" column
 * recursion, carried as 1 − p per Viehmann (2021) so small p-values keep their precision, on a
 * sliding window of one column (as SciPy's `_compute_outer_prob_inside_method`).
 */
export function ksTwoSampleOuterSf(m0: number, n0: number, g: number, h: number): number {
  const m = Math.max(m0, n0);
  const n = Math.min(m0, n0);
  const mg = Math.floor(m / g);
  const ng = Math.floor(n / g);
  let minj = 0;
  let maxj = Math.min(Math.ceil(h / mg), n + 1);
  let curlen = maxj - minj;
  const lenA = Math.min(2 * maxj + 2, n + 1);
  const A = new Float64Array(lenA).fill(1);
  for (let j = minj; j < maxj && j < lenA; j++) A[j] = 0;
  for (let i = 1; i <= m; i++) {
    const lastminj = minj;
    const lastlen = curlen;
    minj = Math.min(Math.max(Math.floor((ng * i - h) / mg) + 1, 0), n);
    maxj = Math.min(Math.ceil((ng * i + h) / mg), n + 1);
    if (maxj <= minj) return 1;
    let val = minj === 0 ? 0 : 1;
    for (let jj = 0; jj < maxj - minj; jj++) {
      const j = jj + minj;
      val = ((A[jj + minj - lastminj] as number) * i + val * j) / (i + j);
      A[jj] = val;
    }
    curlen = maxj - minj;
    if (lastlen > curlen) {
      const from = maxj - minj;
      A.fill(1, Math.min(from, lenA), Math.min(from + (lastlen - curlen), lenA));
    }
  }
  return A[maxj - minj - 1] as number;
}
