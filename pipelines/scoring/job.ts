/** The scoring task that jobs run (in a child process of the server, or on a `bikeshare worker`). */
import { TaskCancelled } from "../jobs/cancelled.js";
import { type IntervalCalibration, intervalBounds } from "../training/calibration.js";
import { onnxFileScorer } from "./model.js";
import { type ScoringProgress, type ScoringSummary, scoreFile } from "./score-file.js";

export interface ScoringTaskInput {
  /** Absolute paths on the machine that runs the task. */
  input: string;
  output: string;
  invalidOutput: string;
  /** The model to score with (the production version's ONNX artifact). */
  onnx: Uint8Array;
  /** When set, `lower`/`upper` columns at this level from `calibration` (the version's model card). */
  interval?: { level: number; calibration: IntervalCalibration };
}

export async function computeScoring(
  input: ScoringTaskInput,
  report: (progress: ScoringProgress) => void,
  signal: AbortSignal,
): Promise<ScoringSummary> {
  // One thread: a job shares its machine with the server or with other jobs.
  const { model, concurrency, release } = await onnxFileScorer(input.onnx, 1);
  const interval = input.interval;
  try {
    return await scoreFile({
      input: input.input,
      output: input.output,
      invalidOutput: input.invalidOutput,
      model,
      concurrency,
      signal,
      onProgress: report,
      ...(interval
        ? {
            interval: (columns, predictions) =>
              intervalBounds(interval.calibration, columns, predictions, interval.level),
          }
        : {}),
    });
  } catch (error) {
    throw signal.aborted ? new TaskCancelled() : error;
  } finally {
    await release();
  }
}
