/** The scoring task that jobs run (in a child process of the server, or on a `bikeshare worker`). */
import { OnnxWorkerModel } from "../../core/onnx/index.js";
import { TaskCancelled } from "../jobs/cancelled.js";
import { onnxScoringModel } from "./model.js";
import { type ScoringProgress, type ScoringSummary, scoreFile } from "./score-file.js";

export interface ScoringTaskInput {
  /** Absolute paths on the machine that runs the task. */
  input: string;
  output: string;
  invalidOutput: string;
  /** The model to score with (the production version's ONNX artifact). */
  onnx: Uint8Array;
}

export async function computeScoring(
  input: ScoringTaskInput,
  report: (progress: ScoringProgress) => void,
  signal: AbortSignal,
): Promise<ScoringSummary> {
  const model = await OnnxWorkerModel.load(input.onnx);
  try {
    return await scoreFile({
      input: input.input,
      output: input.output,
      invalidOutput: input.invalidOutput,
      model: onnxScoringModel(model),
      signal,
      onProgress: report,
    });
  } catch (error) {
    throw signal.aborted ? new TaskCancelled() : error;
  } finally {
    await model.release();
  }
}
