/**
 * The Open Inference Protocol v2 (docs/oip-v2.md) through the clients people already have: Triton's
 * tritonclient (HTTP and gRPC; JSON, binary tensor data, raw and typed gRPC contents) and the kserve SDK's
 * REST client, from the pinned venv of scripts/oip-venv.sh, against a real server with a trained model.
 * Every prediction must equal Predict's for the same rows, every error must name the tensor and the row,
 * and the prediction log must hold every row served.
 */
import { execFile, spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { promisify } from "node:util";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { openDatabase } from "../../services/storage/open.js";
import { MODEL_FIELDS, modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
const PYTHON = ".cache/oip-venv/bin/python";

// Winter rows only, so that every timestamp is in EST (-05:00); spread over both years and all hours.
const WINTER = readHourCsvRecords().filter((r) => [1, 2, 12].includes(r.mnth as number));
const PICKED = [0, 37, 400, 1234, 2222, 3001, 4100].map((i) => WINTER[i] as Record<string, number | string>);
const ROWS = PICKED.map((r) => MODEL_FIELDS.map((f) => modelInput(r)[f] as number));
const STAMPS = PICKED.map((r) => `${r.dteday}T${String(r.hr).padStart(2, "0")}:00:00-05:00`);
const N = ROWS.length;

type Outcome = { ok: unknown } | { error: string; status: string | number };
type Outcomes = Record<string, Outcome>;

let t: TestServer;
let closed = false;
let model: string;
let version: string;
/** Predict's answers for the rows as sent in double precision and as rounded to FP32, with and without timestamps. */
const ref: Record<"exact" | "fp32" | "exactStamped" | "fp32Stamped", number[]> = {
  exact: [],
  fp32: [],
  exactStamped: [],
  fp32Stamped: [],
};
let triton: Outcomes;
let kserve: Outcomes;

function python(script: string, job: unknown): Promise<Outcomes> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [script], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`${script} exited ${code}: ${stderr}`));
      else resolve(JSON.parse(stdout) as Outcomes);
    });
    child.stdin.end(JSON.stringify(job));
  });
}

const ok = (outcome: Outcome | undefined): unknown => {
  if (outcome === undefined || !("ok" in outcome))
    throw new Error(`expected success, got ${JSON.stringify(outcome)}`);
  return outcome.ok;
};
const failed = (outcome: Outcome | undefined): { error: string; status: string | number } => {
  if (outcome === undefined || !("error" in outcome))
    throw new Error(`expected an error, got ${JSON.stringify(outcome)}`);
  return outcome;
};

async function predictBatch(values: number[][], stamps?: string[]): Promise<number[]> {
  const client = connectClient(t.baseUrl, PredictService, t.tokens.reader);
  const rows = values.map((row, i) => ({
    ...Object.fromEntries(MODEL_FIELDS.map((f, c) => [f, row[c] as number])),
    ...(stamps ? { hour: timestampFromDate(new Date(stamps[i] as string)) } : {}),
  }));
  return (await client.predictBatch({ rows })).predictions;
}

beforeAll(async () => {
  await run("bash", ["scripts/oip-venv.sh"], { timeout: 900_000 });
  // Predict needs a token, so that OIP needing one too is checked, not assumed.
  t = await startTestServer({ predictNeedsToken: true }, { seedVersions: 1 });
  const live = t.server.live.current;
  if (!live) throw new Error("no model loaded");
  model = live.name;
  version = live.version;
  const fp32 = ROWS.map((row) => row.map(Math.fround));
  ref.exact = await predictBatch(ROWS);
  ref.fp32 = await predictBatch(fp32);
  ref.exactStamped = await predictBatch(ROWS, STAMPS);
  ref.fp32Stamped = await predictBatch(fp32, STAMPS);
  const job = {
    address: `127.0.0.1:${t.server.port}`,
    token: t.tokens.reader,
    model,
    version,
    rows: ROWS,
    timestamps: STAMPS,
  };
  [triton, kserve] = await Promise.all([
    python("tests/python/oip_triton.py", job),
    python("tests/python/oip_kserve.py", job),
  ]);
}, 900_000);

