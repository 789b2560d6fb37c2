/**
 * `npx tsx bench/modeling.ts [--quick] [--sections A,B,C,D,E]`: the experiments behind the model
 * defaults (docs/modeling.md). Prints Markdown and writes it to bench/out/modeling.md.
 *
 *   A  date features × date masking, gbtree baseline (no search), over 6 seeds
 *   B  feature ablations (same protocol as A)
 *   C  the default search (trainAndSelect), over 6 search seeds: winners, bars, wall time
 *   D  the first, wider gbtree search space, over the same 6 seeds
 *   E  more boosting rounds than early stopping chose, on split T and on a 2011 fold
 *
 * Every run uses split T: train < 2012-07-01, valid Jul–Aug 2012 (early stopping, every choice), refit
 * on train+valid, test Sep–Dec 2012; split A (random 80/20, seed 42) with the same params and rounds.
 * "valid" is the RMSE over the validation rows with and without their dates (what the search compares);
 * "test" is with dates, "test no date" the same hours without (an old REST client). nthread 2.
 * --quick runs seed 42 only.
 */
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  DATE_FEATURE_NAMES,
  dayNumber,
  daysSincePreviousHoliday,
  daysToNextHoliday,
  FEATURE_NAMES,
  HOLIDAY_DISTANCE_CAP,
} from "../core/features/index.js";
import { seededRandom } from "../core/random/index.js";
import { xgboostVersion } from "../core/xgboost/index.js";
import { type HourlyDataset, loadHourly, selectRows } from "../pipelines/data/hourly.js";
import {
  type CandidateResult,
  type CandidateSpec,
  candidateSpecs,
  chooseWinner,
  finalizeWinner,
  fitCandidate,
  type LabelledMatrix,
  type ObjectiveName,
  type PreparedData,
  prepareData,
  trainAndSelect,
} from "../pipelines/training/candidates.js";
import { concatRows, withoutDates } from "../pipelines/training/matrices.js";
import { randomSplit, windowSplit } from "../pipelines/training/splits.js";

const args = process.argv.slice(2);
const QUICK = args.includes("--quick");
const sectionsArg = args[args.indexOf("--sections") + 1];
const SECTIONS = new Set((args.includes("--sections") && sectionsArg ? sectionsArg : "A,B,C,D,E").split(","));
const SEEDS = QUICK ? [42] : [42, 1, 2, 3, 4, 5];
const NTHREAD = 2;
const root = join(import.meta.dirname, "..");

const out: string[] = [];
function emit(line = ""): void {
  out.push(line);
  console.log(line);
}

// ---------------------------------------------------------------------------------------------------
// Data variants

const dataset: HourlyDataset = await loadHourly(join(root, "data/raw/hour.csv"));
const base: PreparedData = prepareData(dataset);

/** Row indices of each matrix of prepareData(dataset), in the same order (same logic as prepareData). */
function rowIndices(): Record<"train" | "valid" | "test" | "aTrain" | "aTest", number[]> {
  const split = windowSplit(dataset, {});
  const { from, until } = split.bounds;
  const inWindow: number[] = [];
  dataset.dteday.forEach((d, i) => {
    if (d >= from && d < until) inWindow.push(i);
  });
  const a = randomSplit(inWindow.length, 0.2, 42);
  return {
    train: split.train,
    valid: split.valid,
    test: split.test,
    aTrain: a.train.map((i) => inWindow[i] as number),
    aTest: a.test.map((i) => inWindow[i] as number),
  };
}
const INDICES = rowIndices();
const DAYS = dataset.dteday.map(dayNumber);

/** A copy of the prepared data with the date feature columns recomputed by `value` (or dropped: constant 0). */
function withDateFeatures(value: (feature: string, day: number) => number): PreparedData {
  const patch = (m: LabelledMatrix, rows: number[]): LabelledMatrix => {
    const data = m.data.slice();
    for (const name of DATE_FEATURE_NAMES) {
      const f = FEATURE_NAMES.indexOf(name);
      rows.forEach((row, r) => {
        data[r * m.cols + f] = value(name, DAYS[row] as number);
      });
    }
    return { ...m, data };
  };
  const valid = patch(base.valid, INDICES.valid);
  const test = patch(base.test, INDICES.test);
  return {
    ...base,
    train: patch(base.train, INDICES.train),
    valid,
    validWithoutDate: withoutDates(valid),
    test,
    testWithoutDate: withoutDates(test),
    splitA: { train: patch(base.splitA.train, INDICES.aTrain), test: patch(base.splitA.test, INDICES.aTest) },
  };
}

