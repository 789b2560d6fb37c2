import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  PredictService,
  PredictStreamRequestSchema,
  type PredictStreamResponse,
} from "../../gen/bikeshare/v1/predict_pb.js";
import { grpcServiceOf, served } from "../../services/rpc/grpc-adapter.js";

// A stream whose client stops reading fills the transport's buffers; a cancel must still end the handler.
let produced = 0;
let finished = false;
const impl = {
  async *predictStream(requests: AsyncIterable<unknown>): AsyncIterable<Partial<PredictStreamResponse>> {
    try {
      for await (const _ of requests) {
        for (;;) {
          produced++;
          yield { offset: 0n, predictions: new Array(20_000).fill(1.5), modelVersion: "1" };
        }
      }
    } finally {
      finished = true;
    }
  },
};

let server: grpc.Server;
let client: grpc.Client;
beforeAll(async () => {
  const { definition, implementation } = grpcServiceOf(served(PredictService, impl as never), [], () => {});
  server = new grpc.Server();
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});
afterAll(() => {
  client.close();
  server.forceShutdown();
});

it("ends a stream handler whose client cancels while the server waits for it to read", async () => {
  const call = client.makeBidiStreamRequest(
    "/bikeshare.v1.PredictService/PredictStream",
    () => Buffer.from(toBinary(PredictStreamRequestSchema, create(PredictStreamRequestSchema, {}))),
    (b: Buffer) => b,
  );
  call.on("error", () => undefined); // the cancel itself
  call.pause();
  call.write({});
  await expect.poll(() => produced, { timeout: 5_000 }).toBeGreaterThan(1);
  // Writes are refused once the flow-control window is full: the handler waits for the client.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before = produced;
  expect(finished).toBe(false);
  call.cancel();
  await expect.poll(() => finished, { timeout: 5_000 }).toBe(true);
  expect(produced - before).toBeLessThanOrEqual(1);
});
