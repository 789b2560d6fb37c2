/**
 * Regression metrics for demand forecasts. Inputs are parallel arrays of actual
 * counts and predictions; every function rejects empty or mismatched inputs
 * rather than returning NaN that would then be stored as a model's score.
 */

function checkInputs(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  if (actual.length !== predicted.length) {
    throw new Error(`actual has ${actual.length} values but predicted has ${predicted.length}`);
  }
  if (actual.length === 0) throw new Error("metrics need at least one value");
  return actual.length;
}

export function rmse(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  const n = checkInputs(actual, predicted);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const d = (actual[i] as number) - (predicted[i] as number);
    sum += d * d;
  }
  return Math.sqrt(sum / n);
}

export function mae(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  const n = checkInputs(actual, predicted);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.abs((actual[i] as number) - (predicted[i] as number));
  return sum / n;
}

/** Coefficient of determination; 1 is perfect, 0 is as good as predicting the mean. */
export function r2(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  const n = checkInputs(actual, predicted);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += actual[i] as number;
  mean /= n;
  let ssRes = 0;
  let ssTot = 0;
  for (let i = 0; i < n; i++) {
    const a = actual[i] as number;
    ssRes += (a - (predicted[i] as number)) ** 2;
    ssTot += (a - mean) ** 2;
  }
  if (ssTot === 0) throw new Error("r2 is undefined when every actual value is the same");
  return 1 - ssRes / ssTot;
}

/** Root mean squared log error; negative predictions count as 0, as a demand cannot be negative. */
export function rmsle(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  const n = checkInputs(actual, predicted);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const a = actual[i] as number;
    if (a < 0) throw new Error(`rmsle needs non-negative actual values, got ${a} at index ${i}`);
    const d = Math.log1p(Math.max(0, predicted[i] as number)) - Math.log1p(a);
    sum += d * d;
  }
  return Math.sqrt(sum / n);
}

/**
 * Share of predictions within ±20% of the actual count. An hour with 0 rentals counts
 * as a hit only when the prediction is below 1 bike, since 20% of zero is zero.
 */
export function within20Percent(actual: ArrayLike<number>, predicted: ArrayLike<number>): number {
  const n = checkInputs(actual, predicted);
  let hits = 0;
  for (let i = 0; i < n; i++) {
    const a = actual[i] as number;
    const tolerance = a === 0 ? 1 : 0.2 * Math.abs(a);
    if (Math.abs((predicted[i] as number) - a) <= tolerance) hits++;
  }
  return hits / n;
}

export interface RegressionReport {
  rmse: number;
  mae: number;
  r2: number;
  rmsle: number;
  within20: number;
  n: number;
}

export function regressionReport(actual: ArrayLike<number>, predicted: ArrayLike<number>): RegressionReport {
  return {
    rmse: rmse(actual, predicted),
    mae: mae(actual, predicted),
    r2: r2(actual, predicted),
    rmsle: rmsle(actual, predicted),
    within20: within20Percent(actual, predicted),
    n: actual.length,
  };
}