afterAll(async () => {
  if (!closed) await t?.stop();
});

describe("tritonclient over HTTP", () => {
  it("sees the server live and ready and the model ready, with its metadata", () => {
    expect(ok(triton["http.live"])).toBe(true);
    expect(ok(triton["http.ready"])).toBe(true);
    expect(ok(triton["http.model_ready"])).toBe(true);
    const metadata = ok(triton["http.metadata"]) as {
      name: string;
      versions: string[];
      platform: string;
      inputs: { name: string; datatype: string; shape: number[] }[];
      outputs: { name: string; datatype: string; shape: number[] }[];
    };
    expect(metadata.name).toBe(model);
    expect(metadata.versions).toEqual([version]);
    expect(metadata.platform).toBe("onnxruntime_onnx");
    expect(metadata.inputs.map((i) => i.name)).toEqual([...MODEL_FIELDS, "timestamp"]);
    expect(metadata.inputs.find((i) => i.name === "hr")).toEqual({
      name: "hr",
      datatype: "INT32",
      shape: [-1],
    });
    expect(metadata.inputs.find((i) => i.name === "temp")).toEqual({
      name: "temp",
      datatype: "FP32",
      shape: [-1],
    });
    expect(metadata.inputs.at(-1)).toEqual({ name: "timestamp", datatype: "BYTES", shape: [-1] });
    expect(metadata.outputs).toEqual([{ name: "cnt", datatype: "FP32", shape: [-1, 1] }]);
    expect(ok(triton["http.server_metadata"])).toMatchObject({
      name: "bikeshare",
      extensions: ["binary_tensor_data"],
    });
  });

  it("predicts what Predict predicts: named tensors and the [N, 12] tensor, JSON and binary data", () => {
    expect(ok(triton["http.named_binary"])).toEqual(ref.fp32);
    expect(ok(triton["http.named_json"])).toEqual(ref.exact);
    expect(ok(triton["http.matrix_binary"])).toEqual(ref.fp32Stamped);
    expect(ok(triton["http.matrix_json"])).toEqual(ref.exactStamped);
    // The timestamp feeds the date-aware features: the answers differ from those without it.
    expect(ref.exactStamped).not.toEqual(ref.exact);
  });

  it("answers errors in the protocol's JSON, naming the tensor and row, the version and the token", () => {
    const bad = failed(triton["http.bad_row"]);
    expect(bad.status).toBe("400");
    expect(bad.error).toContain('tensor "hr" row 2');
    expect(bad.error).toContain("got 24");
    const wrongVersion = failed(triton["http.bad_version"]);
    expect(wrongVersion.status).toBe("404");
    expect(wrongVersion.error).toContain(`version "999" is not served`);
    expect(wrongVersion.error).toContain(`version ${version} (the production alias)`);
    const unknown = failed(triton["http.unknown_model"]);
    expect(unknown.status).toBe("404");
    expect(unknown.error).toContain('model "not-a-model" is not served');
    const anonymous = failed(triton["http.no_token"]);
    expect(anonymous.status).toBe("401");
    expect(anonymous.error).toContain("bearer token");
  });
});

