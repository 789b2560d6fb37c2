import { performance } from "node:perf_hooks";
import {
  FEATURE_NAMES,
  FEATURE_SCHEMA_VERSION,
  featureMatrix,
  NUM_FEATURES,
} from "../../core/features/index.js";
import { regressionReport } from "../../core/metrics/index.js";
import { xgboostToOnnx } from "../../core/onnx/index.js";
import { type Booster, type DenseMatrix, train, xgboostVersion } from "../../core/xgboost/index.js";
import {
  ARTIFACT_NATIVE,
  ARTIFACT_ONNX,
  type ModelMetadata,
  type ModelStore,
} from "../../services/registry/model-store.js";
import { type HourlyDataset, loadHourly, selectRows } from "../data/hourly.js";
import { randomSplit, SPLIT_T, timeSplit } from "./splits.js";

export interface TrainingEvent {
  stage: "load" | "features" | "train" | "refit" | "evaluate" | "export" | "register";
  message: string;
  round?: number;
  train?: number;
  valid?: number;
}

export interface TrainingOptions {
  dataPath: string;
  store: ModelStore;
  /** XGBoost threads; defaults to every core. */
  nthread?: number;
  /** Overrides of the default parameters, e.g. { max_depth: 8 }. */
  params?: Record<string, string | number>;
  maxRounds?: number;
  earlyStoppingRounds?: number;
  onEvent?: (event: TrainingEvent) => void;
  signal?: AbortSignal;
}

/**
 * Defaults measured on split T (docs/benchmarks.md): squared error fits RMSE best here;
 * log1p, Poisson and Tweedie targets were worse on it.
 */
export const DEFAULT_PARAMS: Readonly<Record<string, string | number>> = {
  booster: "gbtree",
  tree_method: "hist",
  objective: "reg:squarederror",
  eval_metric: "rmse",
  max_depth: 6,
  eta: 0.05,
  min_child_weight: 5,
  subsample: 0.8,
  colsample_bytree: 0.9,
  seed: 42,
};

function matrixOf(data: HourlyDataset): DenseMatrix & { labels: Float32Array } {
  return {
    data: featureMatrix(data.columns),
    rows: data.columns.length,
    cols: NUM_FEATURES,
    labels: Float32Array.from(data.cnt),
  };
}

function normalisedGain(booster: Booster): Record<string, number> {
  booster.setFeatureNames([...FEATURE_NAMES]);
  const gain = booster.featureScore("total_gain");
  const total = Object.values(gain).reduce((a, b) => a + b, 0);
  // Every feature the model reads is listed, including those no split happened to use.
  return Object.fromEntries(FEATURE_NAMES.map((name) => [name, total > 0 ? (gain[name] ?? 0) / total : 0]));
}

function prefixed(prefix: string, report: ReturnType<typeof regressionReport>): Record<string, number> {
  return Object.fromEntries(Object.entries(report).map(([k, v]) => [`${prefix}_${k}`, v]));
}

/**
 * Load → validate → features → early stopping on the validation window → refit on
 * train+valid with the chosen number of rounds → test once → export ONNX → register.
 * The test window is never used for a choice.
 */
export async function runTrainingPipeline(options: TrainingOptions): Promise<ModelMetadata> {
  const started = performance.now();
  const emit = options.onEvent ?? (() => {});
  const params: Record<string, string | number> = {
    ...DEFAULT_PARAMS,
    nthread: options.nthread ?? 0,
    ...options.params,
  };

  emit({ stage: "load", message: `reading ${options.dataPath}` });
  const data = await loadHourly(options.dataPath);
  const split = timeSplit(data);
  emit({
    stage: "features",
    message: `${data.columns.length} rows: train ${split.train.length}, valid ${split.valid.length}, test ${split.test.length}`,
  });
  const trainSet = matrixOf(selectRows(data, split.train));
  const validSet = matrixOf(selectRows(data, split.valid));
  const testData = selectRows(data, split.test);
  const testSet = matrixOf(testData);

  const search = await train({
    params,
    rounds: options.maxRounds ?? 4000,
    train: trainSet,
    valid: validSet,
    earlyStoppingRounds: options.earlyStoppingRounds ?? 200,
    onRound: (e) => {
      if (e.round % 100 === 0) {
        emit({ stage: "train", message: `round ${e.round}`, round: e.round, train: e.train, valid: e.valid });
      }
    },
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const rounds = search.bestIteration + 1;
  const validReport = regressionReport(validSet.labels, search.booster.predict(validSet));
  search.booster.dispose();
  emit({
    stage: "train",
    message: `early stopping chose ${rounds} rounds, valid RMSE ${validReport.rmse.toFixed(2)}`,
  });

  // Refit on everything before the test window so the model has seen the most recent summer.
  const refitIndices = [...split.train, ...split.valid];
  const refitSet = matrixOf(selectRows(data, refitIndices));
  emit({ stage: "refit", message: `refitting on ${refitSet.rows} rows for ${rounds} rounds` });
  const final = await train({
    params,
    rounds,
    train: refitSet,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const testReport = regressionReport(testSet.labels, final.booster.predict(testSet));

  // The old stack's protocol, for comparison only: random 80/20, same parameters and rounds.
  const splitA = randomSplit(data.columns.length, 0.2, 42);
  const aTrain = matrixOf(selectRows(data, splitA.train));
  const aTest = matrixOf(selectRows(data, splitA.test));
  const aModel = await train({
    params,
    rounds,
    train: aTrain,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const splitAReport = regressionReport(aTest.labels, aModel.booster.predict(aTest));
  aModel.booster.dispose();
  emit({
    stage: "evaluate",
    message: `test RMSE ${testReport.rmse.toFixed(2)} (split T), ${splitAReport.rmse.toFixed(2)} (split A, random 80/20)`,
  });

  emit({ stage: "export", message: "exporting ONNX" });
  const nativeJson = final.booster.saveJson();
  const featureImportance = normalisedGain(final.booster);
  final.booster.dispose();
  const onnx = xgboostToOnnx(nativeJson, {
    featureNames: [...FEATURE_NAMES],
    metadata: { feature_schema_version: String(FEATURE_SCHEMA_VERSION), data_fingerprint: data.fingerprint },
  });

  const metadata = await options.store.register(
    { [ARTIFACT_NATIVE]: nativeJson, [ARTIFACT_ONNX]: onnx },
    {
      family: "gbtree",
      objective: String(params.objective),
      params,
      featureNames: [...FEATURE_NAMES],
      featureSchemaVersion: FEATURE_SCHEMA_VERSION,
      featureImportance,
      metrics: {
        ...prefixed("valid", validReport),
        ...prefixed("test", testReport),
        ...prefixed("split_a_test", splitAReport),
      },
      rows: {
        train: split.train.length,
        valid: split.valid.length,
        test: split.test.length,
        split_a_train: splitA.train.length,
        split_a_test: splitA.test.length,
      },
      split: {
        train: `dteday < ${SPLIT_T.validFrom}`,
        valid: `${SPLIT_T.validFrom} <= dteday < ${SPLIT_T.testFrom}`,
        test: `${SPLIT_T.testFrom} <= dteday < ${SPLIT_T.testUntil}`,
        fitted_on: "train + valid",
        split_a: "random 80/20, seed 42 (comparison only)",
      },
      dataFingerprint: data.fingerprint,
      dataSource: options.dataPath,
      rounds,
      xgboostVersion,
      trainingSeconds: (performance.now() - started) / 1000,
    },
  );
  emit({ stage: "register", message: `registered ${metadata.name} version ${metadata.version}` });
  return metadata;
}
