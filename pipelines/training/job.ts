/**
 * The computing half of a training job: everything that needs CPU and no registry. It runs where
 * the executor puts it (a child process of the server, or a `bikeshare worker` process) and reports
 * progress as plain messages; the server records the outcome in its registry.
 */
import { rmse } from "../../core/metrics/index.js";
import { OnnxModel } from "../../core/onnx/index.js";
import type { RoundEvaluation } from "../../core/xgboost/index.js";
import { type HourlyDataset, loadHourly, selectRows } from "../data/hourly.js";
import { TaskCancelled } from "../jobs/cancelled.js";
import {
  type CandidateResult,
  type CandidateSpec,
  candidateSpecs,
  chooseWinner,
  type Family,
  type FinalModel,
  finalizeWinner,
  fitCandidate,
  type ObjectiveName,
  prepareData,
} from "./candidates.js";
import { windowSplit } from "./splits.js";

/** What a caller asks a training job for; stored with the job so that a restart can run it again. */
export interface TrainingRequest {
  experiment: string;
  families: string[];
  objectives: string[];
  paramOverrides: Record<string, string>;
  /** Random-search trials per family; undefined = the default search, 0 = family baselines only. */
  trials?: number;
  /** Labelled hours used: [dataFrom, dataUntil), YYYY-MM-DD. */
  dataFrom?: string;
  dataUntil?: string;
  /** Days held out at the end of the data for validation and for the test (defaults: 62 and 122, split T). */
  validDays?: number;
  testDays?: number;
  reason: string;
}

export interface TrainingInput {
  request: TrainingRequest;
  dataPath: string;
  /** XGBoost threads; 0 = every core. */
  nthread: number;
  /** The production model, evaluated on the same test window for the champion/challenger gate. */
  champion?: { version: string; onnx: Uint8Array };
}

export type TrainingProgress =
  | { type: "stage"; stage: string; progress: number; message: string }
  | { type: "candidate-start"; spec: CandidateSpec; dataFingerprint: string }
  | { type: "round"; candidate: string; round: number; train: number; valid?: number }
  | { type: "candidate-end"; spec: CandidateSpec; result: Omit<CandidateResult, "spec"> };

export interface TrainingOutcome {
  winner: CandidateResult;
  final: FinalModel;
  championRmse?: number;
  dataFingerprint: string;
  rows: Record<string, number>;
  windows: Record<string, string>;
  /** First day the final model was not fitted on (the test window starts there). */
  fittedUntil: string;
}

function windowOf(data: HourlyDataset, from?: string, until?: string): HourlyDataset {
  if (!from && !until) return data;
  const keep: number[] = [];
  data.dteday.forEach((day, i) => {
    if ((!from || day >= from) && (!until || day < until)) keep.push(i);
  });
  return selectRows(data, keep);
}

/** Fits every candidate, chooses on validation only, refits the winner and tests it (and the champion) once. */
export async function computeTraining(
  input: TrainingInput,
  report: (p: TrainingProgress) => void,
  signal: AbortSignal,
): Promise<TrainingOutcome> {
  const { request, nthread } = input;
  const checkCancelled = () => {
    if (signal.aborted) throw new TaskCancelled();
  };
  const stage = (name: string, progress: number, message: string) =>
    report({ type: "stage", stage: name, progress, message });

  stage("load", 0.02, `reading ${input.dataPath}`);
  const data = windowOf(await loadHourly(input.dataPath), request.dataFrom, request.dataUntil);
  const window = {
    ...(request.dataFrom ? { from: request.dataFrom } : {}),
    ...(request.dataUntil ? { until: request.dataUntil } : {}),
    ...(request.validDays ? { validDays: request.validDays } : {}),
    ...(request.testDays ? { testDays: request.testDays } : {}),
  };
  const prepared = prepareData(data, window);
  // The final model is fitted on train + valid: the test window is the first data it has not seen.
  const fittedUntil = windowSplit(data, window).bounds.testFrom;
  const specs = candidateSpecs({
    families: request.families.length > 0 ? (request.families as Family[]) : undefined,
    objectives: request.objectives.length > 0 ? (request.objectives as ObjectiveName[]) : undefined,
    trials: request.trials,
    overrides: request.paramOverrides,
  });
  stage("train", 0.05, `${specs.length} candidates on ${data.columns.length} labelled hours`);

  const results: CandidateResult[] = [];
  for (const [i, spec] of specs.entries()) {
    checkCancelled();
    report({ type: "candidate-start", spec, dataFingerprint: data.fingerprint });
    const onRound = (e: RoundEvaluation) =>
      report({
        type: "round",
        candidate: spec.id,
        round: e.round,
        train: e.train,
        ...(e.valid !== undefined ? { valid: e.valid } : {}),
      });
    let result: CandidateResult;
    try {
      result = await fitCandidate(spec, prepared, { signal, nthread, onRound });
    } catch (error) {
      throw signal.aborted ? new TaskCancelled() : error;
    }
    const { spec: _, ...rest } = result;
    report({ type: "candidate-end", spec, result: rest });
    results.push(result);
    stage(
      "train",
      0.05 + (0.75 * (i + 1)) / specs.length,
      `${spec.id}: valid RMSE ${result.valid.rmse.toFixed(2)}`,
    );
  }

  const winner = chooseWinner(results);
  stage(
    "refit",
    0.82,
    `winner ${winner.spec.id} (valid RMSE ${winner.valid.rmse.toFixed(2)}); refitting on train+valid`,
  );
  const final = await finalizeWinner(winner, prepared, { signal, nthread }).catch((error: unknown) => {
    throw signal.aborted ? new TaskCancelled() : error;
  });
  checkCancelled();

  let championRmse: number | undefined;
  if (input.champion) {
    const model = await OnnxModel.load(input.champion.onnx);
    try {
      championRmse = rmse(prepared.test.labels, await model.predict(prepared.test.data, prepared.test.rows));
    } finally {
      await model.release();
    }
  }
  return {
    winner,
    final,
    ...(championRmse !== undefined ? { championRmse } : {}),
    dataFingerprint: data.fingerprint,
    rows: prepared.rows,
    windows: prepared.windows,
    fittedUntil,
  };
}