describe("tritonclient over gRPC (inference.GRPCInferenceService on the same port)", () => {
  it("sees the server live and ready and the model ready, with its metadata", () => {
    expect(ok(triton["grpc.live"])).toBe(true);
    expect(ok(triton["grpc.ready"])).toBe(true);
    expect(ok(triton["grpc.model_ready"])).toBe(true);
    const metadata = ok(triton["grpc.metadata"]) as {
      name: string;
      versions: string[];
      outputs: { name: string; datatype: string; shape: string[] }[];
    };
    expect(metadata.name).toBe(model);
    expect(metadata.versions).toEqual([version]);
    // protobuf's JSON writes int64 as strings.
    expect(metadata.outputs).toEqual([{ name: "cnt", datatype: "FP32", shape: ["-1", "1"] }]);
  });

  it("predicts what Predict predicts from raw_input_contents and from typed contents", () => {
    expect(ok(triton["grpc.named_raw"])).toEqual(ref.fp32);
    expect(ok(triton["grpc.matrix_raw"])).toEqual(ref.exactStamped);
    expect(ok(triton["grpc.typed"])).toEqual(ref.exactStamped);
  });

  it("answers INVALID_ARGUMENT naming the tensor and row, NOT_FOUND for another version, UNAUTHENTICATED without a token", () => {
    const bad = failed(triton["grpc.bad_row"]);
    expect(bad.status).toBe("StatusCode.INVALID_ARGUMENT");
    expect(bad.error).toContain('tensor "temp" row 1');
    expect(bad.error).toContain("got 1.5");
    const wrongVersion = failed(triton["grpc.bad_version"]);
    expect(wrongVersion.status).toBe("StatusCode.NOT_FOUND");
    expect(wrongVersion.error).toContain(`version "999" is not served`);
    expect(failed(triton["grpc.no_token"]).status).toBe("StatusCode.UNAUTHENTICATED");
  });
});

describe("the kserve SDK's REST client", () => {
  it("sees the server and the model ready and predicts what Predict predicts", () => {
    expect(ok(kserve["kserve.live"])).toBe(true);
    expect(ok(kserve["kserve.ready"])).toBe(true);
    expect(ok(kserve["kserve.model_ready"])).toBe(true);
    expect(ok(kserve["kserve.json"])).toEqual(ref.fp32Stamped);
    expect(ok(kserve["kserve.binary"])).toEqual(ref.fp32Stamped);
  });

  it("gets a 400 naming the [N, 12] tensor, the row and the column's field", () => {
    const bad = failed(kserve["kserve.bad_row"]);
    expect(bad.status).toBe(400);
    expect(bad.error).toContain('tensor "input" row 1 column 7 (weathersit)');
  });
});

describe("the REST API's edges", () => {
  const infer = (body: unknown, path = `/v2/models/${model}/infer`) =>
    fetch(`${t.baseUrl}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.tokens.reader}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const namedInputs = (rows: number[][]) =>
    MODEL_FIELDS.map((name, c) => ({
      name,
      datatype: "FP64",
      shape: [rows.length],
      data: rows.map((r) => r[c]),
    }));

  it("takes nested JSON data for the [N, 12] tensor and a version path", async () => {
    const res = await infer(
      { id: "oip-rest-nested", inputs: [{ name: "input", datatype: "FP64", shape: [N, 12], data: ROWS }] },
      `/v2/models/${model}/versions/${version}/infer`,
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      model_name: model,
      model_version: version,
      id: "oip-rest-nested",
      outputs: [{ name: "cnt", datatype: "FP32", shape: [N, 1], data: ref.exact }],
    });
  });

  it("refuses a binary tensor with more elements than the row limit allows, before decoding it", async () => {
    // BIKESHARE_MAX_BATCH's default of 10,000 rows of 12 fields, plus one: a single INT8 byte each.
    const limit = 10_000 * 12;
    const json = Buffer.from(
      JSON.stringify({
        inputs: [
          { name: "input", datatype: "INT8", shape: [1, 12], parameters: { binary_data_size: limit + 1 } },
        ],
      }),
    );
    const res = await fetch(`${t.baseUrl}/v2/models/${model}/infer`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${t.tokens.reader}`,
        "content-type": "application/octet-stream",
        "inference-header-content-length": String(json.length),
      },
      body: Buffer.concat([json, Buffer.alloc(limit + 1)]),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toContain(
      `tensor "input" has ${limit + 1} elements; at most ${limit}`,
    );
  });

  it("names the tensor of each structural mistake", async () => {
    const cases: [unknown, string][] = [
      [{ inputs: namedInputs(ROWS).slice(1) }, 'tensor "season" is missing'],
      [
        { inputs: [...namedInputs(ROWS), { name: "temperature", datatype: "FP32", shape: [N], data: [] }] },
        'tensor "temperature" is not an input',
      ],
      [
        { inputs: namedInputs(ROWS).map((i) => (i.name === "hum" ? { ...i, shape: [N - 1] } : i)) },
        'tensor "hum"',
      ],
      [
        { inputs: namedInputs(ROWS).map((i) => (i.name === "yr" ? { ...i, datatype: "BYTES" } : i)) },
        'tensor "yr" has datatype "BYTES"',
      ],
      [
        { inputs: [{ name: "input", datatype: "FP32", shape: [N, 11], data: ROWS.flat() }] },
        'tensor "input" has shape',
      ],
      [{ inputs: namedInputs(ROWS), outputs: [{ name: "count" }] }, 'tensor "count" is not an output'],
      [
        {
          inputs: [
            ...namedInputs(ROWS),
            {
              name: "timestamp",
              datatype: "BYTES",
              shape: [N],
              data: STAMPS.map((s, i) => (i === 3 ? "yesterday" : s)),
            },
          ],
        },
        'tensor "timestamp" row 3',
      ],
    ];
    for (const [body, expected] of cases) {
      const res = await infer(body);
      expect(res.status).toBe(400);
      const json = (await res.json()) as { error: string };
      expect(Object.keys(json)).toEqual(["error"]);
      expect(json.error).toContain(expected);
    }
  });

  it("answers 404 in the protocol's JSON for a path it does not serve, and health without a token", async () => {
    const res = await fetch(`${t.baseUrl}/v2/models/${model}/explain`, { method: "POST" });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: string }).error).toContain(
      "no such Open Inference Protocol route",
    );
    expect(await (await fetch(`${t.baseUrl}/v2/health/live`)).json()).toEqual({ live: true });
    expect(await (await fetch(`${t.baseUrl}/v2/health/ready`)).json()).toEqual({ ready: true });
  });
});

