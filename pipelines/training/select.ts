/**
 * Choosing among trained candidates and turning the winner into a servable model.
 */
import { explanationSpace, type ShapImportance, shapImportance } from "../../core/explain/index.js";
import { FEATURE_NAMES, FEATURE_SCHEMA_VERSION } from "../../core/features/index.js";
import { type RegressionReport, regressionReport } from "../../core/metrics/index.js";
import { OnnxModel, xgboostToOnnx } from "../../core/onnx/index.js";
import { seededRandom } from "../../core/random/index.js";
import { type Booster, train } from "../../core/xgboost/index.js";
import { fitCalibration, type IntervalCalibration } from "./calibration.js";
import { concatRows, maskDates } from "./matrices.js";
import type { CandidateResult, FinalModel, LabelledMatrix, PreparedData, ReferenceSample } from "./types.js";
import { checkNthread, dateMaskShare, specSeed, xgboostParams } from "./xgboost-params.js";

// ---------------------------------------------------------------------------------------------------
// Selection

/**
 * The candidate with the lowest validation RMSE (`valid.rmse`: with and without dates); ties go to
 * fewer rounds (a cheaper, less fitted model), then to the earlier spec. The test window plays no part.
 */
export function chooseWinner(results: readonly CandidateResult[]): CandidateResult {
  let best: CandidateResult | undefined;
  for (const r of results) {
    if (!Number.isFinite(r.valid.rmse)) continue;
    if (
      best === undefined ||
      r.valid.rmse < best.valid.rmse ||
      (r.valid.rmse === best.valid.rmse && r.bestRounds < best.bestRounds)
    ) {
      best = r;
    }
  }
  if (best === undefined) throw new Error("chooseWinner: no candidate with a finite validation RMSE");
  return best;
}

// ---------------------------------------------------------------------------------------------------
// Finalisation

/** Maximum |ONNX − native| allowed, relative to max(1, |native|). */
export const ONNX_TOLERANCE = 1e-3;
const REFERENCE_ROWS = 5000;

function normalised(scores: Record<string, number>): Record<string, number> {
  const total = Object.values(scores).reduce((a, b) => a + b, 0);
  return Object.fromEntries(FEATURE_NAMES.map((n) => [n, total > 0 ? (scores[n] ?? 0) / total : 0]));
}

/** total_gain for trees; for gblinear (which has no gain) |weight| × the feature's standard deviation. */
function importanceOf(booster: Booster, nativeJson: string, fitted: LabelledMatrix): Record<string, number> {
  const model = JSON.parse(nativeJson) as {
    learner: { gradient_booster: { name: string; model?: { weights?: number[] } } };
  };
  const gb = model.learner.gradient_booster;
  if (gb.name !== "gblinear") return normalised(booster.featureScore("total_gain"));
  const weights = gb.model?.weights ?? [];
  const scores: Record<string, number> = {};
  FEATURE_NAMES.forEach((name, f) => {
    let n = 0;
    let sum = 0;
    let sq = 0;
    for (let r = 0; r < fitted.rows; r++) {
      const v = fitted.data[r * fitted.cols + f] as number;
      if (Number.isNaN(v)) continue;
      n++;
      sum += v;
      sq += v * v;
    }
    const sd = n > 1 ? Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2)) : 0;
    scores[name] = Math.abs(weights[f] ?? 0) * sd;
  });
  return normalised(scores);
}

function referenceSample(fitted: LabelledMatrix, predictions: Float32Array, seed: number): ReferenceSample {
  const order = Array.from({ length: fitted.rows }, (_, i) => i);
  const random = seededRandom((seed ^ 0x0005_a3b1) >>> 0);
  const take = Math.min(REFERENCE_ROWS, fitted.rows);
  // Partial Fisher–Yates: the first `take` entries are a uniform sample; kept in data order.
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random() * (fitted.rows - i));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const rows = order.slice(0, take).sort((a, b) => a - b);
  const columns: Record<string, number[]> = {};
  FEATURE_NAMES.forEach((name, f) => {
    columns[name] = rows.map((r) => fitted.data[r * fitted.cols + f] as number);
  });
  return {
    featureNames: [...FEATURE_NAMES],
    rows: take,
    columns,
    predictions: rows.map((r) => predictions[r] as number),
  };
}

/**
 * Validation rows the SHAP importance is computed on. TreeSHAP costs milliseconds a row (tens for a
 * deep forest), so the whole window (~1,500 hours) would add a minute to a training job; a seeded
 * uniform sample of 300 estimates each mean |SHAP| well within the differences between fields.
 */
export const SHAP_IMPORTANCE_ROWS = 300;

