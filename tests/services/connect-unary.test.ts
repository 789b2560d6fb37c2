/**
 * The lean unary Connect path (services/http/connect-unary.ts) on the real server: Connect clients and raw
 * HTTP requests whose answers must be connect-es's, byte for byte where the protocol fixes them. Every call
 * here is checked to have been answered by the lean handler (its diagnostics channel), or, for what it
 * leaves to connect-node, not to have been; a silent fallback fails the test. Connect GET and deadlines need
 * a NO_SIDE_EFFECTS method and an implementation that watches its signal, which the bikeshare services do
 * not have: those run on a small server of the conformance suite's service.
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync, gzipSync } from "node:zlib";
import { create, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import { base64Encode } from "@bufbuild/protobuf/wire";
import { ConnectError, createClient, type ServiceImpl } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../gen/bikeshare/v1/common_pb.js";
import {
  PredictBatchRequestSchema,
  PredictBatchResponseSchema,
  PredictRequestSchema,
  PredictResponseSchema,
  PredictService,
} from "../../gen/bikeshare/v1/predict_pb.js";
// biome-ignore lint/style/noRestrictedImports: the conformance suite's generated service, by its own path (biome.json lists only the project's)
import * as conformance from "../../gen/connectrpc/conformance/v1/service_pb.js";
import { CONNECT_UNARY_CHANNEL, createConnectUnaryHandler } from "../../services/http/connect-unary.js";
import { rpcReadMaxBytes } from "../../services/request-limits.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** A service and its typed implementation, as the lean handler takes them. */
function served<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>) {
  return { service, impl: impl as Partial<ServiceImpl<DescService>> };
}

const rows = readHourCsvRecords();
const first = modelInput(rows[0] as Record<string, number>);
const conditions = { ...first, hour: undefined };
const MAX_BATCH = 500;
const PREDICT = "/bikeshare.v1.PredictService/Predict";

let t: TestServer;
/** `service/method` of each call the lean handler took since the last test started. */
let lean: string[] = [];
const onLean = (message: unknown) => {
  const { service, method } = message as { service: string; method: string };
  lean.push(`${service}/${method}`);
};
beforeAll(async () => {
  subscribe(CONNECT_UNARY_CHANNEL, onLean);
  t = await startTestServer({ maxBatchSize: MAX_BATCH });
});
afterAll(async () => {
  unsubscribe(CONNECT_UNARY_CHANNEL, onLean);
  await t?.stop();
});
beforeEach(() => {
  lean = [];
});

async function post(path: string, body: Uint8Array | string, headers: Record<string, string>) {
  const res = await fetch(`${t.baseUrl}${path}`, { method: "POST", headers, body });
  return { res, bytes: new Uint8Array(await res.arrayBuffer()) };
}

function errorJson(bytes: Uint8Array): {
  code: string;
  message: string;
  details?: { type: string; value: string; debug?: unknown }[];
} {
  return JSON.parse(new TextDecoder().decode(bytes));
}

