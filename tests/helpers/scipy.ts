/**
 * Reference values from SciPy/NumPy, computed live: one `.venv/bin/python` process per call, a
 * batch of requests as JSON on stdin, a JSON array of results on stdout. The venv comes from
 * `bash scripts/python-venv.sh` (pinned numpy and scipy); without it every call throws, so tests
 * that use it fail loudly instead of skipping.
 *
 * Evidently's stattests are SciPy calls on binned or counted data; the `evidently_*` operations
 * redo that binning/counting in NumPy the way Evidently's source does (pandas is not needed), so the
 * TypeScript port is checked against an independent implementation.
 */

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PYTHON = `${ROOT}.venv/bin/python`;
const SETUP_HINT = "run `bash scripts/python-venv.sh` (creates .venv with pinned numpy and scipy)";

type Values = ArrayLike<number>;
type Kind = "numeric" | "categorical";

/** One request; every operation answers with an array of numbers. */
export type ScipyRequest =
  | { op: "ks_2samp"; a: Values; b: Values } // [statistic, pvalue]
  | { op: "kstwo_sf"; n: Values; x: Values } // stats.kstwo.sf(x, n), elementwise
  | { op: "smirnov"; n: Values; x: Values } // special.smirnov(n, x), elementwise
  | { op: "gammaln"; x: Values }
  | { op: "gammainc"; a: Values; x: Values }
  | { op: "gammaincc"; a: Values; x: Values }
  | { op: "chi2_sf"; x: Values; df: Values }
  | { op: "ndtr"; x: Values }
  | { op: "erfc"; x: Values }
  | { op: "chisquare"; f_obs: Values; f_exp: Values } // [statistic, pvalue]
  | { op: "wasserstein"; u: Values; v: Values } // [distance]
  | { op: "std"; x: Values } // [np.std(x)]
  | { op: "jensenshannon"; p: Values; q: Values; base?: number } // [distance]
  | { op: "histogram_bin_edges"; x: Values; bins: number | "sturges" } // edges
  | { op: "histogram"; x: Values; edges: Values } // counts
  | { op: "evidently_chisquare"; ref: Values; cur: Values } // [statistic, pvalue]
  | { op: "evidently_z"; ref: Values; cur: Values } // [pvalue]
  | { op: "evidently_wasserstein"; ref: Values; cur: Values } // [normed distance]
  | { op: "evidently_jensenshannon"; ref: Values; cur: Values; kind: Kind } // [distance]
  | { op: "evidently_psi"; ref: Values; cur: Values; kind: Kind }; // [psi]