/** Mean |SHAP| of the final model on a seeded sample of the validation rows (with their dates). */
async function shapImportanceOf(
  booster: Booster,
  objective: string,
  valid: LabelledMatrix,
  validWindow: string,
  seed: number,
): Promise<ShapImportance & { window: string }> {
  const take = Math.min(SHAP_IMPORTANCE_ROWS, valid.rows);
  const random = seededRandom((seed ^ 0x05ba_9e11) >>> 0);
  const order = Array.from({ length: valid.rows }, (_, i) => i);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random() * (valid.rows - i));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const rows = order.slice(0, take).sort((a, b) => a - b);
  const data = new Float32Array(take * valid.cols);
  rows.forEach((r, i) => {
    data.set(valid.data.subarray(r * valid.cols, (r + 1) * valid.cols), i * valid.cols);
  });
  const contribs = await booster.predictContribsAsync({ data, rows: take, cols: valid.cols });
  return {
    ...shapImportance(contribs, take, explanationSpace(objective)),
    window: `${take} of ${valid.rows} validation rows (${validWindow}; seeded sample, with dates)`,
  };
}

async function checkOnnxParity(onnx: Uint8Array, booster: Booster, sets: LabelledMatrix[]): Promise<void> {
  const model = await OnnxModel.load(onnx);
  try {
    for (const m of sets) {
      const native = booster.predict(m);
      const exported = await model.predict(m.data, m.rows);
      for (let i = 0; i < m.rows; i++) {
        const n = native[i] as number;
        const diff = Math.abs((exported[i] as number) - n);
        if (!(diff <= ONNX_TOLERANCE * Math.max(1, Math.abs(n)))) {
          throw new Error(
            `ONNX export disagrees with the native model on test row ${i}: ${exported[i]} vs ${n} (|diff| ${diff})`,
          );
        }
      }
    }
  } finally {
    await model.release();
  }
}

/**
 * Refits the winner on train+valid for its bestRounds (dates masked as in its search), evaluates the
 * test window once (with and without dates), fits split A with the same params and rounds for
 * comparison, exports ONNX and checks it against the native model on the test rows.
 */
export async function finalizeWinner(
  winner: CandidateResult,
  data: PreparedData,
  hooks: { signal?: AbortSignal; nthread?: number } = {},
): Promise<FinalModel> {
  const { spec, bestRounds: rounds } = winner;
  const nthread = checkNthread(hooks.nthread);
  const seed = specSeed(spec);
  const share = dateMaskShare(spec);
  const signal = hooks.signal ? { signal: hooks.signal } : {};

  const fitted = concatRows(data.train, data.valid);
  const refitSet = maskDates(fitted, share, seed);
  const final = await train({
    params: xgboostParams(spec, refitSet.labels, nthread),
    rounds,
    train: refitSet,
    ...signal,
  });
  const booster = final.booster;
  try {
    booster.setFeatureNames([...FEATURE_NAMES]);
    const test = regressionReport(data.test.labels, booster.predict(data.test));
    const testWithoutDate = regressionReport(
      data.testWithoutDate.labels,
      booster.predict(data.testWithoutDate),
    );

    const aTrain = maskDates(data.splitA.train, share, seed);
    const aModel = await train({
      params: xgboostParams(spec, aTrain.labels, nthread),
      rounds,
      train: aTrain,
      ...signal,
    });
    let splitA: RegressionReport;
    try {
      splitA = regressionReport(data.splitA.test.labels, aModel.booster.predict(data.splitA.test));
    } finally {
      aModel.booster.dispose();
    }

    // The winner as it was searched (training rows only, same rounds and date mask): its residuals on
    // the validation rows, which it has not seen, calibrate the intervals of the final model.
    const searchSet = maskDates(data.train, share, seed);
    const searched = await train({
      params: xgboostParams(spec, searchSet.labels, nthread),
      rounds,
      train: searchSet,
      ...signal,
    });
    let calibration: IntervalCalibration;
    try {
      calibration = fitCalibration(
        `${data.windows.valid ?? "valid"} (${data.valid.rows} hours)`,
        { matrix: data.valid, predictions: searched.booster.predict(data.valid) },
        { matrix: data.validWithoutDate, predictions: searched.booster.predict(data.validWithoutDate) },
      );
    } finally {
      searched.booster.dispose();
    }

    const nativeJson = booster.saveJson();
    const onnx = xgboostToOnnx(nativeJson, {
      featureNames: [...FEATURE_NAMES],
      metadata: {
        feature_schema_version: String(FEATURE_SCHEMA_VERSION),
        data_fingerprint: data.fingerprint,
      },
    });
    await checkOnnxParity(onnx, booster, [data.test, data.testWithoutDate]);
    const featureImportance = importanceOf(booster, nativeJson, refitSet);
    const reference = referenceSample(fitted, booster.predict(fitted), seed);
    const shapImportance = await shapImportanceOf(
      booster,
      String(spec.params.objective),
      data.valid,
      data.windows.valid ?? "valid",
      seed,
    );
    return {
      nativeJson,
      onnx,
      test,
      testWithoutDate,
      splitA,
      featureImportance,
      rounds,
      reference,
      calibration,
      shapImportance,
    };
  } finally {
    booster.dispose();
  }
}
