import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { DuckDBInstance } from "@duckdb/node-api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RAW_FIELD_NAMES } from "../../core/features/index.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { normalQuantile } from "../../services/legacy/routes.js";
import type { LoadSummary } from "../helpers/fixed-rate-load.js";
import { SUMMER_EVENING } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";
import { registerTinyModel } from "../helpers/tiny-model.js";

// Two trained versions (so reloads can swap), tokens required: /model/reload then needs an admin.
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ predictNeedsToken: true }, { seedVersions: 2 });
}, 240_000);
afterAll(async () => {
  await t?.stop();
});

const conditions = { ...SUMMER_EVENING };
const NIGHT = { ...SUMMER_EVENING, hr: 3, temp: 0.6, atemp: 0.58 };

/** A legacy call, as a reader unless another token (or "" for none) is given: tokens are required here. */
async function http(method: string, path: string, body?: unknown, token = t.tokens.reader) {
  const res = await fetch(`${t.baseUrl}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as any };
}

const transports: [string, () => Transport][] = [
  // HTTP/2 for both: PredictStream is a bidirectional stream.
  ["Connect JSON (h2c)", () => createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" })],
  ["gRPC (h2c)", () => createGrpcTransport({ baseUrl: t.baseUrl })],
];

function predictClient(transport: Transport) {
  return createClient(PredictService, transport);
}

const auth = () => ({ headers: { authorization: `Bearer ${t.tokens.reader}` } });

describe("legacy routes the old API had", () => {
  it("GET / answers the old shape", async () => {
    const { status, json } = await http("GET", "/");
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(["docs", "message", "version"]);
    expect(typeof json.message).toBe("string");
    expect(typeof json.version).toBe("string");
    expect(json.docs).toBe("/docs");
  });

  it("POST /predict/confidence answers exactly the old shape, 95% by default", async () => {
    const { status, json } = await http("POST", "/predict/confidence", conditions);
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(
      [
        "confidence_intervals",
        "mean_prediction",
        "model_version",
        "prediction_std",
        "predictions",
        "timestamp",
      ].sort(),
    );
    expect(json.predictions).toHaveLength(1);
    expect(typeof json.predictions[0]).toBe("number");
    expect(json.mean_prediction).toBe(json.predictions[0]);
    expect(Object.keys(json.confidence_intervals).sort()).toEqual(["lower", "upper"]);
    const [lower] = json.confidence_intervals.lower;
    const [upper] = json.confidence_intervals.upper;
    expect(json.confidence_intervals.lower).toHaveLength(1);
    expect(json.confidence_intervals.upper).toHaveLength(1);
    expect(lower).toBeLessThan(json.mean_prediction);
    expect(upper).toBeGreaterThan(json.mean_prediction);
    expect(json.prediction_std).toHaveLength(1);
    expect(json.prediction_std[0]).toBeCloseTo((upper - lower) / (2 * 1.959964), 3);
    expect(Number.isNaN(Date.parse(json.timestamp))).toBe(false);
    expect(typeof json.model_version).toBe("string");
    const predict = await http("POST", "/predict", conditions);
    expect(json.mean_prediction).toBeCloseTo(predict.json.prediction, 4);
  });

  it("POST /predict/confidence takes the old confidence_level query, narrower at 80%", async () => {
    const p95 = await http("POST", "/predict/confidence", conditions);
    const p80 = await http("POST", "/predict/confidence?confidence_level=0.8", conditions);
    expect(p80.status).toBe(200);
    const width = (r: typeof p95) =>
      r.json.confidence_intervals.upper[0] - r.json.confidence_intervals.lower[0];
    expect(width(p80)).toBeLessThan(width(p95));
    expect(p80.json.prediction_std[0]).toBeCloseTo(width(p80) / (2 * normalQuantile(0.9)), 6);
  });

  it("POST /predict/confidence refuses a bad level or body, naming the field", async () => {
    for (const level of ["1.5", "0", "1e-17", "0.4", "95", "abc", ""]) {
      const bad = await http("POST", `/predict/confidence?confidence_level=${level}`, conditions);
      expect(bad.status).toBe(422);
      expect(bad.json.detail[0].loc).toEqual(["query", "confidence_level"]);
    }
    // Beyond what this model's calibration scores can support: the same shape, naming the query field.
    const tooHigh = await http("POST", "/predict/confidence?confidence_level=0.99999", conditions);
    expect(tooHigh.status).toBe(422);
    expect(tooHigh.json.detail[0].loc).toEqual(["query", "confidence_level"]);
    expect(tooHigh.json.detail[0].msg).toContain("confidence_level");
    const missing = await http("POST", "/predict/confidence", { ...conditions, hr: undefined });
    expect(missing.status).toBe(422);
    expect(missing.json.detail[0].loc).toEqual(["body", "hr"]);
  });

  it("the new routes are documented in /openapi.json and /docs", async () => {
    const spec = (await (await fetch(`${t.baseUrl}/openapi.json`)).json()) as {
      paths: Record<string, { post?: { summary: string } }>;
    };
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining(["/", "/model/reload", "/predict/confidence"]),
    );
    expect(spec.paths["/predict/confidence"]?.post?.summary).toContain("normal assumption");
    const page = await (await fetch(`${t.baseUrl}/docs`)).text();
    expect(page).toContain("/predict/confidence");
    expect(page).toContain("/model/reload");
  });

  it("with tokens required, the old routes need what their RPCs need, and the probes stay open", async () => {
    const reader = [
      "POST /predict",
      "POST /predict/batch",
      "POST /predict/confidence",
      "POST /predict/explain",
    ];
    for (const route of reader) {
      const [method, path] = route.split(" ") as [string, string];
      const body = path === "/predict/batch" ? { inputs: [conditions] } : conditions;
      const refused = await http(method, path, body, "");
      expect(refused.status, route).toBe(401);
      expect(refused.json.detail).toBe(`${route} needs a bearer token with role reader or higher`);
      expect((await http(method, path, body, "not-a-token")).status, route).toBe(401);
      expect((await http(method, path, body)).status, route).toBe(200);
    }
    expect((await http("GET", "/model/info", undefined, "")).status).toBe(401);
    expect((await http("GET", "/model/info")).status).toBe(200);
    expect((await http("GET", "/reports/some-id", undefined, "")).status).toBe(401);
    expect((await http("GET", "/reports/some-id")).status).toBe(404);
    for (const path of ["/", "/health", "/healthz", "/readyz", "/openapi.json"]) {
      expect((await http("GET", path, undefined, "")).status, path).toBe(200);
    }
  });

  it("POST /model/reload needs an admin token when tokens are required", async () => {
    expect((await http("POST", "/model/reload", undefined, "")).status).toBe(401);
    expect((await http("POST", "/model/reload", undefined, t.tokens.reader)).status).toBe(403);
    expect((await http("POST", "/model/reload", undefined, "not-a-token")).status).toBe(401);
    const { status, json } = await http("POST", "/model/reload", undefined, t.tokens.admin);
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(["message", "model_name", "model_stage", "timestamp"]);
    expect(json.model_name).toBe("bike-demand");
    expect(json.model_stage).toBe("production");
    expect(typeof json.message).toBe("string");
    expect(Number.isNaN(Date.parse(json.timestamp))).toBe(false);
  });

  it("POST /model/reload under 200 req/s of /predict, with alias moves in between: no request fails", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.admin);
    const { versions } = await registry.listModelVersions({ modelName: "bike-demand" });
    const numbers = versions.map((v) => v.version);
    expect(numbers.length).toBeGreaterThanOrEqual(2);
    const dir = await mkdtemp(join(tmpdir(), "reload-load-"));
    const out = join(dir, "summary.json");
    try {
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          join(import.meta.dirname, "../helpers/fixed-rate-load.ts"),
          `${t.baseUrl}/predict`,
          "200",
          "6",
          out,
        ],
        { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, LOAD_TOKEN: t.tokens.reader } },
      );
      const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
      const answered: string[] = [];
      for (let i = 0; i < 8; i++) {
        await new Promise((r) => setTimeout(r, 500));
        if (i % 2 === 0) {
          // Moved in the database only (a write another process could have made): /model/reload reads it.
          await registry.setAlias({
            modelName: "bike-demand",
            alias: "production",
            version: numbers[(i / 2) % numbers.length] as string,
            reason: "test: reload under load",
            force: true,
          });
        }
        const res = await http("POST", "/model/reload", undefined, t.tokens.admin);
        expect(res.status).toBe(200);
        answered.push(res.json.message);
      }
      expect(await exited).toBe(0);
      const summary = JSON.parse(await readFile(out, "utf8")) as LoadSummary;
      expect(summary.failures).toEqual([]);
      expect(summary.unanswered).toBe(0);
      expect(summary.acknowledged.length).toBeGreaterThan(900);
      expect(new Set(summary.acknowledged.map((a) => a.version)).size).toBeGreaterThanOrEqual(2);
      // The version swapped in by the reloads serves its own calibration.
      const after = await predictClient(transports[0]?.[1]() as Transport).predict(
        { conditions, intervalLevel: 0.9 },
        auth(),
      );
      expect(after.upper as number).toBeGreaterThan(after.prediction);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe.each(transports)("interval_level over %s", (_name, transport) => {
  it("Predict: no interval unless asked; lower < prediction < upper when asked", async () => {
    const client = predictClient(transport());
    const plain = await client.predict({ conditions }, auth());
    expect(plain.lower).toBeUndefined();
    expect(plain.upper).toBeUndefined();
    expect(plain.intervalLevel).toBeUndefined();
    const at90 = await client.predict({ conditions, intervalLevel: 0.9 }, auth());
    expect(at90.prediction).toBeCloseTo(plain.prediction, 4);
    expect(at90.intervalLevel).toBe(0.9);
    expect(at90.lower as number).toBeLessThan(at90.prediction);
    expect(at90.upper as number).toBeGreaterThan(at90.prediction);
    expect(at90.lower as number).toBeGreaterThanOrEqual(0);
    const at95 = await client.predict({ conditions, intervalLevel: 0.95 }, auth());
    expect((at95.upper as number) - (at95.lower as number)).toBeGreaterThan(
      (at90.upper as number) - (at90.lower as number),
    );
  });

  it("PredictBatch: one bound per row, wider at 5 pm than at 3 am", async () => {
    const client = predictClient(transport());
    const plain = await client.predictBatch({ rows: [conditions, NIGHT] }, auth());
    expect(plain.lower).toEqual([]);
    expect(plain.upper).toEqual([]);
    const res = await client.predictBatch({ rows: [conditions, NIGHT], intervalLevel: 0.9 }, auth());
    expect(res.lower).toHaveLength(2);
    expect(res.upper).toHaveLength(2);
    expect(res.intervalLevel).toBe(0.9);
    const [evening, night] = [0, 1].map((i) => (res.upper[i] as number) - (res.lower[i] as number));
    expect(evening as number).toBeGreaterThan(2 * (night as number));
  });

  it("PredictStream: bounds per chunk that asked for them", async () => {
    const client = predictClient(transport());
    async function* chunks() {
      yield { rows: [conditions], intervalLevel: 0.8 };
      yield { rows: [NIGHT, conditions] };
    }
    const answers = [];
    for await (const a of client.predictStream(chunks(), auth())) answers.push(a);
    expect(answers[0]?.lower).toHaveLength(1);
    expect(answers[0]?.intervalLevel).toBe(0.8);
    expect(answers[1]?.lower).toEqual([]);
    expect(answers[1]?.intervalLevel).toBeUndefined();
  });

  it.each([0, 1, -0.5, 1.5, Number.NaN])("refuses interval_level %s naming the field", async (level) => {
    const client = predictClient(transport());
    const error = await client.predict({ conditions, intervalLevel: level }, auth()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    expect((error as ConnectError).rawMessage).toContain("interval_level");
  });

  it("GetModelInfo says the version is calibrated", async () => {
    const client = predictClient(transport());
    const { model } = await client.getModelInfo({}, auth());
    expect(model?.intervalsCalibrated).toBe(true);
  });
});

describe("the calibration of a trained version", () => {
  it("the calibration is stored with the version: its run's calibration.json and model card", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.reader);
    const { version } = await registry.getModelVersion({
      modelName: "bike-demand",
      versionOrAlias: "production",
    });
    const { artifacts } = await registry.listArtifacts({ runId: version?.runId as string });
    const paths = artifacts.map((a) => a.path);
    expect(paths).toContain("calibration.json");
    const card = t.server.live.current?.card;
    expect(card?.calibration?.method).toBe("split_conformal_mondrian");
    expect(card?.calibration?.window).toContain(card?.windows.valid as string);
    expect(Object.keys(card?.calibration?.dated.groups ?? {}).length).toBe(10);
  });
});

describe("file scoring with interval_level", () => {
  async function waitForJob(jobId: string) {
    const train = connectClient(t.baseUrl, TrainService, t.tokens.trainer);
    for (;;) {
      const { job } = await train.getJob({ jobId });
      if (job && [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(job.state)) return job;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function readParquet(path: string) {
    const instance = await DuckDBInstance.create(":memory:");
    const connection = await instance.connect();
    try {
      return (await connection.runAndReadAll(`SELECT * FROM read_parquet('${path}')`)).getRowObjectsJS();
    } finally {
      connection.closeSync();
      instance.closeSync();
    }
  }

  it("adds lower/upper columns equal to PredictBatch's when asked, none otherwise", async () => {
    const hours = [conditions, NIGHT, { ...conditions, hr: 8 }];
    await mkdir(t.config.scoringDir, { recursive: true });
    await writeFile(
      join(t.config.scoringDir, "hours.csv"),
      `${RAW_FIELD_NAMES.join(",")}\n${hours.map((h) => RAW_FIELD_NAMES.map((f) => h[f]).join(",")).join("\n")}\n`,
    );
    const predict = connectClient(t.baseUrl, PredictService, t.tokens.trainer);
    const { job } = await predict.startScoring({
      input: "hours.csv",
      output: "with.parquet",
      intervalLevel: 0.9,
      reason: "test",
    });
    expect((await waitForJob(job?.id as string)).error).toBe("");
    const { job: plainJob } = await predict.startScoring({ input: "hours.csv", output: "plain.parquet" });
    expect((await waitForJob(plainJob?.id as string)).error).toBe("");

    const scored = await readParquet(join(t.config.scoringDir, "with.parquet"));
    const batch = await predict.predictBatch({ rows: hours, intervalLevel: 0.9 });
    expect(scored.map((r) => Number(r.lower))).toEqual(batch.lower.map((x) => expect.closeTo(x, 3)));
    expect(scored.map((r) => Number(r.upper))).toEqual(batch.upper.map((x) => expect.closeTo(x, 3)));
    const plain = await readParquet(join(t.config.scoringDir, "plain.parquet"));
    expect(Object.keys(plain[0] ?? {})).not.toContain("lower");
    expect(Object.keys(plain[0] ?? {})).not.toContain("upper");
  }, 60_000);

  it("refuses a bad interval_level before queueing, naming the field", async () => {
    const predict = connectClient(t.baseUrl, PredictService, t.tokens.trainer);
    const error = await predict
      .startScoring({ input: "hours.csv", output: "bad.parquet", intervalLevel: 2 })
      .catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    expect((error as ConnectError).rawMessage).toContain("interval_level");
  });
});

describe("a version without a calibration", () => {
  it("refuses interval_level with failed_precondition naming the field, on every protocol", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.admin);
    const { versions } = await registry.listModelVersions({ modelName: "bike-demand" });
    const { version: calibrated } = await registry
      .getModelVersion({
        modelName: "bike-demand",
        versionOrAlias: "production",
      })
      .then((r) => r.version ?? { version: "" });
    expect(versions.length).toBeGreaterThan(0);
    const tiny = await registerTinyModel(t.server.registry, "bike-demand");
    await registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: tiny.version,
      reason: "test: uncalibrated",
      force: true,
    });
    try {
      await http("POST", "/model/reload", undefined, t.tokens.admin);
      for (const [, transport] of transports) {
        const client = predictClient(transport());
        const plain = await client.predict({ conditions }, auth());
        expect(plain.modelVersion).toBe(tiny.version);
        const error = await client
          .predict({ conditions, intervalLevel: 0.9 }, auth())
          .catch((e: unknown) => e);
        expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
        expect((error as ConnectError).rawMessage).toContain("interval_level");
      }
      const legacy = await http("POST", "/predict/confidence", conditions);
      expect(legacy.status).toBe(400);
      expect(legacy.json.detail).toContain("interval_level");
      // A scoring job that asks for intervals fails, naming the field, instead of writing made-up bounds.
      const scoring = connectClient(t.baseUrl, PredictService, t.tokens.trainer);
      const { job } = await scoring.startScoring({
        input: "hours.csv",
        output: "uncalibrated.parquet",
        intervalLevel: 0.9,
      });
      const train = connectClient(t.baseUrl, TrainService, t.tokens.trainer);
      let state = JobState.QUEUED;
      let message = "";
      while (![JobState.SUCCEEDED, JobState.FAILED].includes(state)) {
        await new Promise((r) => setTimeout(r, 100));
        const { job: now } = await train.getJob({ jobId: job?.id as string });
        state = now?.state ?? JobState.QUEUED;
        message = now?.error ?? "";
      }
      expect(state).toBe(JobState.FAILED);
      expect(message).toContain("interval_level");
    } finally {
      await registry.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: calibrated,
        reason: "test: back",
        force: true,
      });
      await http("POST", "/model/reload", undefined, t.tokens.admin);
    }
  });
});