const PROGRAM = String.raw`
import json, sys, warnings
warnings.simplefilter("ignore")
try:
    import numpy as np
    from scipy import special, stats
    from scipy.spatial import distance
except ImportError as e:
    sys.stderr.write("missing Python package: %s\n" % e)
    sys.exit(3)

def arr(v):
    return np.asarray([float(x) for x in v], dtype=np.float64)

def enc(x):
    x = float(x)
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return x

def binned(ref, cur, kind, fill_zeroes):
    # evidently legacy/calculations/stattests/utils.py get_binned_data, with NumPy for pandas
    if kind == "numeric" and len(np.unique(ref)) > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        rp = np.histogram(ref, bins)[0] / len(ref)
        cp = np.histogram(cur, bins)[0] / len(cur)
    else:
        keys = sorted(set(ref.tolist()) | set(cur.tolist()))
        rv, rc = np.unique(ref, return_counts=True)
        cv, cc = np.unique(cur, return_counts=True)
        rd = dict(zip(rv.tolist(), rc.tolist()))
        cd = dict(zip(cv.tolist(), cc.tolist()))
        rp = np.array([rd.get(k, 0) / len(ref) for k in keys])
        cp = np.array([cd.get(k, 0) / len(cur) for k in keys])
    if fill_zeroes:
        for p in (rp, cp):
            m = min(p[p != 0])
            np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return rp, cp

def evidently_chisquare(ref, cur):
    keys = sorted(set(ref.tolist()) | set(cur.tolist()))
    rv, rc = np.unique(ref, return_counts=True)
    cv, cc = np.unique(cur, return_counts=True)
    rd = dict(zip(rv.tolist(), rc.tolist()))
    cd = dict(zip(cv.tolist(), cc.tolist()))
    k_norm = cur.shape[0] / ref.shape[0]
    f_exp = [rd.get(k, 0) * k_norm for k in keys]
    f_obs = [cd.get(k, 0) for k in keys]
    res = stats.chisquare(f_obs, f_exp)
    return [res.statistic, res.pvalue]

def evidently_z(ref, cur):
    # evidently legacy/calculations/stattests/z_stattest.py
    if len(np.unique(ref)) == 1 and len(np.unique(cur)) == 1 and np.unique(ref)[0] == np.unique(cur)[0]:
        return [1.0]
    key = sorted(set(ref.tolist()) | set(cur.tolist()))[0]
    r = (ref != key).astype(float)
    c = (cur != key).astype(float)
    n1, n2 = len(r), len(c)
    p1, p2 = float(sum(r)) / n1, float(sum(c)) / n2
    P = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(P * (1 - P) * (1.0 / n1 + 1.0 / n2))
    return [2 * (1 - stats.norm.cdf(np.abs(z)))]

def elementwise(f, *cols):
    return [f(*args) for args in zip(*cols)]

OPS = {
    "ks_2samp": lambda r: list(stats.ks_2samp(arr(r["a"]), arr(r["b"]))[:2]),
    "kstwo_sf": lambda r: elementwise(lambda n, x: stats.kstwo.sf(x, n), arr(r["n"]), arr(r["x"])),
    "smirnov": lambda r: elementwise(lambda n, x: special.smirnov(int(n), x), arr(r["n"]), arr(r["x"])),
    "gammaln": lambda r: list(special.gammaln(arr(r["x"]))),
    "gammainc": lambda r: list(special.gammainc(arr(r["a"]), arr(r["x"]))),
    "gammaincc": lambda r: list(special.gammaincc(arr(r["a"]), arr(r["x"]))),
    "chi2_sf": lambda r: list(stats.chi2.sf(arr(r["x"]), arr(r["df"]))),
    "ndtr": lambda r: list(special.ndtr(arr(r["x"]))),
    "erfc": lambda r: list(special.erfc(arr(r["x"]))),
    "chisquare": lambda r: list(stats.chisquare(arr(r["f_obs"]), arr(r["f_exp"]))[:2]),
    "wasserstein": lambda r: [stats.wasserstein_distance(arr(r["u"]), arr(r["v"]))],
    "std": lambda r: [np.std(arr(r["x"]))],
    "jensenshannon": lambda r: [distance.jensenshannon(arr(r["p"]), arr(r["q"]), r.get("base"))],
    "histogram_bin_edges": lambda r: list(np.histogram_bin_edges(arr(r["x"]), bins=r["bins"])),
    "histogram": lambda r: list(np.histogram(arr(r["x"]), arr(r["edges"]))[0]),
    "evidently_chisquare": lambda r: evidently_chisquare(arr(r["ref"]), arr(r["cur"])),
    "evidently_z": lambda r: evidently_z(arr(r["ref"]), arr(r["cur"])),
    "evidently_wasserstein": lambda r: [
        stats.wasserstein_distance(arr(r["ref"]), arr(r["cur"])) / max(np.std(arr(r["ref"])), 0.001)
    ],
    "evidently_jensenshannon": lambda r: [
        distance.jensenshannon(*binned(arr(r["ref"]), arr(r["cur"]), r["kind"], False))
    ],
    "evidently_psi": lambda r: [
        (lambda rp, cp: float(np.sum((rp - cp) * np.log(rp / cp))))(
            *binned(arr(r["ref"]), arr(r["cur"]), r["kind"], True))
    ],
}

requests = json.load(sys.stdin)
results = [[enc(v) for v in OPS[req["op"]](req)] for req in requests]
json.dump(results, sys.stdout, allow_nan=False)
`;

function encode(value: unknown): unknown {
  if (typeof value === "number") return Number.isFinite(value) ? value : String(value);
  if (ArrayBuffer.isView(value) || Array.isArray(value))
    return Array.from(value as ArrayLike<unknown>, encode);
  return value;
}

function decode(value: unknown): number {
  if (typeof value === "number") return value;
  if (value === "NaN") return Number.NaN;
  if (value === "Infinity") return Number.POSITIVE_INFINITY;
  if (value === "-Infinity") return Number.NEGATIVE_INFINITY;
  throw new Error(`scipy helper: unexpected value ${JSON.stringify(value)}`);
}

/** True when the venv exists; tests must still fail (not skip) without it — see `scipy`. */
export function scipyAvailable(): boolean {
  return existsSync(PYTHON);
}

/**
 * Runs every request in one Python process and returns each one's numbers, in order.
 * Throws when `.venv` is missing or Python fails, with the command that sets it up.
 */
export function scipy(requests: readonly ScipyRequest[]): number[][] {
  if (!scipyAvailable()) {
    throw new Error(`SciPy reference values need ${PYTHON}, which is missing: ${SETUP_HINT}`);
  }
  const input = JSON.stringify(
    requests.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, encode(v)]))),
  );
  const run = spawnSync(PYTHON, ["-c", PROGRAM], { input, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (run.error) throw new Error(`could not run ${PYTHON}: ${run.error.message}; ${SETUP_HINT}`);
  if (run.status !== 0) {
    throw new Error(`${PYTHON} failed (exit ${run.status}): ${run.stderr.trim()}\n${SETUP_HINT}`);
  }
  const parsed = JSON.parse(run.stdout) as unknown[][];
  if (parsed.length !== requests.length) {
    throw new Error(`scipy helper: ${requests.length} requests but ${parsed.length} results`);
  }
  return parsed.map((row) => row.map(decode));
}
