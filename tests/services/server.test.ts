import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FEATURE_NAMES } from "../../core/features/index.js";
import { BadRequestSchema } from "../../gen/bikeshare/v1/common_pb.js";
import {
  type PredictRequest,
  PredictRequestSchema,
  type PredictResponse,
  PredictResponseSchema,
  PredictService,
} from "../../gen/bikeshare/v1/predict_pb.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const rows = readHourCsvRecords();
const first = modelInput(rows[0] as Record<string, number>);

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ maxBatchSize: 500 });
});
afterAll(async () => {
  await t?.stop();
});

async function getJson(path: string): Promise<any> {
  return (await fetch(`${t.baseUrl}${path}`)).json();
}

async function postJson(path: string, body: string | undefined): Promise<{ status: number; json: any }> {
  const res = await fetch(`${t.baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body }),
  });
  return { status: res.status, json: await res.json() };
}

describe("legacy REST routes (the old FastAPI shapes)", () => {
  it("POST /predict answers {prediction, timestamp, model_version}", async () => {
    const { status, json } = await postJson("/predict", JSON.stringify(first));
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(["model_version", "prediction", "timestamp"]);
    expect(typeof json.prediction).toBe("number");
    expect(json.model_version).toBe("1");
    expect(new Date(json.timestamp).toISOString()).toBe(json.timestamp);
  });

  it("keeps a caller's plain X-Request-Id (echoed back) and replaces anything else with a new id", async () => {
    const post = (id: string) =>
      fetch(`${t.baseUrl}/predict`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": id },
        body: JSON.stringify(first),
      });
    const kept = await post("lb-7f3a.2:checkout_9");
    expect(kept.status).toBe(200);
    expect(kept.headers.get("x-request-id")).toBe("lb-7f3a.2:checkout_9");
    for (const hostile of ["has space", "x".repeat(129), "<script>", "a/b"]) {
      const replaced = await post(hostile);
      expect(replaced.status).toBe(200);
      expect(replaced.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    }
    const fresh = await postJson("/predict", JSON.stringify(first));
    expect(fresh.status).toBe(200);
  });

  it("POST /predict/batch answers one prediction per input, equal to the single-row answers", async () => {
    const inputs = rows.slice(0, 50).map((r) => modelInput(r as Record<string, number>));
    const { status, json } = await postJson("/predict/batch", JSON.stringify({ inputs }));
    expect(status).toBe(200);
    expect(json.predictions).toHaveLength(50);
    const single = await postJson("/predict", JSON.stringify(inputs[17]));
    expect(json.predictions[17]).toBe(single.json.prediction);
    // Demand differs across hours of the day: the model is not a constant.
    expect(new Set(json.predictions.map((p: number) => Math.round(p))).size).toBeGreaterThan(10);
  });

  it.each([
    ["empty body", "", [["body"]]],
    ["invalid JSON", "{", [["body"]]],
    [
      "wrong types",
      JSON.stringify({ ...first, hr: "7", temp: null }),
      [
        ["body", "hr"],
        ["body", "temp"],
      ],
    ],
    [
      "out-of-range values",
      JSON.stringify({ ...first, hr: 24, season: 0, hum: 1.2 }),
      [
        ["body", "season"],
        ["body", "hr"],
        ["body", "hum"],
      ],
    ],
    ["unknown fields", JSON.stringify({ ...first, humidity: 0.5 }), [["body", "humidity"]]],
    ["a missing field", JSON.stringify({ ...first, weathersit: undefined }), [["body", "weathersit"]]],
  ])("POST /predict with %s answers 422 with a detail entry per bad field", async (_name, body, locs) => {
    const { status, json } = await postJson("/predict", body);
    expect(status).toBe(422);
    expect(json.detail.map((d: { loc: unknown }) => d.loc)).toEqual(locs);
    for (const d of json.detail) expect(typeof d.msg).toBe("string");
  });

  it("names the row and field of a bad input inside a batch", async () => {
    const inputs = [first, { ...first, hr: 30 }, first];
    const { status, json } = await postJson("/predict/batch", JSON.stringify({ inputs }));
    expect(status).toBe(422);
    expect(json.detail).toHaveLength(1);
    expect(json.detail[0].loc).toEqual(["body", "inputs", 1, "hr"]);
    expect(json.detail[0].msg).toContain("0..23");
  });

  it("rejects a batch above the configured limit with a clear error", async () => {
    const { status, json } = await postJson(
      "/predict/batch",
      JSON.stringify({ inputs: Array(501).fill(first) }),
    );
    expect(status).toBe(422);
    expect(json.detail[0]).toMatchObject({ type: "too_long", loc: ["body", "inputs"] });
    expect(json.detail[0].msg).toContain("limit is 500");
  });

  it("GET /health, /healthz, /readyz report a loaded model", async () => {
    const health = await getJson("/health");
    expect(health).toMatchObject({ status: "healthy", model_loaded: true });
    expect((await fetch(`${t.baseUrl}/healthz`)).status).toBe(200);
    const ready = await fetch(`${t.baseUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as any).model_version).toBe("1");
  });

  it("GET /model/info lists the importance of every feature the model uses", async () => {
    const info = await getJson("/model/info");
    expect(info.model_name).toBe("bike-demand");
    expect(info.metrics.test_rmse).toBeGreaterThan(0);
    expect(info.model_version).toBe("1");
    expect(Object.keys(info.feature_importance).sort()).toEqual([...FEATURE_NAMES].sort());
    const total = Object.values(info.feature_importance as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(1, 6);
    expect(info.feature_importance.hr).toBeGreaterThan(0.05);
  });

  it("GET /docs is a readable page built from the OpenAPI document", async () => {
    const res = await fetch(`${t.baseUrl}/docs`);
    expect(res.headers.get("content-type")).toContain("text/html");
    const html = await res.text();
    for (const route of ["/predict", "/predict/batch", "/health", "/model/info", "/metrics"]) {
      expect(html).toContain(`<code>${route}</code>`);
    }
    const spec = await getJson("/openapi.json");
    expect(spec.openapi).toBe("3.1.0");
    expect(
      spec.paths["/predict"].post.requestBody.content["application/json"].schema.properties.hr,
    ).toMatchObject({
      minimum: 0,
      maximum: 23,
    });
  });

  it("unknown routes answer 404 and wrong methods 405", async () => {
    expect((await fetch(`${t.baseUrl}/nope`)).status).toBe(404);
    expect((await fetch(`${t.baseUrl}/predict`)).status).toBe(405);
  });
});

