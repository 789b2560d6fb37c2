/**
 * The gRPC conventions tools and Kubernetes rely on: grpc.health.v1.Health (Check and Watch, following the
 * served model) and server reflection (v1 and v1alpha), through a real @grpc/grpc-js client and grpcurl
 * (built by scripts/ops-tools.sh), which finds the services with no protoset.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as HealthStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import {
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { defaultPolicy } from "../../services/auth/interceptor.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { registerTinyModel } from "../helpers/tiny-model.js";

const run = promisify(execFile);
const first = modelInput(readHourCsvRecords()[0] as Record<string, number>);

let t: TestServer;
let grpcurl: string;
let stopped = false;

beforeAll(async () => {
  const tools = await run("bash", ["scripts/ops-tools.sh", "--print-dir"], { timeout: 900_000 });
  grpcurl = join(tools.stdout.trim().split("\n").at(-1) as string, "bin", "grpcurl");
  if (!existsSync(grpcurl)) throw new Error(`${grpcurl} is missing (${tools.stderr.trim()})`);
  // No model yet, so that the health statuses start NOT_SERVING; a data file that does not exist fails
  // the bootstrap training at once (the test registers a tiny model itself). Predict needs a token, so
  // that health and reflection answering without one is their own policy, not Predict's.
  t = await startTestServer(
    { dataPath: "/nonexistent/hour.csv", predictNeedsToken: true },
    { seedVersions: 0 },
  );
}, 900_000);
afterAll(async () => {
  if (!stopped) await t?.stop();
});

const address = () => `127.0.0.1:${t.server.port}`;

function grpcClient(): grpc.Client {
  const Client = grpc.makeGenericClientConstructor({}, "Conventions");
  return new Client(address(), grpc.credentials.createInsecure());
}
const encoder =
  <D extends DescMessage>(schema: D) =>
  (message: MessageShape<D>) =>
    Buffer.from(toBinary(schema, message));
const decoder =
  <D extends DescMessage>(schema: D) =>
  (bytes: Buffer) =>
    fromBinary(schema, bytes);

function check(service: string): Promise<HealthStatus> {
  const client = grpcClient();
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      encoder(HealthCheckRequestSchema),
      decoder(HealthCheckResponseSchema),
      create(HealthCheckRequestSchema, { service }),
      (error, response) => {
        client.close();
        if (error) reject(error);
        else resolve(response?.status as HealthStatus);
      },
    );
  });
}

/** A Watch stream: every status received so far, a wait for the next, and how it ended. */
function watch(service: string) {
  const client = grpcClient();
  const call = client.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    encoder(HealthCheckRequestSchema),
    decoder(HealthCheckResponseSchema),
    create(HealthCheckRequestSchema, { service }),
  );
  const received: HealthStatus[] = [];
  call.on("data", (response: { status: HealthStatus }) => received.push(response.status));
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("error", () => {}); // the status event carries it
  const until = (count: number) =>
    new Promise<HealthStatus[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Watch received only ${received}`)), 20_000);
      const poll = setInterval(() => {
        if (received.length < count) return;
        clearTimeout(timer);
        clearInterval(poll);
        resolve([...received]);
      }, 10);
    });
  return {
    until,
    ended,
    cancel() {
      call.cancel();
      client.close();
    },
  };
}

/** One v1alpha reflection stream (ghz's version; grpcurl's v1 is tested below) with the given questions. */
function reflectV1alpha(
  requests: MessageInitShape<typeof ServerReflectionRequestSchema>[],
): Promise<ServerReflectionResponse[]> {
  const client = grpcClient();
  const call = client.makeBidiStreamRequest(
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    encoder(ServerReflectionRequestSchema),
    decoder(ServerReflectionResponseSchema),
  );
  const responses: ServerReflectionResponse[] = [];
  return new Promise((resolve, reject) => {
    call.on("data", (response: ServerReflectionResponse) => responses.push(response));
    call.on("error", reject);
    call.on("end", () => {
      client.close();
      resolve(responses);
    });
    for (const request of requests) call.write(create(ServerReflectionRequestSchema, request));
    call.end();
  });
}

describe("grpc.health.v1.Health", () => {
  it("follows the model: NOT_SERVING before one is loaded, and Watch streams the move to SERVING", async () => {
    expect(await check("")).toBe(HealthStatus.NOT_SERVING);
    expect(await check("bikeshare.v1.PredictService")).toBe(HealthStatus.NOT_SERVING);
    const overall = watch("");
    expect(await overall.until(1)).toEqual([HealthStatus.NOT_SERVING]);

    const version = await registerTinyModel(t.server.registry, t.config.modelName);
    await t.server.registry.setAlias({
      modelName: t.config.modelName,
      alias: "production",
      version: version.version,
      actor: "test",
      reason: "health test",
      force: true,
    });
    expect(await overall.until(2)).toEqual([HealthStatus.NOT_SERVING, HealthStatus.SERVING]);
    overall.cancel();
    expect(await check("")).toBe(HealthStatus.SERVING);
    expect(await check("bikeshare.v1.PredictService")).toBe(HealthStatus.SERVING);
  });

  it("answers SERVING for the control-plane services of a process that serves them, NOT_FOUND for others", async () => {
    for (const service of [
      "bikeshare.v1.RegistryService",
      "bikeshare.v1.TrainService",
      "bikeshare.v1.MonitorService",
    ]) {
      expect(await check(service)).toBe(HealthStatus.SERVING);
    }
    const error = await check("no.such.Service").catch((e: grpc.ServiceError) => e);
    expect((error as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    // Watch keeps the stream open for a name that may become known, as the protocol says.
    const unknown = watch("no.such.Service");
    expect(await unknown.until(1)).toEqual([HealthStatus.SERVICE_UNKNOWN]);
    unknown.cancel();
  });

  it("needs no token, while the server's other RPCs do", async () => {
    const policy = defaultPolicy({ openPredict: false });
    for (const method of [
      "grpc.health.v1.Health/Check",
      "grpc.health.v1.Health/Watch",
      "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]) {
      expect(policy[method]).toBe("open");
    }
    // The calls above carried no token; Predict on the same server refuses one without.
    const { stderr } = await run(grpcurl, [
      "-plaintext",
      "-d",
      JSON.stringify({ conditions: first }),
      address(),
      "bikeshare.v1.PredictService/Predict",
    ]).catch((e: { stderr: string }) => e);
    expect(stderr).toContain("Code: Unauthenticated");
  });
});

describe("server reflection", () => {
  it("grpcurl lists the services, describes PredictService and calls Predict, with no protoset", async () => {
    const list = await run(grpcurl, ["-plaintext", address(), "list"]);
    expect(list.stdout.trim().split("\n").sort()).toEqual([
      "bikeshare.v1.MonitorService",
      "bikeshare.v1.PredictService",
      "bikeshare.v1.RegistryService",
      "bikeshare.v1.TrainService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "inference.GRPCInferenceService",
    ]);

    const describe = await run(grpcurl, ["-plaintext", address(), "describe", "bikeshare.v1.PredictService"]);
    expect(describe.stdout).toContain("service PredictService {");
    expect(describe.stdout).toMatch(/rpc Predict \( \.bikeshare\.v1\.PredictRequest \) returns/);

    const predict = await run(grpcurl, [
      "-plaintext",
      "-H",
      `authorization: Bearer ${t.tokens.reader}`,
      "-d",
      JSON.stringify({ conditions: first }),
      address(),
      "bikeshare.v1.PredictService/Predict",
    ]);
    const answer = JSON.parse(predict.stdout);
    expect(typeof answer.prediction).toBe("number");
    expect(answer.modelVersion).toBe("1");
  });

  it("v1alpha answers with the asked file first, then its imports, and NOT_FOUND for an unknown symbol", async () => {
    const [listed, predict, unknown] = await reflectV1alpha([
      { messageRequest: { case: "listServices", value: "" } },
      { messageRequest: { case: "fileContainingSymbol", value: "bikeshare.v1.PredictService" } },
      { messageRequest: { case: "fileContainingSymbol", value: "bikeshare.v1.Nothing" } },
    ]);
    expect(listed?.messageResponse.case).toBe("listServicesResponse");
    expect(predict?.messageResponse.case).toBe("fileDescriptorResponse");
    const files =
      predict?.messageResponse.case === "fileDescriptorResponse"
        ? predict.messageResponse.value.fileDescriptorProto.map((b) =>
            fromBinary(FileDescriptorProtoSchema, b),
          )
        : [];
    expect(files[0]?.name).toBe("bikeshare/v1/predict.proto");
    expect(files.map((f) => f.name)).toEqual(
      expect.arrayContaining(["bikeshare/v1/common.proto", "google/protobuf/timestamp.proto"]),
    );
    expect(unknown?.messageResponse.case).toBe("errorResponse");
    expect(unknown?.messageResponse.value).toMatchObject({ errorCode: grpc.status.NOT_FOUND });
  });
});

describe("shutdown", () => {
  it("ends Watch streams with NOT_SERVING at once: they do not hold the close", async () => {
    const overall = watch("");
    expect(await overall.until(1)).toEqual([HealthStatus.SERVING]);
    stopped = true;
    const started = Date.now();
    await t.stop();
    // An open stream would hold it for the 10 s grace of services/http/front.ts, then be cut.
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await overall.until(2)).toEqual([HealthStatus.SERVING, HealthStatus.NOT_SERVING]);
    expect((await overall.ended).code).toBe(grpc.status.OK);
  });
});