const uncapped = withDateFeatures((name, day) =>
  name === "days_to_holiday"
    ? daysToNextHoliday(day)
    : name === "days_since_holiday"
      ? daysSincePreviousHoliday(day)
      : yearEnd(day),
);
function yearEnd(day: number): number {
  const d = new Date(day * 86_400_000);
  return (d.getUTCMonth() === 11 && d.getUTCDate() >= 20) || (d.getUTCMonth() === 0 && d.getUTCDate() === 1)
    ? 1
    : 0;
}
const ablation = (keep: readonly string[], cap = HOLIDAY_DISTANCE_CAP): PreparedData =>
  withDateFeatures((name, day) => {
    if (!keep.includes(name)) return 0;
    if (name === "year_end_break") return yearEnd(day);
    return Math.min(cap, name === "days_to_holiday" ? daysToNextHoliday(day) : daysSincePreviousHoliday(day));
  });

/** Every training row twice, with and without its date (instead of masking a share). */
function duplicated(data: PreparedData): PreparedData {
  const dup = (m: LabelledMatrix) => concatRows(m, withoutDates(m));
  return {
    ...data,
    train: dup(data.train),
    splitA: { train: dup(data.splitA.train), test: data.splitA.test },
  };
}

// ---------------------------------------------------------------------------------------------------
// Runs

interface Row {
  valid: number;
  validDate: number;
  validNoDate: number;
  test: number;
  testNoDate: number;
  splitA: number;
  rounds: number;
  seconds: number;
  winner?: string;
}

async function run(spec: CandidateSpec, data: PreparedData): Promise<Row> {
  const started = performance.now();
  const r = await fitCandidate(spec, data, { nthread: NTHREAD });
  const f = await finalizeWinner(r, data, { nthread: NTHREAD });
  return row(r, f, (performance.now() - started) / 1000);
}

function row(r: CandidateResult, f: Awaited<ReturnType<typeof finalizeWinner>>, seconds: number): Row {
  return {
    valid: r.valid.rmse,
    validDate: r.validWithDate.rmse,
    validNoDate: r.validWithoutDate.rmse,
    test: f.test.rmse,
    testNoDate: f.testWithoutDate?.rmse ?? Number.NaN,
    splitA: f.splitA.rmse,
    rounds: r.bestRounds,
    seconds,
    winner: r.spec.id,
  };
}

function baseline(seed: number, overrides: Record<string, string | number> = {}, objective?: ObjectiveName) {
  const spec = candidateSpecs({
    families: ["gbtree"],
    ...(objective ? { objectives: [objective] } : {}),
    trials: 0,
    seed,
    overrides,
  })[0];
  if (!spec) throw new Error("no baseline spec");
  return spec;
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "–");
function summary(rows: Row[], key: keyof Row, d = 2): string {
  const v = rows.map((r) => r[key] as number);
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  if (v.length === 1) return fmt(mean, d);
  return `${fmt(mean, d)} (${fmt(Math.min(...v), d)}–${fmt(Math.max(...v), d)})`;
}

const HEADER =
  "| variant | valid (both) | valid with date | valid no date | **test** | **test no date** | split A | rounds | s / seed |";
const RULE = "|---|---|---|---|---|---|---|---|---|";
function line(name: string, rows: Row[]): string {
  return `| ${name} | ${summary(rows, "valid")} | ${summary(rows, "validDate")} | ${summary(rows, "validNoDate")} | ${summary(rows, "test")} | ${summary(rows, "testNoDate")} | ${summary(rows, "splitA")} | ${summary(rows, "rounds", 0)} | ${summary(rows, "seconds", 1)} |`;
}

async function variantTable(variants: [string, (seed: number) => Promise<Row>][]): Promise<void> {
  emit(HEADER);
  emit(RULE);
  for (const [name, fn] of variants) {
    const rows: Row[] = [];
    for (const seed of SEEDS) rows.push(await fn(seed));
    emit(line(name, rows));
  }
  emit();
}