describe("Connect, gRPC and gRPC-Web on the same port", () => {
  const conditions = { ...first, hour: undefined };

  it.each([
    ["Connect JSON over HTTP/1.1", () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" })],
    [
      "Connect binary over HTTP/1.1",
      () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
    ],
    ["Connect JSON over h2c", () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" })],
    ["gRPC over h2c (connect-node)", () => createGrpcTransport({ baseUrl: t.baseUrl })],
    ["gRPC-Web over HTTP/1.1", () => createGrpcWebTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" })],
  ])("%s: Predict equals the legacy route's answer", async (_name, transport) => {
    const client = createClient(PredictService, transport());
    const res = await client.predict({ conditions });
    const legacy = await postJson("/predict", JSON.stringify(first));
    expect(res.prediction).toBeCloseTo(legacy.json.prediction, 4);
    expect(res.modelVersion).toBe("1");
    expect(res.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("PredictBatch, PredictStream and GetModelInfo over Connect", async () => {
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" }),
    );
    const batch = rows.slice(0, 30).map((r) => modelInput(r as Record<string, number>));
    const res = await client.predictBatch({ rows: batch });
    expect(res.predictions).toHaveLength(30);

    async function* chunks() {
      yield { rows: batch.slice(0, 10) };
      yield { rows: batch.slice(10, 30) };
    }
    const offsets: bigint[] = [];
    const streamed: number[] = [];
    for await (const chunk of client.predictStream(chunks())) {
      offsets.push(chunk.offset);
      streamed.push(...chunk.predictions);
    }
    expect(offsets).toEqual([0n, 10n]);
    expect(streamed).toEqual(res.predictions);

    const info = await client.getModelInfo({});
    expect(info.model?.version).toBe("1");
    expect(info.model?.featureNames).toEqual([...FEATURE_NAMES]);
    expect(info.model?.featureImportance).toHaveLength(FEATURE_NAMES.length);
    expect(info.model?.metrics.test_rmse).toBeGreaterThan(0);
  });

  it("answers invalid_argument with a BadRequest detail naming each bad field", async () => {
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" }),
    );
    const error = await client
      .predict({ conditions: { ...conditions, hr: 24, temp: undefined } })
      .catch((e) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.message).toContain("conditions.hr must be an integer in 0..23");
    const [detail] = (error as ConnectError).findDetails(BadRequestSchema);
    expect(detail?.fieldViolations.map((v) => v.field)).toEqual(["conditions.hr", "conditions.temp"]);

    const missing = await client.predict({}).catch((e) => e);
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.message).toContain("conditions is required");

    const tooMany = await client.predictBatch({ rows: Array(501).fill(conditions) }).catch((e) => e);
    expect(tooMany.code).toBe(Code.InvalidArgument);
    expect(tooMany.message).toContain("limit is 500");
  });
});

describe("@grpc/grpc-js client", () => {
  function grpcPredict(request: PredictRequest): Promise<PredictResponse> {
    const Client = grpc.makeGenericClientConstructor({}, "PredictService");
    const client = new Client(`127.0.0.1:${t.server.port}`, grpc.credentials.createInsecure());
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        "/bikeshare.v1.PredictService/Predict",
        (m: PredictRequest) => Buffer.from(toBinary(PredictRequestSchema, m)),
        (b: Buffer) => fromBinary(PredictResponseSchema, b),
        request,
        (error, response) => {
          client.close();
          if (error) reject(error);
          else resolve(response as PredictResponse);
        },
      );
    });
  }

  it("Predict over real gRPC", async () => {
    const res = await grpcPredict(create(PredictRequestSchema, { conditions: first }));
    const legacy = await postJson("/predict", JSON.stringify(first));
    expect(res.prediction).toBeCloseTo(legacy.json.prediction, 4);
    expect(res.modelVersion).toBe("1");
  });

  it("bad input gives INVALID_ARGUMENT naming the field", async () => {
    const error = await grpcPredict(
      create(PredictRequestSchema, { conditions: { ...first, weathersit: 9 } }),
    ).catch((e) => e);
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toContain("conditions.weathersit must be an integer in 1..4");
  });
});

describe("/metrics", () => {
  it("exports request counters and latency histograms by protocol, and predictions by model version", async () => {
    const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
    expect(text).toMatch(
      /bikeshare_requests_total\{service="legacy",method="POST \/predict",code="200",protocol="rest"\} [1-9]/,
    );
    expect(text).toMatch(
      /bikeshare_requests_total\{service="bikeshare.v1.PredictService",method="Predict",code="ok",protocol="grpc"\} [1-9]/,
    );
    expect(text).toMatch(/bikeshare_requests_total\{[^}]*code="invalid_argument",protocol="connect"\} [1-9]/);
    expect(text).toMatch(/bikeshare_request_duration_seconds_bucket\{[^}]*protocol="grpc-web"[^}]*\} [1-9]/);
    expect(text).toMatch(new RegExp(`bikeshare_predictions_total\\{model_version="${"1"}"\\} [1-9]`));
    expect(text).toContain("bikeshare_process_cpu_seconds_total");
  });
});
