/**
 * Prediction intervals on split T test (Sep–Dec 2012), the "Prediction intervals" section of
 * docs/benchmarks.md: the default training search end to end (its winner's calibration on the
 * validation window, the refit on train+valid), then the coverage and mean width of 80/90/95% bands on
 * the test hours, overall and per hour band, with and without the date; beside the old API's band, a
 * random forest of this project's RF family (the baseline spec, fitted on train+valid) ± 1.96 σ of its
 * trees' predictions.
 * Usage: npx tsx bench/intervals.ts (also a step of `npm run bench` unless BENCH_INTERVALS=0).
 */
import { FEATURE_NAMES } from "../core/features/index.js";
import { OnnxModel } from "../core/onnx/index.js";
import { train } from "../core/xgboost/index.js";
import { loadHourly } from "../pipelines/data/hourly.js";
import {
  candidateSpecs,
  HOUR_BAND_NAMES,
  hourBand,
  type IntervalCalibration,
  intervalBounds,
  intervalRowsOf,
  type LabelledMatrix,
  trainAndSelect,
} from "../pipelines/training/candidates.js";
import { concatRows } from "../pipelines/training/matrices.js";
import { xgboostParams } from "../pipelines/training/xgboost-params.js";
import { HOUR_CSV } from "../tests/helpers/hour-csv.js";
import { docSection } from "./doc-section.js";

const section = docSection("intervals");
const LEVELS = [0.8, 0.9, 0.95];
const HR = FEATURE_NAMES.indexOf("hr");

interface Coverage {
  covered: number;
  width: number;
  rows: number;
}

function coverageByBand(
  m: LabelledMatrix,
  lower: ArrayLike<number>,
  upper: ArrayLike<number>,
): { overall: Coverage; bands: Coverage[] } {
  const overall = { covered: 0, width: 0, rows: 0 };
  const bands = HOUR_BAND_NAMES.map(() => ({ covered: 0, width: 0, rows: 0 }));
  for (let r = 0; r < m.rows; r++) {
    const y = m.labels[r] as number;
    const hit = y >= (lower[r] as number) && y <= (upper[r] as number) ? 1 : 0;
    const width = (upper[r] as number) - (lower[r] as number);
    for (const c of [overall, bands[hourBand(m.data[r * m.cols + HR] as number)] as Coverage]) {
      c.covered += hit;
      c.width += width;
      c.rows++;
    }
  }
  return { overall, bands };
}

const pct = (c: Coverage) => `${((100 * c.covered) / c.rows).toFixed(1)}%`;
const width = (c: Coverage) => (c.width / c.rows).toFixed(0);

interface TreeNode {
  left_children: number[];
  right_children: number[];
  split_indices: number[];
  split_conditions: number[];
  default_left: number[];
}

/**
 * Each tree's own prediction: the addon predicts whole rounds only, and a forest is one round of
 * `num_parallel_tree` trees, so the trees are walked from the model's JSON. XGBoost scales each
 * parallel tree's leaves by 1/num_parallel_tree, so a tree's own forecast is base + K × leaf (their mean
 * is the forest's prediction, checked below).
 */
function perTreePredictions(nativeJson: string, m: LabelledMatrix): { trees: Float64Array[]; base: number } {
  const model = JSON.parse(nativeJson) as {
    learner: {
      learner_model_param: { base_score: string };
      gradient_booster: { model: { trees: TreeNode[] } };
    };
  };
  const base = Number(model.learner.learner_model_param.base_score);
  const trees = model.learner.gradient_booster.model.trees;
  const k = trees.length;
  return {
    base,
    trees: trees.map((t) => {
      const out = new Float64Array(m.rows);
      for (let r = 0; r < m.rows; r++) {
        let node = 0;
        while ((t.left_children[node] as number) !== -1) {
          const v = m.data[r * m.cols + (t.split_indices[node] as number)] as number;
          // XGBoost compares in float32: the JSON's decimal threshold must be rounded to it first.
          const goLeft = Number.isNaN(v)
            ? t.default_left[node] === 1
            : v < Math.fround(t.split_conditions[node] as number);
          node = goLeft ? (t.left_children[node] as number) : (t.right_children[node] as number);
        }
        out[r] = base + k * (t.split_conditions[node] as number);
      }
      return out;
    }),
  };
}

async function rfBand(train_: LabelledMatrix, test: LabelledMatrix) {
  const [spec] = candidateSpecs({ families: ["random_forest"], trials: 0 });
  if (!spec) throw new Error("no random-forest baseline spec");
  const fitted = await train({ params: xgboostParams(spec, train_.labels, 2), rounds: 1, train: train_ });
  try {
    const forest = fitted.booster.predict(test);
    const { trees } = perTreePredictions(fitted.booster.saveJson(), test);
    const lower = new Float64Array(test.rows);
    const upper = new Float64Array(test.rows);
    let maxGap = 0;
    for (let r = 0; r < test.rows; r++) {
      let sum = 0;
      let sq = 0;
      for (const t of trees) {
        sum += t[r] as number;
        sq += (t[r] as number) ** 2;
      }
      const mean = sum / trees.length;
      maxGap = Math.max(maxGap, Math.abs(mean - (forest[r] as number)));
      const sd = Math.sqrt(Math.max(0, sq / trees.length - mean * mean));
      // The old API's band: the forest's prediction ± 1.96 σ of the trees, not clipped.
      lower[r] = (forest[r] as number) - 1.96 * sd;
      upper[r] = (forest[r] as number) + 1.96 * sd;
    }
    if (maxGap > 0.05) throw new Error(`per-tree mean differs from the forest's prediction by ${maxGap}`);
    return { ...coverageByBand(test, lower, upper), trees: trees.length, maxGap };
  } finally {
    fitted.booster.dispose();
  }
}