describe("Connect unary calls on the lean path", () => {
  it.each([
    ["JSON over HTTP/1.1", { httpVersion: "1.1" as const }],
    ["binary over HTTP/1.1", { httpVersion: "1.1" as const, useBinaryFormat: true }],
    ["JSON over h2c", { httpVersion: "2" as const }],
    ["binary over h2c", { httpVersion: "2" as const, useBinaryFormat: true }],
  ])("POST %s: Predict through a Connect client", async (_name, options) => {
    const client = createClient(PredictService, createConnectTransport({ baseUrl: t.baseUrl, ...options }));
    const res = await client.predict({ conditions });
    const legacy = await post("/predict", JSON.stringify(first), { "content-type": "application/json" });
    expect(res.prediction).toBeCloseTo(JSON.parse(new TextDecoder().decode(legacy.bytes)).prediction, 4);
    expect(res.modelVersion).toBe("1");
    expect(lean).toEqual(["bikeshare.v1.PredictService/Predict"]);
  });

  it("answers with connect-es's headers: content type, length, nosniff; charset=utf-8 is accepted", async () => {
    const { res, bytes } = await post(PREDICT, JSON.stringify({ conditions: first }), {
      "content-type": "application/json; charset=utf-8",
      "connect-protocol-version": "1",
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("content-length")).toBe(String(bytes.byteLength));
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(JSON.parse(new TextDecoder().decode(bytes)).modelVersion).toBe("1");

    const binary = await post(
      PREDICT,
      toBinary(PredictRequestSchema, create(PredictRequestSchema, { conditions })),
      {
        "content-type": "application/proto",
      },
    );
    expect(binary.res.headers.get("content-type")).toBe("application/proto");
    expect(fromBinary(PredictResponseSchema, binary.bytes).modelVersion).toBe("1");
    expect(lean).toHaveLength(2);
  });

  it("gzip both ways: a gzipped request body, and a gzipped answer at 1 KiB or more when accepted", async () => {
    const batch = rows.slice(0, 50).map((r) => modelInput(r as Record<string, number>));
    const body = gzipSync(JSON.stringify({ rows: batch }));
    const { res, bytes } = await post("/bikeshare.v1.PredictService/PredictBatch", body, {
      "content-type": "application/json",
      "content-encoding": "gzip",
      "accept-encoding": "gzip",
    });
    expect(res.status).toBe(200);
    // fetch undoes Content-Encoding itself; the header says the server compressed.
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(JSON.parse(new TextDecoder().decode(bytes)).predictions).toHaveLength(50);

    // Below compressMinBytes (1 KiB) the answer goes as it is.
    const small = await post(PREDICT, gzipSync(JSON.stringify({ conditions: first })), {
      "content-type": "application/json",
      "content-encoding": "gzip",
      "accept-encoding": "gzip",
    });
    expect(small.res.status).toBe(200);
    expect(small.res.headers.get("content-encoding")).toBeNull();

    // Without fetch's decoding: the bytes on the wire are gzip.
    const raw = await rawRequest("POST", "/bikeshare.v1.PredictService/PredictBatch", {
      headers: { "content-type": "application/proto", "accept-encoding": "gzip" },
      body: toBinary(
        PredictBatchRequestSchema,
        create(PredictBatchRequestSchema, { rows: [...batch, ...batch, ...batch] }),
      ),
    });
    expect(raw.headers["content-encoding"]).toBe("gzip");
    // 150 doubles and their ids: over 1 KiB in protobuf too.
    expect(fromBinary(PredictBatchResponseSchema, gunzipSync(raw.body)).predictions).toHaveLength(150);

    const unknown = await post(PREDICT, JSON.stringify({ conditions: first }), {
      "content-type": "application/json",
      "content-encoding": "zstd",
    });
    expect(unknown.res.status).toBe(501);
    expect(errorJson(unknown.bytes)).toEqual({
      code: "unimplemented",
      message: 'unknown compression "zstd": supported encodings are gzip,br',
    });
    expect(unknown.res.headers.get("accept-encoding")).toBe("gzip,br");
    expect(lean).toHaveLength(4);
  });

  it("error JSON: invalid_argument, HTTP 400, a BadRequest detail (base64 without padding) naming each bad field", async () => {
    const { res, bytes } = await post(
      PREDICT,
      JSON.stringify({ conditions: { ...first, hr: 24, temp: undefined } }),
      {
        "content-type": "application/json",
      },
    );
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    const error = errorJson(bytes);
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("conditions.hr must be an integer in 0..23");
    const [detail] = error.details ?? [];
    expect(detail?.type).toBe("bikeshare.v1.BadRequest");
    expect(detail?.value).not.toContain("=");
    const padded = (detail?.value ?? "") + "=".repeat((4 - ((detail?.value.length ?? 0) % 4)) % 4);
    const badRequest = fromBinary(BadRequestSchema, Buffer.from(padded, "base64"));
    expect(badRequest.fieldViolations.map((v) => v.field)).toEqual(["conditions.hr", "conditions.temp"]);

    // The same through a Connect client, which decodes the detail itself.
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" }),
    );
    const thrown = await client.predict({ conditions: { ...conditions, hr: 24 } }).catch((e) => e);
    expect(thrown).toBeInstanceOf(ConnectError);
    expect((thrown as ConnectError).findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe(
      "conditions.hr",
    );
    expect(lean).toHaveLength(2);
  });

  it("unauthenticated (HTTP 401) without a token where the method needs one; served with it", async () => {
    const path = "/bikeshare.v1.RegistryService/ListRegisteredModels";
    const anonymous = await post(path, "{}", { "content-type": "application/json" });
    expect(anonymous.res.status).toBe(401);
    expect(errorJson(anonymous.bytes)).toEqual({
      code: "unauthenticated",
      message:
        "bikeshare.v1.RegistryService/ListRegisteredModels needs a bearer token with role reader or higher",
    });
    const reader = await post(path, "{}", {
      "content-type": "application/json",
      authorization: `Bearer ${t.tokens.reader}`,
    });
    expect(reader.res.status).toBe(200);
    expect(lean).toHaveLength(2);
  });

  it("a body above rpcReadMaxBytes is resource_exhausted (HTTP 429) before it is parsed", async () => {
    const limit = rpcReadMaxBytes(MAX_BATCH);
    const big = JSON.stringify({ conditions: first, padding: "x".repeat(limit) });
    const { res, bytes } = await post(PREDICT, big, { "content-type": "application/json" });
    expect(res.status).toBe(429);
    expect(errorJson(bytes)).toEqual({
      code: "resource_exhausted",
      message: `message size ${Buffer.byteLength(big)} is larger than configured readMaxBytes ${limit}`,
    });
    // The connection stays usable: the rest of the body is drained after the answer.
    const next = await post(PREDICT, JSON.stringify({ conditions: first }), {
      "content-type": "application/json",
    });
    expect(next.res.status).toBe(200);

    // A gzipped body that is small on the wire but larger than the limit once inflated.
    const bomb = gzipSync(JSON.stringify({ conditions: first, pad: " ".repeat(limit) }));
    const inflated = await post(PREDICT, bomb, {
      "content-type": "application/json",
      "content-encoding": "gzip",
    });
    expect(inflated.res.status).toBe(429);
    expect(errorJson(inflated.bytes).code).toBe("resource_exhausted");
    expect(lean).toHaveLength(3);
  });

  it("unknown JSON fields and undecodable proto are invalid_argument, with rpc-input.ts's messages", async () => {
    const unknown = await post(PREDICT, JSON.stringify({ conditions: { ...first, tmep: 0.3 } }), {
      "content-type": "application/json",
    });
    expect(unknown.res.status).toBe(400);
    const error = errorJson(unknown.bytes);
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("tmep");

    const garbage = await post(PREDICT, new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), {
      "content-type": "application/proto",
    });
    expect(garbage.res.status).toBe(400);
    expect(errorJson(garbage.bytes).code).toBe("invalid_argument");
    expect(errorJson(garbage.bytes).message).toMatch(
      /^the request is not a valid bikeshare\.v1\.PredictRequest in the protobuf binary format \(/,
    );
    expect(lean).toHaveLength(2);

    // Counted under protocol "connect" although no interceptor saw them.
    const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /bikeshare_requests_total\{service="bikeshare.v1.PredictService",method="Predict",code="invalid_argument",protocol="connect"\} [1-9]/,
    );
  });

  it("interceptors label the calls connect in the metrics", async () => {
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" }),
    );
    await client.predict({ conditions });
    const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /bikeshare_requests_total\{service="bikeshare.v1.PredictService",method="Predict",code="ok",protocol="connect"\} [1-9]/,
    );
    expect(lean).toHaveLength(1);
  });

  it("leaves to connect-node what connect-node refuses or streams: GET of a method with side effects, other content types, gRPC-Web", async () => {
    const get = await fetch(
      `${t.baseUrl}${PREDICT}?connect=v1&encoding=json&message=${encodeURIComponent("{}")}`,
    );
    expect(get.status).toBe(405);
    const text = await post(PREDICT, "{}", { "content-type": "text/plain" });
    expect(text.res.status).toBe(415);
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" }),
    );
    const chunks: number[] = [];
    async function* one() {
      yield { rows: [conditions] };
    }
    for await (const chunk of client.predictStream(one())) chunks.push(...chunk.predictions);
    expect(chunks).toHaveLength(1);
    expect(lean).toEqual([]);
  });
});

