export {
  DATE_FIELD,
  detectInputFormat,
  formatName,
  InputError,
  type InputFormat,
  openScoringInput,
} from "./input.js";
export {
  boosterScoringModel,
  onnxFileScorer,
  onnxScoringModel,
  type RawRowsModel,
  type ScoringModel,
} from "./model.js";
export { type OutputFormat, outputFormatOf } from "./output.js";
export {
  DEFAULT_CHUNK_SIZE,
  defaultInvalidOutput,
  type ScoreFileOptions,
  type ScoringProgress,
  type ScoringSummary,
  scoreFile,
} from "./score-file.js";