const cpu = os.cpus()[0]?.model ?? "unknown CPU";
emit(
  `Generated by \`npx tsx bench/modeling.ts${QUICK ? " --quick" : ""}\` on ${new Date().toISOString().slice(0, 10)}.`,
);
emit(
  `Machine: ${cpu}, ${os.cpus().length} cores, Node ${process.version}, libxgboost ${xgboostVersion}, nthread ${NTHREAD}.`,
);
emit(
  `Seeds: ${SEEDS.join(", ")} — each cell is the mean over seeds (min–max); the seed drives XGBoost's sampling and the date mask.`,
);
emit();

if (SECTIONS.has("A")) {
  emit("### A. Date features and how the model learns to do without them (gbtree baseline, no search)");
  emit();
  await variantTable([
    ["no date features (every row masked)", (s) => run(baseline(s, { date_mask_share: 1 }), base)],
    [
      "uncapped holiday distances + year-end, no mask",
      (s) => run(baseline(s, { date_mask_share: 0 }), uncapped),
    ],
    ["distances capped at 7 + year-end, no mask", (s) => run(baseline(s, { date_mask_share: 0 }), base)],
    ["capped, mask 25% of rows", (s) => run(baseline(s, { date_mask_share: 0.25 }), base)],
    ["capped, mask 40% of rows", (s) => run(baseline(s, { date_mask_share: 0.4 }), base)],
    ["**capped, mask 50% of rows (default)**", (s) => run(baseline(s), base)],
    [
      "capped, every row twice (with and without date)",
      (s) => run(baseline(s, { date_mask_share: 0 }), duplicated(base)),
    ],
    ["default, count:poisson", (s) => run(baseline(s, {}, "poisson"), base)],
    ["default, reg:tweedie (power 1.5)", (s) => run(baseline(s, {}, "tweedie"), base)],
    ["default, num_parallel_tree 2 (2× time)", (s) => run(baseline(s, { num_parallel_tree: 2 }), base)],
  ]);
}

if (SECTIONS.has("B")) {
  emit("### B. Which date features (gbtree baseline, mask 50%)");
  emit();
  await variantTable([
    ["**days to/since holiday ≤ 7 + year-end break (default)**", (s) => run(baseline(s), base)],
    [
      "distances capped at 3 + year-end",
      (s) => run(baseline(s), ablation(["days_to_holiday", "days_since_holiday", "year_end_break"], 3)),
    ],
    [
      "days since holiday ≤ 7 + year-end",
      (s) => run(baseline(s), ablation(["days_since_holiday", "year_end_break"])),
    ],
    ["year-end break only", (s) => run(baseline(s), ablation(["year_end_break"]))],
    [
      "distances ≤ 7, no year-end",
      (s) => run(baseline(s), ablation(["days_to_holiday", "days_since_holiday"])),
    ],
  ]);
}

async function search(seed: number, specs?: CandidateSpec[]): Promise<Row> {
  const started = performance.now();
  if (!specs) {
    const r = await trainAndSelect(dataset, { seed, nthread: NTHREAD });
    return { ...row(r.winner, r.final, r.seconds.total) };
  }
  const results: CandidateResult[] = [];
  for (const spec of specs) results.push(await fitCandidate(spec, base, { nthread: NTHREAD }));
  const winner = chooseWinner(results);
  const final = await finalizeWinner(winner, base, { nthread: NTHREAD });
  return row(winner, final, (performance.now() - started) / 1000);
}

function searchTable(rows: [number, Row][]): void {
  emit("| search seed | winner | rounds | valid (both) | **test** | **test no date** | split A | wall s |");
  emit("|---|---|---|---|---|---|---|---|");
  for (const [seed, r] of rows) {
    emit(
      `| ${seed} | ${r.winner} | ${r.rounds} | ${fmt(r.valid)} | ${fmt(r.test)} | ${fmt(r.testNoDate)} | ${fmt(r.splitA)} | ${fmt(r.seconds, 1)} |`,
    );
  }
  const mean = (k: keyof Row) => rows.reduce((a, [, r]) => a + (r[k] as number), 0) / rows.length;
  if (rows.length > 1) {
    emit(
      `| mean | | ${fmt(mean("rounds"), 0)} | ${fmt(mean("valid"))} | ${fmt(mean("test"))} | ${fmt(mean("testNoDate"))} | ${fmt(mean("splitA"))} | ${fmt(mean("seconds"), 1)} |`,
    );
  }
  emit();
}