describe("Connect GET and deadlines (the conformance service on the lean handler alone)", () => {
  let server: http.Server;
  let base: string;
  beforeAll(async () => {
    const impl: Partial<ServiceImpl<typeof conformance.ConformanceService>> = {
      idempotentUnary: (req) => ({
        payload: { data: req.responseDefinition?.response.value as Uint8Array },
      }),
      // Waits until its deadline, as a handler that watches its signal does.
      unary: (_req, ctx) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
        }),
    };
    const handler = createConnectUnaryHandler({
      services: [served(conformance.ConformanceService, impl)],
      interceptors: [],
      readMaxBytes: 4096,
    });
    server = http.createServer((req, res) => {
      if (!handler(req, res)) {
        res.writeHead(599);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/connectrpc.conformance.v1.ConformanceService`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const request = create(conformance.IdempotentUnaryRequestSchema, {
    responseDefinition: { response: { case: "responseData", value: new Uint8Array([1, 2, 3]) } },
  });

  it("GET with encoding=json, and with encoding=proto, base64=1 and compression=gzip", async () => {
    const json = JSON.stringify({ responseDefinition: { responseData: "AQID" } });
    const plain = await fetch(
      `${base}/IdempotentUnary?connect=v1&encoding=json&message=${encodeURIComponent(json)}`,
    );
    expect(plain.status).toBe(200);
    expect(plain.headers.get("content-type")).toBe("application/json");
    expect(await plain.json()).toEqual({ payload: { data: "AQID" } });

    const packed = base64Encode(gzipSync(toBinary(conformance.IdempotentUnaryRequestSchema, request)), "url");
    const proto = await fetch(
      `${base}/IdempotentUnary?connect=v1&encoding=proto&base64=1&compression=gzip&message=${packed}`,
    );
    expect(proto.status).toBe(200);
    expect(proto.headers.get("content-type")).toBe("application/proto");
    const answer = fromBinary(
      conformance.IdempotentUnaryResponseSchema,
      new Uint8Array(await proto.arrayBuffer()),
    );
    expect([...(answer.payload?.data ?? [])]).toEqual([1, 2, 3]);
  });

  it("GET with a message that is not base64url is invalid_argument, not internal", async () => {
    const res = await fetch(`${base}/IdempotentUnary?connect=v1&encoding=proto&base64=1&message=%25%25%25`);
    expect(res.status).toBe(400);
    const error = (await res.json()) as { code: string; message: string };
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("not valid base64url");
  });

  it("GET of a method with side effects, or without an encoding, is not taken", async () => {
    expect((await fetch(`${base}/Unary?connect=v1&encoding=json&message=%7B%7D`)).status).toBe(599);
    expect((await fetch(`${base}/IdempotentUnary?connect=v1&message=%7B%7D`)).status).toBe(599);
  });

  it("Connect-Timeout-Ms: the handler's signal aborts at the deadline, answered deadline_exceeded (HTTP 504)", async () => {
    const started = Date.now();
    const res = await fetch(`${base}/Unary`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "100" },
      body: "{}",
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(res.status).toBe(504);
    expect(((await res.json()) as { code: string }).code).toBe("deadline_exceeded");

    const bad = await fetch(`${base}/Unary`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "soon" },
      body: "{}",
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({
      code: "invalid_argument",
      message: "protocol error: invalid connect timeout value: soon",
    });
  });
});

/** A request without fetch's content decoding, to see the bytes the server sent. */
function rawRequest(
  method: string,
  path: string,
  init: { headers: Record<string, string>; body?: Uint8Array },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${t.baseUrl}${path}`, { method, headers: init.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

describe("request headers on the lean path", () => {
  it("read as a Web Headers: repeated values joined, names in any case, a write seen after, iteration complete", async () => {
    const seen: Record<string, unknown>[] = [];
    const impl: Partial<ServiceImpl<typeof PredictService>> = {
      predict: (_req, ctx) => {
        const h = ctx.requestHeader;
        const before = {
          accept: h.get("Accept"),
          custom: h.get("x-custom"),
          missing: h.get("x-missing"),
          has: h.has("X-CUSTOM"),
          path: h.get(":path"),
        };
        h.set("x-added", "1");
        const names: string[] = [];
        h.forEach((_value, key) => {
          names.push(key);
        });
        seen.push({ ...before, added: h.get("x-added"), custom2: h.get("x-custom"), names });
        return { prediction: 1, modelVersion: "t", requestId: "r" };
      },
    };
    const handler = createConnectUnaryHandler({ services: [served(PredictService, impl)], interceptors: [] });
    const server = http.createServer((req, res) => {
      if (!handler(req, res)) {
        res.writeHead(599);
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const body = JSON.stringify({ conditions });
      const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port,
            method: "POST",
            path: "/bikeshare.v1.PredictService/Predict",
            // An array is sent as the header repeated, as a proxy may.
            headers: {
              "content-type": "application/json",
              "content-length": String(Buffer.byteLength(body)),
              accept: "application/json",
              "x-custom": ["a", "b"],
            },
          },
          (res) => {
            let text = "";
            res.on("data", (chunk: Buffer) => {
              text += chunk.toString();
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
      expect(answer).toEqual({ status: 200, text: expect.any(String) });
      expect(seen).toEqual([
        {
          accept: "application/json",
          custom: "a, b",
          missing: null,
          has: true,
          path: null,
          added: "1",
          custom2: "a, b",
          names: expect.arrayContaining(["accept", "content-type", "x-custom", "x-added", "host"]),
        },
      ]);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
