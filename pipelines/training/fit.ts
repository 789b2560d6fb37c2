/**
 * Fitting one candidate, early-stopped on the validation rows.
 */
import { performance } from "node:perf_hooks";
import { regressionReport } from "../../core/metrics/index.js";
import { type RoundEvaluation, train } from "../../core/xgboost/index.js";
import { concatRows, maskDates } from "./matrices.js";
import { FAMILY_DEFS } from "./search-space.js";
import type { CandidateResult, CandidateSpec, PreparedData } from "./types.js";
import { checkNthread, dateMaskShare, specSeed, xgboostParams } from "./xgboost-params.js";

/**
 * Trains one candidate on the training rows (a seeded share with their dates hidden) and early-stops
 * on the validation rows with and without dates (see CandidateResult.valid). A random forest is one
 * round and is not early-stopped.
 */
export async function fitCandidate(
  spec: CandidateSpec,
  data: PreparedData,
  hooks: { onRound?: (e: RoundEvaluation) => void; signal?: AbortSignal; nthread?: number } = {},
): Promise<CandidateResult> {
  const started = performance.now();
  const def = FAMILY_DEFS[spec.family];
  if (def === undefined) throw new Error(`unknown family ${JSON.stringify(spec.family)}`);
  const nthread = checkNthread(hooks.nthread);
  const trainSet = maskDates(data.train, dateMaskShare(spec), specSeed(spec));
  const validSet = concatRows(data.valid, data.validWithoutDate);
  const params = xgboostParams(spec, trainSet.labels, nthread);
  const eta = Number(params.eta ?? params.learning_rate ?? 0.3);
  const patience = def.patience?.(eta);
  const result = await train({
    params,
    rounds: def.maxRounds,
    train: trainSet,
    valid: validSet,
    ...(patience !== undefined ? { earlyStoppingRounds: patience } : {}),
    ...(hooks.onRound ? { onRound: hooks.onRound } : {}),
    ...(hooks.signal ? { signal: hooks.signal } : {}),
  });
  try {
    const predictions = result.booster.predict(validSet);
    const n = data.valid.rows;
    return {
      spec,
      bestRounds: result.bestIteration + 1,
      valid: regressionReport(validSet.labels, predictions),
      validWithDate: regressionReport(data.valid.labels, predictions.subarray(0, n)),
      validWithoutDate: regressionReport(data.validWithoutDate.labels, predictions.subarray(n)),
      history: result.history,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    result.booster.dispose();
  }
}