export async function intervalsBenchmark(): Promise<string> {
  const dataset = await loadHourly(HOUR_CSV);
  const started = performance.now();
  const run = await trainAndSelect(dataset, { nthread: 2 });
  const searchSeconds = (performance.now() - started) / 1000;
  const { data, final, winner } = run;
  const calibration: IntervalCalibration = final.calibration;
  const onnx = await OnnxModel.load(final.onnx);
  const results: { name: string; level: number; overall: Coverage; bands: Coverage[] }[] = [];
  try {
    for (const [name, m, dated] of [
      ["with the date", data.test, true],
      ["without the date", data.testWithoutDate, false],
    ] as const) {
      const predictions = await onnx.predict(m.data, m.rows);
      for (const level of LEVELS) {
        const { lower, upper } = intervalBounds(calibration, intervalRowsOf(m, dated), predictions, level);
        results.push({ name, level, ...coverageByBand(m, lower, upper) });
      }
    }
  } finally {
    await onnx.release();
  }
  const rf = await rfBand(concatRows(data.train, data.valid), data.test);

  const rows = results.map(
    (r) =>
      `| ${r.name} | ${Math.round(r.level * 100)}% | **${pct(r.overall)}** | ${r.bands.map(pct).join(" | ")} | ${width(r.overall)} | ${r.bands.map(width).join(" / ")} |`,
  );
  const groups = Object.entries(calibration.dated.groups)
    .map(([k, v]) => `${k}: ${v.length}`)
    .join(", ");
  const date = new Date().toISOString().slice(0, 10);
  const at90 = results.find((r) => r.name === "with the date" && r.level === 0.9);
  if (!at90) throw new Error("no 90% result");
  const lowestBand = Math.min(...at90.bands.map((b) => b.covered / b.rows));
  const goalMet = at90.overall.covered / at90.overall.rows;
  const verdict = goalMet >= 0.88 && goalMet <= 0.92 && lowestBand >= 0.8 ? "met" : "**not met**";
  return `${section.start}
## Prediction intervals (split T test, Sep–Dec 2012)

Measured ${date} by \`npx tsx bench/intervals.ts\` (${searchSeconds.toFixed(0)} s: the default search, 2 threads).
The model is the default training job's winner (${winner.spec.id}, refitted on train+valid). Its intervals are
split conformal, Mondrian by working day × hour band (pipelines/training/calibration.ts): the absolute
residuals |y − ŷ| (scale power ${calibration.scalePower}) of the searched winner (fitted on the training rows only) on the validation
window it was not fitted on, ${calibration.window}; a group with fewer than ${calibration.minGroupScores} scores would use
the pooled quantile (groups \`workingday:band\` with their scores: ${groups}). The test window plays no part.
Rows without a date use the scores computed without it.

Coverage on the ${data.test.rows} test hours, overall and per hour band (${HOUR_BAND_NAMES.join(", ")}), and mean width (rentals):

| rows | level | coverage | ${HOUR_BAND_NAMES.join(" | ")} | mean width | width per band |
|---|---|---|${HOUR_BAND_NAMES.map(() => "---").join("|")}|---|---|
${rows.join("\n")}

Goal of issue 15 (90% intervals cover 88–92% overall, no hour band below 80%): ${verdict} — ${pct(at90.overall)},
lowest band ${(100 * lowestBand).toFixed(1)}%. A score scaled by the prediction (|y − ŷ| / sqrt(ŷ + 10), same groups)
was tried and dropped: 86.5% at 90% with the 06–09 band at 80.6%, for a mean width of 152 instead of 165 —
the summer validation window's errors relative to ŷ are smaller than the autumn test's.

The old API's band on the same hours: a random forest of this project's RF family (the baseline spec,
${rf.trees} trees, fitted on train+valid) ± 1.96 σ, σ the standard deviation of its trees' own forecasts.
The addon predicts whole rounds only and the forest is one round, so each tree is evaluated from the
model's JSON (base + ${rf.trees} × its leaf; the mean of the trees equals the forest's prediction within
${rf.maxGap.toExponential(1)}):

| band | coverage | ${HOUR_BAND_NAMES.join(" | ")} | mean width |
|---|---|${HOUR_BAND_NAMES.map(() => "---").join("|")}|---|
| RF ± 1.96 σ (nominal 95%) | **${pct(rf.overall)}** | ${rf.bands.map(pct).join(" | ")} | ${width(rf.overall)} |

\`prediction_std\` of the legacy \`/predict/confidence\` is (upper − lower) / (2 z), z the normal quantile of
the level: the calibrated band read back under a normal assumption, not a measured spread.
${section.end}
`;
}

export const currentIntervalsSection = () => section.current();
export const writeIntervalsSection = (text: string) => section.write(text);

section.runIfMain(import.meta.url, intervalsBenchmark);
