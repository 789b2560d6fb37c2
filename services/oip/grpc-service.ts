import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type GRPCInferenceService,
  type InferTensorContents,
  InferTensorContentsSchema,
  type ModelInferRequest_InferInputTensor,
} from "../../gen/inference/grpc_predict_v2_pb.js";
import {
  checkRequestedOutputs,
  infer,
  modelMetadata,
  modelReady,
  type OipOptions,
  resolveModel,
  serverMetadata,
} from "./model.js";
import {
  decodeRaw,
  encodeOutput,
  type InputTensor,
  maxElements,
  OUTPUT_TENSOR,
  tensorError,
} from "./tensors.js";

/** The typed contents field that carries each datatype (InferTensorContents in grpc_predict_v2.proto). */
function typedElements(input: ModelInferRequest_InferInputTensor): ArrayLike<unknown> {
  const contents: InferTensorContents = input.contents ?? create(InferTensorContentsSchema);
  switch (input.datatype) {
    case "FP32":
      return contents.fp32Contents;
    case "FP64":
      return contents.fp64Contents;
    case "INT8":
    case "INT16":
    case "INT32":
      return contents.intContents;
    case "INT64":
      return contents.int64Contents;
    case "UINT8":
    case "UINT16":
    case "UINT32":
      return contents.uintContents;
    case "UINT64":
      return contents.uint64Contents;
    case "BYTES": {
      const decoder = new TextDecoder();
      return contents.bytesContents.map((b) => decoder.decode(b));
    }
    default:
      // decodeRows names the datatype and what is accepted.
      return [];
  }
}

/**
 * Repository load/unload do not apply: what serves is the model behind `production`, moved through the
 * registry. `unimplemented` is a transport status with no domain code (as for a predict replica's
 * control-plane RPCs in server.ts), so it is a ConnectError here.
 */
function notServed(method: string): ConnectError {
  return new ConnectError(
    `inference.GRPCInferenceService/${method} is not served: bikeshare serves the model behind the production alias; move the alias through RegistryService`,
    Code.Unimplemented,
  );
}

/** inference.GRPCInferenceService (KServe's grpc_predict_v2.proto), on the port of the other services. */
export function createOipGrpcService(options: OipOptions): ServiceImpl<typeof GRPCInferenceService> {
  const { slot } = options;
  return {
    async serverLive() {
      return { live: true };
    },
    async serverReady() {
      return { ready: slot.current !== undefined };
    },
    async serverMetadata() {
      return serverMetadata();
    },
    async modelReady(request) {
      return { ready: modelReady(slot, request.name, request.version) };
    },
    async modelMetadata(request) {
      const metadata = modelMetadata(resolveModel(slot, request.name, request.version));
      const tensor = (t: { name: string; datatype: string; shape: number[] }) => ({
        ...t,
        shape: t.shape.map(BigInt),
      });
      return { ...metadata, inputs: metadata.inputs.map(tensor), outputs: metadata.outputs.map(tensor) };
    },
    async modelInfer(request) {
      const raw = request.rawInputContents;
      // The protocol: raw contents come one per input, in order, and then no input has typed contents.
      if (raw.length > 0 && raw.length !== request.inputs.length)
        throw tensorError(
          request.inputs[Math.min(raw.length, request.inputs.length - 1)]?.name ?? "raw_input_contents",
          `raw_input_contents has ${raw.length} entries for ${request.inputs.length} inputs: give one per input, in order`,
        );
      const tensors: InputTensor[] = request.inputs.map((input, i) => {
        if (raw.length > 0 && input.contents !== undefined)
          throw tensorError(
            input.name,
            "has typed contents while the request uses raw_input_contents: use one or the other",
          );
        return {
          name: input.name,
          datatype: input.datatype,
          shape: input.shape.map(Number),
          data:
            raw.length > 0
              ? decodeRaw(input.name, input.datatype, raw[i] as Uint8Array, maxElements(options.maxBatchSize))
              : typedElements(input),
        };
      });
      checkRequestedOutputs(request.outputs.map((o) => o.name));
      const { model, predictions } = await infer(
        options,
        request.modelName,
        request.modelVersion,
        tensors,
        request.id || undefined,
      );
      const output = { name: OUTPUT_TENSOR, datatype: "FP32", shape: [BigInt(predictions.length), 1n] };
      // Answered in the form asked in: Triton's clients read raw contents, typed requests get typed ones.
      return {
        modelName: model.name,
        modelVersion: model.version,
        id: request.id,
        outputs: [
          raw.length > 0 ? output : { ...output, contents: { fp32Contents: Array.from(predictions) } },
        ],
        rawOutputContents: raw.length > 0 ? [encodeOutput(predictions)] : [],
      };
    },
    async repositoryModelLoad() {
      throw notServed("RepositoryModelLoad");
    },
    async repositoryModelUnload() {
      throw notServed("RepositoryModelUnload");
    },
  };
}
