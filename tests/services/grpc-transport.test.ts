/**
 * Issue 14, item 1: gRPC through @grpc/grpc-js on the one port, with the services and interceptors
 * connect-node uses, while every other protocol on that port is still connect-node's. One connection of
 * each type against one real server (Predict needs a token here, so auth is on every path).
 */
import { rm } from "node:fs/promises";
import http2 from "node:http2";
import { dirname } from "node:path";
import { create, type DescMessage, type DescMethod, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../gen/bikeshare/v1/common_pb.js";
import {
  PredictBatchRequestSchema,
  PredictRequestSchema,
  PredictService,
} from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { rpcReadMaxBytes } from "../../services/request-limits.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const first = modelInput(readHourCsvRecords()[0] as Record<string, number>);
const MAX_BATCH = 100;

let t: TestServer;
let address: string;
let stopped = false;
beforeAll(async () => {
  t = await startTestServer({ predictNeedsToken: true, maxBatchSize: MAX_BATCH });
  address = `127.0.0.1:${t.server.port}`;
});
afterAll(async () => {
  if (!stopped) await t?.stop();
});

/** A grpc-js client method definition from a protobuf-es method: grpc-js knows nothing of protobuf-es. */
function clientMethod(method: DescMethod): grpc.MethodDefinition<unknown, unknown> {
  const encode = (schema: DescMessage) => (m: unknown) =>
    Buffer.from(toBinary(schema, create(schema, m as never)));
  const decode = (schema: DescMessage) => (b: Buffer) => fromBinary(schema, b);
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: encode(method.input),
    requestDeserialize: decode(method.input),
    responseSerialize: encode(method.output),
    responseDeserialize: decode(method.output),
  };
}

function grpcClient(): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure());
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

interface UnaryReply {
  error: grpc.ServiceError | null;
  response: any;
  header: grpc.Metadata | undefined;
}

function unary(
  method: DescMethod,
  request: unknown,
  metadata = new grpc.Metadata(),
  raw = false,
): Promise<UnaryReply> {
  const client = grpcClient();
  const def = clientMethod(method);
  return new Promise((resolve) => {
    let header: grpc.Metadata | undefined;
    const call = client.makeUnaryRequest(
      def.path,
      raw ? (b: unknown) => Buffer.from(b as Uint8Array) : def.requestSerialize,
      def.responseDeserialize,
      request,
      metadata,
      { deadline: Date.now() + 20_000 },
      (error, response) => {
        client.close();
        resolve({ error, response, header });
      },
    );
    call.on("metadata", (md) => {
      header = md;
    });
  });
}

async function metricCount(labels: string): Promise<number> {
  const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
  const escaped = labels.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`bikeshare_requests_total\\{${escaped}\\} (\\d+)`).exec(text);
  return Number(m?.[1] ?? 0);
}

const predictLabels = (code: string, protocol: string) =>
  `service="bikeshare.v1.PredictService",method="Predict",code="${code}",protocol="${protocol}"`;

