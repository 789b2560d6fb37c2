/**
 * Feature matrices for a training job: the train, validation and test windows, and split A.
 */
import {
  dayColumn,
  FEATURE_NAMES,
  featureMatrix,
  NUM_FEATURES,
  withDays,
} from "../../core/features/index.js";
import { type HourlyDataset, selectRows } from "../data/hourly.js";
import { withoutDates } from "./matrices.js";
import { randomSplit, type TrainingWindow, windowSplit } from "./splits.js";
import type { LabelledMatrix, PreparedData } from "./types.js";

function matrixOf(data: HourlyDataset, withDate: boolean): LabelledMatrix {
  const columns = withDays(data.columns, withDate ? dayColumn(data.dteday) : undefined);
  return {
    data: featureMatrix(columns),
    rows: data.columns.length,
    cols: NUM_FEATURES,
    labels: Float32Array.from(data.cnt),
  };
}

/**
 * Feature matrices for a training job. Without `window`: split T (train before 2012-07-01, valid
 * Jul–Aug 2012, test Sep–Dec 2012). With a window [from, until): test = its last `testDays` (122) days,
 * valid = the `validDays` (62) before them, train = the rest — for retraining on all labelled data so
 * far. Split A is a random 80/20 (seed 42) of the rows of the same window. The date of every hour
 * comes from `dteday`.
 */
export function prepareData(data: HourlyDataset, window?: TrainingWindow): PreparedData {
  const split = windowSplit(data, window ?? {});
  const { from, validFrom, testFrom, until } = split.bounds;
  const inWindow: number[] = [];
  data.dteday.forEach((d, i) => {
    if (d >= from && d < until) inWindow.push(i);
  });
  const a = randomSplit(inWindow.length, 0.2, 42);
  const trainData = selectRows(data, split.train);
  const validData = selectRows(data, split.valid);
  const testData = selectRows(data, split.test);
  const test = matrixOf(testData, true);
  const valid = matrixOf(validData, true);
  return {
    train: matrixOf(trainData, true),
    valid,
    validWithoutDate: withoutDates(valid),
    test,
    testWithoutDate: withoutDates(test),
    splitA: {
      train: matrixOf(
        selectRows(
          data,
          a.train.map((i) => inWindow[i] as number),
        ),
        true,
      ),
      test: matrixOf(
        selectRows(
          data,
          a.test.map((i) => inWindow[i] as number),
        ),
        true,
      ),
    },
    rows: {
      train: split.train.length,
      valid: split.valid.length,
      test: split.test.length,
      split_a_train: a.train.length,
      split_a_test: a.test.length,
    },
    fingerprint: data.fingerprint,
    windows: {
      train: `${from} <= dteday < ${validFrom}`,
      valid: `${validFrom} <= dteday < ${testFrom}`,
      test: `${testFrom} <= dteday < ${until}`,
      fitted_on: "train + valid",
      split_a: `random 80/20 of ${from} <= dteday < ${until}, seed 42 (comparison only)`,
    },
    featureNames: [...FEATURE_NAMES],
  };
}
