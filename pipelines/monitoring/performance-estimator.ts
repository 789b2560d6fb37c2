/**
 * Fits the direct-loss estimator (core/drift/performance-estimate.ts) of a registered model version
 * on the window its card calls "test": the first data after what the final model was fitted on
 * (train + valid), so its errors there are the honest errors of unseen hours, as NannyML asks of a
 * reference period. Done by the monitor the first time it needs a version's estimator (and stored
 * with the version), so the training pipeline stays as it is.
 */
import { fitPerformanceEstimator, type PerformanceEstimator } from "../../core/drift/performance-estimate.js";
import { dayColumn, FEATURE_NAMES, featureMatrix, withDays } from "../../core/features/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import { type HourlyDataset, loadHourly, selectRows } from "../data/hourly.js";

/** The bounds of a card's test window, written "YYYY-MM-DD <= dteday < YYYY-MM-DD". */
export function parseTestWindow(text: string | undefined): { from: string; until: string } {
  const m = /^(\d{4}-\d{2}-\d{2}) <= dteday < (\d{4}-\d{2}-\d{2})$/.exec(text ?? "");
  if (!m)
    throw new Error(
      `model card windows.test must read "FROM <= dteday < UNTIL", got ${JSON.stringify(text)}`,
    );
  return { from: m[1] as string, until: m[2] as string };
}

export interface EstimatorSource {
  /** The hourly data the version was trained from (its card's dataSource). */
  data: HourlyDataset | string;
  /** windows.test of the card. */
  testWindow: string;
  onnx: Uint8Array;
}

export async function fitEstimatorForVersion(source: EstimatorSource): Promise<PerformanceEstimator> {
  const { from, until } = parseTestWindow(source.testWindow);
  const data = typeof source.data === "string" ? await loadHourly(source.data) : source.data;
  const indices: number[] = [];
  data.dteday.forEach((d, i) => {
    if (d >= from && d < until) indices.push(i);
  });
  if (indices.length === 0) throw new Error(`no labelled hours in the test window ${source.testWindow}`);
  const rows = selectRows(data, indices);
  const features = featureMatrix(withDays(rows.columns, dayColumn(rows.dteday)));
  const model = await OnnxModel.load(source.onnx);
  let predictions: Float32Array;
  try {
    predictions = await model.predict(features, indices.length);
  } finally {
    await model.release();
  }
  return fitPerformanceEstimator(
    { names: FEATURE_NAMES, features, predictions },
    rows.cnt,
    `test window ${source.testWindow} (${indices.length} hours the model was not fitted on)`,
  );
}
