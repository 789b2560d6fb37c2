/**
 * The gRPC ceiling of bench/transport.ts: a bare @grpc/grpc-js server whose PredictService/Predict
 * handler answers constant bytes without decoding the request (the "trivial handler"). With
 * `--protobuf` it also decodes the request and encodes a response with protobuf-es, the part of the work
 * any real handler has to do. Prints its port once it listens.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { PredictRequestSchema, PredictResponseSchema } from "../../gen/bikeshare/v1/predict_pb.js";

const withProtobuf = process.argv.includes("--protobuf");
const port = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 0);
const constant = Buffer.from(
  toBinary(PredictResponseSchema, create(PredictResponseSchema, { prediction: 187.25, modelVersion: "1" })),
);
const server = new grpc.Server({ "grpc.enable_channelz": 0 });
server.addService(
  {
    predict: {
      path: "/bikeshare.v1.PredictService/Predict",
      requestStream: false,
      responseStream: false,
      requestDeserialize: withProtobuf
        ? (b: Buffer) => fromBinary(PredictRequestSchema, b)
        : (b: Buffer) => b,
      requestSerialize: (b: Buffer) => b,
      responseSerialize: withProtobuf
        ? (m: unknown) => Buffer.from(toBinary(PredictResponseSchema, m as never))
        : (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  },
  {
    predict: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      callback(
        null,
        withProtobuf ? create(PredictResponseSchema, { prediction: 187.25, modelVersion: "1" }) : constant,
      ),
  },
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
  if (error) throw error;
  console.log(bound);
});
