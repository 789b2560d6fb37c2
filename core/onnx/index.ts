export { CompiledModel } from "./compiled-model.js";
export {
  ONNX_IR_VERSION,
  ONNX_METADATA_KEYS,
  ONNX_ML_OPSET,
  ONNX_OPSET,
  ONNX_PRODUCER_NAME,
  ONNX_PRODUCER_VERSION,
  type OnnxExportOptions,
  type XGBoostJsonGbtreeModel,
  type XGBoostJsonGradientBooster,
  type XGBoostJsonModel,
  type XGBoostJsonTree,
  xgboostToOnnx,
} from "./export.js";
export { decodeModelSummary, encodeModel, type ModelSummary } from "./onnx-proto.js";
export { OnnxModel, type OnnxModelOptions } from "./session.js";
export { OnnxWorkerModel, type OnnxWorkerModelOptions } from "./worker-model.js";