if (SECTIONS.has("C")) {
  emit(
    "### C. The default search (3 families × squared error × (baseline + 4 trials), then refit, split A, ONNX)",
  );
  emit();
  const rows: [number, Row][] = [];
  for (const seed of SEEDS) rows.push([seed, await search(seed)]);
  searchTable(rows);
}

/** The first gbtree space: depth 5–8, eta 0.03–0.08, min_child_weight 2–20, subsample 0.6–0.95, colsample 0.6–1, lambda 0.3–10. */
function wideSpecs(seed: number): CandidateSpec[] {
  const random = seededRandom((seed * 31 + 1) >>> 0);
  const u = (lo: number, hi: number) => Number((lo + (hi - lo) * random()).toPrecision(4));
  const lu = (lo: number, hi: number) =>
    Number(Math.exp(Math.log(lo) + (Math.log(hi) - Math.log(lo)) * random()).toPrecision(4));
  return candidateSpecs({ seed }).map((spec) => {
    if (spec.family !== "gbtree" || spec.id === "gbtree#0") return spec;
    const params = {
      ...spec.params,
      max_depth: 5 + Math.floor(random() * 4),
      eta: lu(0.03, 0.08),
      min_child_weight: lu(2, 20),
      subsample: u(0.6, 0.95),
      colsample_bytree: u(0.6, 1),
      reg_lambda: lu(0.3, 10),
    };
    return { ...spec, params };
  });
}

if (SECTIONS.has("D")) {
  emit(
    "### D. The first, wider gbtree space (depth 5–8, min_child_weight 2–20, lambda 0.3–10), same protocol as C",
  );
  emit();
  const rows: [number, Row][] = [];
  for (const seed of SEEDS) {
    const r = await search(seed, wideSpecs(seed));
    const spec = wideSpecs(seed).find((s) => s.id === r.winner);
    rows.push([
      seed,
      { ...r, winner: `${r.winner} (depth ${spec?.params.max_depth}, mcw ${spec?.params.min_child_weight})` },
    ]);
  }
  searchTable(rows);
}

if (SECTIONS.has("E")) {
  emit("### E. More rounds than early stopping chose (not adopted: only the test window says so)");
  emit();
  const keep: number[] = [];
  dataset.dteday.forEach((d, i) => {
    if (d < "2012-01-01") keep.push(i);
  });
  // A fold that never touches 2012's test window: train < 2011-07-01, valid Jul–Aug 2011, test Sep–Dec 2011.
  const fold2011 = prepareData(selectRows(dataset, keep));
  const specs: [string, CandidateSpec][] = [["gbtree baseline, seed 42", baseline(42)]];
  const wide = wideSpecs(2).find((s) => s.id === "gbtree#3");
  if (wide && !QUICK) specs.push(["wide-space winner of seed 2 (depth 5, eta 0.073)", wide]);
  emit("| model | data | ES rounds | test ×1 | ×1.5 | ×2 | ×3 (test no date in brackets) |");
  emit("|---|---|---|---|---|---|---|");
  for (const [name, spec] of specs) {
    for (const [label, data] of [
      ["split T (test Sep–Dec 2012)", base],
      ["2011 fold (test Sep–Dec 2011)", fold2011],
    ] as const) {
      const r = await fitCandidate(spec, data, { nthread: NTHREAD });
      const cells: string[] = [];
      for (const k of [1, 1.5, 2, 3]) {
        const f = await finalizeWinner({ ...r, bestRounds: Math.round(r.bestRounds * k) }, data, {
          nthread: NTHREAD,
        });
        cells.push(`${fmt(f.test.rmse)} (${fmt(f.testWithoutDate?.rmse ?? Number.NaN)})`);
      }
      emit(`| ${name} | ${label} | ${r.bestRounds} | ${cells.join(" | ")} |`);
    }
  }
  emit();
}

await mkdir(join(root, "bench/out"), { recursive: true });
await writeFile(join(root, "bench/out/modeling.md"), `${out.join("\n")}\n`);
