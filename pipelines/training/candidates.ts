/**
 * Training candidates: model families and objectives, a seeded random search over their
 * hyperparameters, fitting each candidate and choosing the best. This module is the entry point: it
 * composes the pieces (search-space.ts, prepare-data.ts, fit.ts, select.ts) and re-exports them.
 *
 * The pieces are usable one at a time — the training job reports every candidate as a registry run
 * and streams its rounds — or together through trainAndSelect:
 *
 *   const data = prepareData(await loadHourly(path));          // split T
 *   const results = [];
 *   for (const spec of candidateSpecs({})) results.push(await fitCandidate(spec, data));
 *   const final = await finalizeWinner(chooseWinner(results), data);
 *
 * Everything is reproducible given the seed and the thread count (see DEFAULT_NTHREAD).
 * Figures and the experiments behind the defaults: docs/modeling.md (`npx tsx bench/modeling.ts`).
 */
import { performance } from "node:perf_hooks";
import type { HourlyDataset } from "../data/hourly.js";
import { fitCandidate } from "./fit.js";
import { prepareData } from "./prepare-data.js";
import { candidateSpecs, type SearchOptions } from "./search-space.js";
import { chooseWinner, finalizeWinner } from "./select.js";
import type { TrainingWindow } from "./splits.js";
import type { CandidateResult, FinalModel, PreparedData } from "./types.js";

export {
  checkLevel,
  fitCalibration,
  HOUR_BAND_NAMES,
  hourBand,
  type IntervalCalibration,
  IntervalLevelError,
  intervalBounds,
  intervalRowsOf,
} from "./calibration.js";
export { fitCandidate } from "./fit.js";
export { prepareData } from "./prepare-data.js";
export {
  candidateSpecs,
  DEFAULT_SEARCH,
  FAMILIES,
  OBJECTIVES,
  type SearchOptions,
} from "./search-space.js";
export { chooseWinner, finalizeWinner, ONNX_TOLERANCE } from "./select.js";
export type { TrainingWindow } from "./splits.js";
export type {
  CandidateResult,
  CandidateSpec,
  Family,
  FinalModel,
  LabelledMatrix,
  ObjectiveName,
  PreparedData,
  ReferenceSample,
} from "./types.js";
export { DATE_MASK_SHARE, DEFAULT_NTHREAD } from "./xgboost-params.js";

export interface SelectionRun {
  data: PreparedData;
  results: CandidateResult[];
  winner: CandidateResult;
  final: FinalModel;
  /** Wall time of the search, of the finalisation, and of both. */
  seconds: { search: number; finalize: number; total: number };
}

/** prepareData → candidateSpecs → fitCandidate for each → chooseWinner → finalizeWinner. */
export async function trainAndSelect(
  dataset: HourlyDataset,
  opts: SearchOptions & {
    window?: TrainingWindow;
    nthread?: number;
    signal?: AbortSignal;
    onCandidate?: (r: CandidateResult) => void;
  } = {},
): Promise<SelectionRun> {
  const started = performance.now();
  const data = prepareData(dataset, opts.window);
  const hooks = {
    ...(opts.nthread !== undefined ? { nthread: opts.nthread } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  };
  const results: CandidateResult[] = [];
  for (const spec of candidateSpecs(opts)) {
    const r = await fitCandidate(spec, data, hooks);
    opts.onCandidate?.(r);
    results.push(r);
  }
  const searched = performance.now();
  const winner = chooseWinner(results);
  const final = await finalizeWinner(winner, data, hooks);
  const done = performance.now();
  return {
    data,
    results,
    winner,
    final,
    seconds: {
      search: (searched - started) / 1000,
      finalize: (done - searched) / 1000,
      total: (done - started) / 1000,
    },
  };
}
