import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RAW_FIELD_NAMES } from "../../core/features/index.js";
import { type Explanation, PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { EXPLAIN_MAX_ROWS } from "../../services/predict/serving-model.js";
import { SUMMER_EVENING } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";
import { registerTinyModel } from "../helpers/tiny-model.js";

// One real trained gbtree version (QUICK_REQUEST), served by a real server on 127.0.0.1.
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
}, 300_000);
afterAll(async () => {
  await t?.stop();
});

const conditions = { ...SUMMER_EVENING };
/** 2012-07-04 17:00 EDT: Independence Day, so the date features have something to say. */
const withHour = { ...SUMMER_EVENING, hour: timestampFromDate(new Date(Date.UTC(2012, 6, 4, 21))) };

const transports: [string, () => Transport][] = [
  ["Connect (HTTP/1.1 JSON)", () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" })],
  ["gRPC (h2c)", () => createGrpcTransport({ baseUrl: t.baseUrl })],
];

async function http(method: string, path: string, body?: unknown) {
  const res = await fetch(`${t.baseUrl}${path}`, {
    method,
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as any };
}

/**
 * The served forecast comes from ONNX Runtime and the explanation from the native booster, which agree
 * within the export's tolerance (1e-3 relative, pipelines/training/select.ts ONNX_TOLERANCE).
 */
function expectAddsUp(e: Explanation | undefined, prediction: number, dateField: string) {
  if (!e) throw new Error("no explanation in the response");
  expect(e.space).toBe("prediction");
  expect(e.contributions.map((c) => c.feature)).toEqual([...RAW_FIELD_NAMES, dateField]);
  const sum = e.bias + e.contributions.reduce((a, c) => a + c.value, 0);
  expect(Math.abs(sum - prediction)).toBeLessThan(1e-3 * Math.max(1, Math.abs(prediction)));
  expect(e.derived.map((d) => d.feature)).toEqual([
    "workingday_hr",
    "days_to_holiday",
    "days_since_holiday",
    "year_end_break",
  ]);
  expect(e.derived[0]?.from).toEqual(["hr", "workingday"]);
  expect(e.derived[1]?.from).toEqual([dateField]);
  // The date field's contribution is exactly its three date features'.
  const date = e.contributions.find((c) => c.feature === dateField)?.value as number;
  const dateFeatures = e.derived.slice(1).reduce((a, d) => a + d.value, 0);
  expect(date).toBeCloseTo(dateFeatures, 4);
}

const hrOf = (e: Explanation | undefined) => e?.contributions.find((c) => c.feature === "hr")?.value;

describe.each(transports)("explanations over %s", (_name, transport) => {
  it("Predict with explain: contributions named by the request's fields add up to the forecast", async () => {
    const client = createClient(PredictService, transport());
    const plain = await client.predict({ conditions });
    expect(plain.explanation).toBeUndefined();
    const explained = await client.predict({ conditions, explain: true });
    expect(explained.prediction).toBeCloseTo(plain.prediction, 4);
    expectAddsUp(explained.explanation, explained.prediction, "hour");
    // A summer evening at 17:00 on a working day: the hour of the day lifts the forecast.
    expect(hrOf(explained.explanation)).toBeGreaterThan(0);
    const dated = await client.predict({ conditions: withHour, explain: true });
    expectAddsUp(dated.explanation, dated.prediction, "hour");
  });

  it("PredictBatch with explain: one explanation per row, in order", async () => {
    const client = createClient(PredictService, transport());
    const rows = [conditions, withHour, { ...conditions, hr: 3, temp: 0.5 }];
    const plain = await client.predictBatch({ rows });
    expect(plain.explanations).toEqual([]);
    const res = await client.predictBatch({ rows, explain: true });
    expect(res.explanations).toHaveLength(3);
    res.explanations.forEach((e, i) => {
      expectAddsUp(e, res.predictions[i] as number, "hour");
    });
    // 3 am is a quiet hour: its hour contribution is negative, 5 pm's positive.
    expect(hrOf(res.explanations[0])).toBeGreaterThan(0);
    expect(hrOf(res.explanations[2])).toBeLessThan(0);
  });

  it("refuses too many rows to explain and bad rows, naming the field", async () => {
    const client = createClient(PredictService, transport());
    const many = Array.from({ length: EXPLAIN_MAX_ROWS + 1 }, () => conditions);
    const tooMany = await client.predictBatch({ rows: many, explain: true }).catch((e: unknown) => e);
    expect((tooMany as ConnectError).code).toBe(Code.InvalidArgument);
    expect((tooMany as ConnectError).rawMessage).toContain("rows");
    expect((tooMany as ConnectError).rawMessage).toContain(`at most ${EXPLAIN_MAX_ROWS}`);
    // Without explain the same batch is served: the limit is the explanation's, not the batch's.
    expect((await client.predictBatch({ rows: many })).predictions).toHaveLength(many.length);
    const bad = await client
      .predict({ conditions: { ...conditions, hr: 31 }, explain: true })
      .catch((e: unknown) => e);
    expect((bad as ConnectError).code).toBe(Code.InvalidArgument);
    expect((bad as ConnectError).rawMessage).toContain("conditions.hr");
  });

  it("GetModelInfo carries the global importance (mean |SHAP| on the validation window)", async () => {
    const { model } = await createClient(PredictService, transport()).getModelInfo({});
    const fields = model?.shapImportance ?? [];
    expect(fields.map((s) => s.feature).sort()).toEqual([...RAW_FIELD_NAMES, "timestamp"].sort());
    // Largest first, in the forecast's units, and the hour of the day matters for bike demand.
    const values = fields.map((s) => s.meanAbsShap);
    expect(values).toEqual([...values].sort((a, b) => b - a));
    expect(fields.every((s) => s.space === "prediction")).toBe(true);
    expect(fields.slice(0, 3).map((s) => s.feature)).toContain("hr");
    expect(model?.shapFeatureImportance.map((s) => s.feature)).toContain("workingday_hr");
    expect(model?.shapImportanceWindow).toMatch(/validation rows/);
    // Beside today's importance, which stays as it was.
    expect(model?.featureImportance.length).toBeGreaterThan(0);
  });
});

describe("legacy JSON", () => {
  it("POST /predict/explain answers the forecast with contributions keyed by the body's fields", async () => {
    const { status, json } = await http("POST", "/predict/explain", {
      ...conditions,
      timestamp: "2012-07-04T21:00:00Z",
    });
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(
      ["bias", "contributions", "derived", "model_version", "prediction", "space", "timestamp"].sort(),
    );
    expect(Object.keys(json.contributions)).toEqual([...RAW_FIELD_NAMES, "timestamp"]);
    const sum =
      json.bias + Object.values(json.contributions as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(Math.abs(sum - json.prediction)).toBeLessThan(1e-3 * Math.max(1, json.prediction));
    expect(json.derived[0]).toEqual({
      feature: "workingday_hr",
      value: expect.any(Number),
      from: ["hr", "workingday"],
    });
    expect(json.space).toBe("prediction");
    const predict = await http("POST", "/predict", { ...conditions, timestamp: "2012-07-04T21:00:00Z" });
    expect(json.prediction).toBeCloseTo(predict.json.prediction, 4);
  });

  it("POST /predict/explain refuses a bad body with FastAPI's 422 naming the field", async () => {
    const bad = await http("POST", "/predict/explain", { ...conditions, hr: "noon" });
    expect(bad.status).toBe(422);
    expect(bad.json.detail[0].loc).toEqual(["body", "hr"]);
    const missing = await http("POST", "/predict/explain", { ...conditions, windspeed: undefined });
    expect(missing.status).toBe(422);
    expect(missing.json.detail[0].loc).toEqual(["body", "windspeed"]);
  });

  it("/model/info shows shap_importance beside feature_importance; /docs and /openapi.json document the route", async () => {
    const { status, json } = await http("GET", "/model/info");
    expect(status).toBe(200);
    expect(Object.keys(json.feature_importance).length).toBeGreaterThan(0);
    expect(Object.keys(json.shap_importance)).toEqual([...RAW_FIELD_NAMES, "timestamp"]);
    expect(json.shap_importance.hr).toBeGreaterThan(0);
    expect(Object.keys(json.shap_feature_importance)).toContain("days_to_holiday");
    expect(json.shap_importance_space).toBe("prediction");
    expect(json.shap_importance_window).toMatch(/validation rows/);
    const spec = (await http("GET", "/openapi.json")).json;
    expect(spec.paths["/predict/explain"].post.summary).toMatch(/TreeSHAP/);
    const docs = await (await fetch(`${t.baseUrl}/docs`)).text();
    expect(docs).toContain("/predict/explain");
  });
});

describe("a version that cannot be explained", () => {
  it("says so (failed_precondition / 400 naming model.json) on every protocol, and still predicts", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.admin);
    const { version: trained } = await registry.getModelVersion({
      modelName: "bike-demand",
      versionOrAlias: "production",
    });
    // The hand-written test model has an ONNX graph and a card but no native model.json.
    const tiny = await registerTinyModel(t.server.registry, "bike-demand");
    await registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: tiny.version,
      reason: "test: no native model",
      force: true,
    });
    try {
      await t.server.live.reload();
      for (const [, transport] of transports) {
        const client = createClient(PredictService, transport());
        expect((await client.predict({ conditions })).modelVersion).toBe(tiny.version);
        const error = await client.predict({ conditions, explain: true }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ConnectError);
        expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
        expect((error as ConnectError).rawMessage).toContain("model.json");
      }
      const legacy = await http("POST", "/predict/explain", conditions);
      expect(legacy.status).toBe(400);
      expect(legacy.json.detail).toContain("model.json");
      // A card without SHAP importance (an older version) shows none rather than zeros.
      const info = await http("GET", "/model/info");
      expect(info.json.shap_importance).toBeUndefined();
    } finally {
      await registry.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: trained?.version as string,
        reason: "test: back to the trained version",
        force: true,
      });
      await t.server.live.reload();
    }
  });
});