describe("the prediction log", () => {
  it("holds every row served through OIP, under the request's id, with its hour when one was sent", async () => {
    // Closing the server flushes the log; the database is then read as the monitoring jobs read it.
    await t.server.close();
    closed = true;
    const db = await openDatabase(t.config);
    try {
      const logged = await db.all<{
        request_id: string;
        row_index: number;
        hour: unknown;
        prediction: number;
      }>(
        `SELECT request_id, row_index, hour, prediction FROM predictions
          WHERE request_id LIKE 'oip-%' ORDER BY request_id, row_index`,
      );
      const byId: Record<string, { rows: number; hours: number; predictions: number[] }> = {};
      for (const row of logged) {
        byId[row.request_id] ??= { rows: 0, hours: 0, predictions: [] };
        const entry = byId[row.request_id] as { rows: number; hours: number; predictions: number[] };
        entry.rows++;
        if (row.hour !== null) entry.hours++;
        entry.predictions.push(row.prediction);
      }
      const expected: [string, number[], boolean][] = [
        ["oip-http-named-binary", ref.fp32, false],
        ["oip-http-named-json", ref.exact, false],
        ["oip-http-matrix-binary", ref.fp32Stamped, true],
        ["oip-http-matrix-json", ref.exactStamped, true],
        ["oip-grpc-named-raw", ref.fp32, false],
        ["oip-grpc-matrix-raw", ref.exactStamped, true],
        ["oip-grpc-typed", ref.exactStamped, true],
        ["oip-kserve-json", ref.fp32Stamped, true],
        ["oip-kserve-binary", ref.fp32Stamped, true],
        ["oip-rest-nested", ref.exact, false],
      ];
      for (const [id, predictions, stamped] of expected) {
        expect(byId[id], id).toMatchObject({ rows: N, hours: stamped ? N : 0 });
        expect(byId[id]?.predictions, id).toEqual(predictions);
      }
      // Rejected requests logged nothing.
      expect(byId["oip-kserve-bad"]).toBeUndefined();
    } finally {
      await db.close();
      await rm(dirname(t.config.dbPath), { recursive: true, force: true });
    }
  });
});