/** One raw gRPC call over node:http2, for the response headers a client library would hide. */
function rawGrpc(
  path: string,
  body: Uint8Array,
  extra: Record<string, string> = {},
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${t.tokens.reader}`,
      ...extra,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    req.on("response", (h) => {
      headers = h;
    });
    req.on("trailers", (h) => {
      trailers = h;
    });
    req.on("data", () => {});
    req.on("end", () => {
      session.close();
      resolve({ headers, trailers });
    });
    req.on("error", reject);
    req.end(frame);
  });
}

describe("gRPC proper is served by grpc-js", () => {
  it("answers with grpc-js's own headers, plus nosniff, and counts the call as protocol grpc", async () => {
    const before = await metricCount(predictLabels("ok", "grpc"));
    const body = toBinary(PredictRequestSchema, create(PredictRequestSchema, { conditions: first }));
    const { headers, trailers } = await rawGrpc("/bikeshare.v1.PredictService/Predict", body);
    expect(trailers["grpc-status"] ?? headers["grpc-status"]).toBe("0");
    // connect-node answers "gzip,br": a silent fallback to it fails here.
    expect(headers["grpc-accept-encoding"]).toBe("identity,deflate,gzip");
    expect(headers["x-content-type-options"]).toBe("nosniff");
    expect(await metricCount(predictLabels("ok", "grpc"))).toBe(before + 1);
  });

  it("unary Predict with the token in metadata and a deadline", async () => {
    const reply = await unary(PredictService.method.predict, { conditions: first }, bearer(t.tokens.reader));
    expect(reply.error).toBeNull();
    expect(reply.response.modelVersion).toBe("1");
    expect(typeof reply.response.prediction).toBe("number");
    expect(reply.header?.get("x-content-type-options")).toEqual(["nosniff"]);
  });

  it("unauthenticated without the token the server requires, from the same auth interceptor", async () => {
    const reply = await unary(PredictService.method.predict, { conditions: first });
    expect(reply.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    const registry = await unary(RegistryService.method.listExperiments, {});
    expect(registry.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    const allowed = await unary(RegistryService.method.listExperiments, {}, bearer(t.tokens.reader));
    expect(allowed.error).toBeNull();
  });

  it("INVALID_ARGUMENT with google.rpc BadRequest details, through grpc-js and the connect gRPC client", async () => {
    const reply = await unary(
      PredictService.method.predict,
      { conditions: { ...first, weathersit: 9 } },
      bearer(t.tokens.reader),
    );
    expect(reply.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(reply.error?.details).toContain("conditions.weathersit must be an integer in 1..4");
    expect(reply.error?.metadata.get("grpc-status-details-bin")).toHaveLength(1);

    const client = createClient(PredictService, createGrpcTransport({ baseUrl: t.baseUrl }));
    const error = await client
      .predict(
        { conditions: { ...first, weathersit: 9 } },
        { headers: { authorization: `Bearer ${t.tokens.reader}` } },
      )
      .catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    const [bad] = (error as ConnectError).findDetails(BadRequestSchema);
    expect(bad?.fieldViolations.map((v) => v.field)).toContain("conditions.weathersit");
  });

  it("undecodable bytes are INVALID_ARGUMENT naming the message type, counted with that code", async () => {
    const before = await metricCount(predictLabels("invalid_argument", "grpc"));
    const bytes = toBinary(PredictRequestSchema, create(PredictRequestSchema, { conditions: first }));
    const reply = await unary(
      PredictService.method.predict,
      bytes.subarray(0, bytes.length - 2),
      bearer(t.tokens.reader),
      true,
    );
    expect(reply.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(reply.error?.details).toContain(
      "the request is not a valid bikeshare.v1.PredictRequest in the protobuf binary format",
    );
    expect(await metricCount(predictLabels("invalid_argument", "grpc"))).toBe(before + 1);
  });

  it("requests grpc-js refuses before any handler are counted with their code", async () => {
    const labels = (code: string) =>
      `service="bikeshare.v1.PredictService",method="PredictBatch",code="${code}",protocol="grpc"`;
    const before = await metricCount(labels("resource_exhausted"));
    const row = toBinary(PredictBatchRequestSchema, create(PredictBatchRequestSchema, { rows: [first] }));
    const huge = Buffer.concat(Array(Math.ceil((rpcReadMaxBytes(MAX_BATCH) + 1) / row.length)).fill(row));
    const reply = await unary(PredictService.method.predictBatch, huge, bearer(t.tokens.reader), true);
    expect(reply.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(await metricCount(labels("resource_exhausted"))).toBe(before + 1);

    const internal = await metricCount(predictLabels("internal", "grpc"));
    const body = toBinary(PredictRequestSchema, create(PredictRequestSchema, { conditions: first }));
    const bad = await rawGrpc("/bikeshare.v1.PredictService/Predict", body, { "grpc-timeout": "soon" });
    expect(bad.headers["grpc-status"] ?? bad.trailers["grpc-status"]).toBe(String(grpc.status.INTERNAL));
    expect(bad.headers["x-content-type-options"]).toBe("nosniff");
    expect(await metricCount(predictLabels("internal", "grpc"))).toBe(internal + 1);
  });

  it("a server stream: Health.Watch", async () => {
    const client = grpcClient();
    const def = clientMethod(Health.method.watch);
    const call = client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, {
      service: "bikeshare.v1.PredictService",
    });
    const [first] = (await new Promise((resolve, reject) => {
      call.once("data", (m) => resolve([m]));
      call.once("error", reject);
    })) as { status: number }[];
    expect(first?.status).toBe(1); // SERVING: a model is loaded
    call.on("error", () => {}); // the cancel below ends it with CANCELLED
    call.cancel();
    client.close();
  });

  it("a bidi stream: PredictStream answers each message as it comes", async () => {
    const client = grpcClient();
    const def = clientMethod(PredictService.method.predictStream);
    const call = client.makeBidiStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      bearer(t.tokens.reader),
    );
    const replies: any[] = [];
    const done = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("data", (m) => replies.push(m));
    call.write({ rows: [first, first] });
    await new Promise((resolve) => call.once("data", resolve));
    call.write({ rows: [first] });
    call.end();
    const status = await done;
    client.close();
    expect(status.code).toBe(grpc.status.OK);
    expect(replies.map((r) => Number(r.offset))).toEqual([0, 2]);
    expect(replies.map((r) => r.predictions.length)).toEqual([2, 1]);
  });
});

describe("every other protocol stays connect-node's on the same port", () => {
  const cases: [string, () => Transport, string][] = [
    [
      "Connect JSON over h2c",
      () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" }),
      "connect",
    ],
    [
      "Connect over HTTP/1.1",
      () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
      "connect",
    ],
    [
      "gRPC-Web over HTTP/1.1",
      () => createGrpcWebTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" }),
      "grpc-web",
    ],
    ["gRPC-Web over h2c", () => createGrpcWebTransport({ baseUrl: t.baseUrl, httpVersion: "2" }), "grpc-web"],
    [
      "gRPC with JSON over h2c",
      () => createGrpcTransport({ baseUrl: t.baseUrl, useBinaryFormat: false }),
      "grpc",
    ],
  ];
  it.each(cases)("%s: Predict, and unauthenticated without a token", async (_name, transport, protocol) => {
    const before = await metricCount(predictLabels("ok", protocol));
    const client = createClient(PredictService, transport());
    const res = await client.predict(
      { conditions: first },
      { headers: { authorization: `Bearer ${t.tokens.reader}` } },
    );
    expect(res.modelVersion).toBe("1");
    expect(await metricCount(predictLabels("ok", protocol))).toBe(before + 1);
    const refused = await client.predict({ conditions: first }).catch((e: unknown) => ConnectError.from(e));
    expect((refused as ConnectError).code).toBe(Code.Unauthenticated);
  });

  it("Connect JSON over h2c answers from connect-node, not grpc-js's 415", async () => {
    const session = http2.connect(t.baseUrl);
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/bikeshare.v1.PredictService/Predict",
        "content-type": "application/json",
        authorization: `Bearer ${t.tokens.reader}`,
      });
      req.on("response", resolve);
      req.on("error", reject);
      req.on("data", () => {});
      req.end(JSON.stringify({ conditions: first }));
    });
    session.close();
    expect(headers[":status"]).toBe(200);
    expect(headers["grpc-accept-encoding"]).toBeUndefined();
  });
});

describe("graceful close", () => {
  it("an open gRPC stream gets a GOAWAY, finishes its work and ends OK; the close then completes", async () => {
    const client = grpcClient();
    const def = clientMethod(PredictService.method.predictStream);
    const call = client.makeBidiStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      bearer(t.tokens.reader),
    );
    const replies: any[] = [];
    const done = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("data", (m) => replies.push(m));
    call.write({ rows: [first] });
    await new Promise((resolve) => call.once("data", resolve));

    const closing = t.server.close();
    stopped = true;
    await new Promise((resolve) => setTimeout(resolve, 200));
    // The session got its GOAWAY; its open stream is still served.
    call.write({ rows: [first, first] });
    await new Promise((resolve) => call.once("data", resolve));
    call.end();
    const status = await done;
    client.close();
    expect(status.code).toBe(grpc.status.OK);
    expect(replies.map((r) => r.predictions.length)).toEqual([1, 2]);
    const started = Date.now();
    await closing;
    // Well before front.ts's 10 s grace: nothing was left to cut.
    expect(Date.now() - started).toBeLessThan(5_000);
    await rm(dirname(t.config.dbPath), { recursive: true, force: true });
  });
});
