/**
 * What REST and gRPC share of the Open Inference Protocol v2: the server and model metadata, which
 * model and version a request may name, and an inference through the serving path (`requireModel`,
 * `ServingModel.predict`, `onServed`): the same model, checks and prediction log as Predict.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BikeshareError } from "../../core/errors.js";
import { recordsToColumns } from "../../core/features/index.js";
import { projectRoot } from "../config.js";
import { type ModelSlot, type OnServed, requireModel } from "../predict/predict-service.js";
import type { ServingModel } from "../predict/serving-model.js";
import {
  decodeRows,
  INPUT_METADATA,
  type InputTensor,
  OUTPUT_METADATA,
  OUTPUT_TENSOR,
  tensorError,
} from "./tensors.js";

export interface OipOptions {
  slot: ModelSlot;
  onServed: OnServed;
  maxBatchSize: number;
}

/** ONNX Runtime runs the model, as on a Triton `onnxruntime_onnx` backend. */
const PLATFORM = "onnxruntime_onnx";

let serverVersion: string | undefined;

export function serverMetadata() {
  serverVersion ??= (
    JSON.parse(readFileSync(join(projectRoot(), "package.json"), "utf8")) as { version: string }
  ).version;
  return { name: "bikeshare", version: serverVersion, extensions: ["binary_tensor_data"] };
}

const quote = (text: string) => JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);

/**
 * The served model when `name` and `version` name it: the model behind the `production` alias, by its
 * registry name and its version number (or "production", or no version). Anything else is `not_found`
 * saying what is served; no model loaded yet is `unavailable`.
 */
export function resolveModel(slot: ModelSlot, name: string, version: string | undefined): ServingModel {
  const model = requireModel(slot);
  if (name !== model.name)
    throw new BikeshareError(
      "not_found",
      `model ${quote(name)} is not served here; this server serves ${quote(model.name)}`,
    );
  if (version && version !== model.version && version !== "production")
    throw new BikeshareError(
      "not_found",
      `model ${quote(name)} version ${quote(version)} is not served; this server serves version ${model.version} (the production alias) only`,
    );
  return model;
}

/** Ready when the named model is loaded; a name or version that is not served is still `not_found`. */
export function modelReady(slot: ModelSlot, name: string, version: string | undefined): boolean {
  if (slot.current === undefined) return false;
  resolveModel(slot, name, version);
  return true;
}

export function modelMetadata(model: ServingModel) {
  return {
    name: model.name,
    versions: [model.version],
    platform: PLATFORM,
    inputs: INPUT_METADATA.map((t) => ({ ...t, shape: [...t.shape] })),
    outputs: OUTPUT_METADATA.map((t) => ({ ...t, shape: [...t.shape] })),
  };
}

/** The outputs a request may ask for: only `cnt`, which is also what it gets when it names none. */
export function checkRequestedOutputs(names: readonly string[]): void {
  for (const name of names) {
    if (name !== OUTPUT_TENSOR)
      throw tensorError(
        name,
        `is not an output of this model; its only output is "${OUTPUT_TENSOR}" (FP32 [N, 1])`,
      );
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Predicts the rows of `tensors` with the served model and logs them (under the request's `id` when it
 * is a plain token, so the caller can find its rows in the prediction log) before answering.
 */
export async function infer(
  options: OipOptions,
  name: string,
  version: string | undefined,
  tensors: readonly InputTensor[],
  id: string | undefined,
): Promise<{ model: ServingModel; predictions: Float32Array }> {
  const model = resolveModel(options.slot, name, version);
  const { records, hourStarts } = decodeRows(tensors, options.maxBatchSize);
  const predictions = await model.predict(recordsToColumns(records));
  const requestId = id !== undefined && REQUEST_ID.test(id) ? id : randomUUID();
  await options.onServed({ requestId, model, records, hourStarts, predictions });
  return { model, predictions };
}
