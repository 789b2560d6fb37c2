import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService, PredictStreamRequestSchema } from "../../gen/bikeshare/v1/predict_pb.js";
import { InProcessQueue } from "../../pipelines/jobs/queue.js";
import { errorInterceptor } from "../../services/errors.js";
import { startScoringHandler } from "../../services/jobs/score-job.js";
import { JobStore } from "../../services/jobs/store.js";
import { createPredictService, type ModelSlot, type Served } from "../../services/predict/predict-service.js";
import type { ServingModel } from "../../services/predict/serving-model.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { violationsOf } from "../helpers/rpc-errors.js";
import {
  conditionsAt,
  loadTinyModel,
  TINY_AFTERNOON,
  TINY_CARD,
  TINY_MORNING,
} from "../helpers/tiny-model.js";

// PredictService over connect's in-memory transport: the real handlers, codes and error details, no sockets.

let dir: string;
let db: Database;
let registry: Registry;
let jobs: JobStore;
let model: ServingModel;
const queued: string[] = [];
const queue = new InProcessQueue(async (jobId) => {
  queued.push(jobId);
});
const served: Served[] = [];
const slot: { current: ServingModel | undefined } = { current: undefined };

function clientOf(modelSlot: ModelSlot, maxBatchSize = 5) {
  const service = createPredictService(
    modelSlot,
    async (s) => {
      served.push(s);
    },
    { maxBatchSize },
    startScoringHandler({ jobs, queue, scoringDir: dir }),
  );
  return createClient(
    PredictService,
    createRouterTransport((router) => router.service(PredictService, service), {
      router: { interceptors: [errorInterceptor()] },
    }),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-fast-predict-"));
  db = await Database.open(":memory:");
  registry = await Registry.open(db, join(dir, "models"));
  jobs = await JobStore.open(db);
  model = await loadTinyModel(registry, "tiny");
  slot.current = model;
});

afterAll(async () => {
  await queue.close();
  await model?.retire();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("PredictService (in-memory transport)", () => {
  it("answers unavailable for Predict and GetModelInfo while no model is loaded", async () => {
    const client = clientOf({ current: undefined });
    const predict = await client.predict({ conditions: conditionsAt(8) }).catch((e: unknown) => e);
    expect(predict).toBeInstanceOf(ConnectError);
    expect((predict as ConnectError).code).toBe(Code.Unavailable);
    expect((predict as ConnectError).rawMessage).toContain("no model is loaded yet");
    const info = await client.getModelInfo({}).catch((e: unknown) => e);
    expect((info as ConnectError).code).toBe(Code.Unavailable);
  });

  it("predicts with the served model, and hands what it served to onServed before answering", async () => {
    const client = clientOf(slot);
    served.length = 0;
    const morning = await client.predict({ conditions: conditionsAt(8, true) });
    expect(morning.prediction).toBe(TINY_MORNING);
    expect(morning.modelVersion).toBe(model.version);
    expect(morning.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(served).toHaveLength(1);
    expect(served[0]?.requestId).toBe(morning.requestId);
    expect(served[0]?.records[0]?.hr).toBe(8);
    expect(served[0]?.hourStarts).toEqual([Date.UTC(2012, 6, 11, 12)]);
    expect(Array.from(served[0]?.predictions ?? [])).toEqual([TINY_MORNING]);

    const batch = await client.predictBatch({ rows: [conditionsAt(6), conditionsAt(12), conditionsAt(23)] });
    expect(batch.predictions).toEqual([TINY_MORNING, TINY_AFTERNOON, TINY_AFTERNOON]);
    expect(served[1]?.hourStarts).toEqual([undefined, undefined, undefined]);
  });

  it("answers invalid_argument naming each bad field, with nothing served", async () => {
    const client = clientOf(slot);
    served.length = 0;
    const { hr: _hr, ...noHour } = conditionsAt(8);
    const bad = violationsOf(
      await client.predict({ conditions: { ...noHour, temp: 2 } }).catch((e: unknown) => e),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(expect.arrayContaining(["conditions.hr", "conditions.temp"]));

    const missing = violationsOf(await client.predict({}).catch((e: unknown) => e));
    expect(missing.fields).toEqual(["conditions"]);

    // The hour says 12:00 in Washington; the fields say 8.
    const mismatch = violationsOf(
      await client
        .predict({ conditions: { ...conditionsAt(8), hour: conditionsAt(12, true).hour } })
        .catch((e: unknown) => e),
    );
    expect(mismatch.fields).toEqual(["conditions.hr"]);
    expect(mismatch.descriptions[0]).toContain("must agree with the timestamp");
    expect(served).toHaveLength(0);
  });

  it("bounds a batch by its row limit and names the bad row of a batch", async () => {
    const client = clientOf(slot, 3);
    const tooMany = violationsOf(
      await client.predictBatch({ rows: Array.from({ length: 4 }, () => conditionsAt(8)) }).catch((e) => e),
    );
    expect(tooMany.fields).toEqual(["rows"]);
    expect(tooMany.descriptions[0]).toBe("has 4 rows; the limit is 3");

    const badRow = violationsOf(
      await client
        .predictBatch({ rows: [conditionsAt(8), { ...conditionsAt(8), weekday: 9 }] })
        .catch((e) => e),
    );
    expect(badRow.code).toBe(Code.InvalidArgument);
    expect(badRow.fields).toEqual(["rows[1].weekday"]);
  });

  it("streams predictions with offsets, and numbers a bad row from the start of the stream", async () => {
    const client = clientOf(slot);
    async function* messages() {
      yield create(PredictStreamRequestSchema, { rows: [conditionsAt(1), conditionsAt(13)] });
      yield create(PredictStreamRequestSchema, { rows: [conditionsAt(14)] });
      yield create(PredictStreamRequestSchema, { rows: [{ ...conditionsAt(2), hum: -1 }] });
    }
    const answers: { offset: bigint; predictions: number[] }[] = [];
    const error = await (async () => {
      for await (const res of client.predictStream(messages())) {
        answers.push({ offset: res.offset, predictions: res.predictions });
      }
    })().catch((e: unknown) => e);
    expect(answers).toEqual([
      { offset: 0n, predictions: [TINY_MORNING, TINY_AFTERNOON] },
      { offset: 2n, predictions: [TINY_AFTERNOON] },
    ]);
    const bad = violationsOf(error);
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(["rows[3].hum"]);
  });

  it("describes the served model from its card", async () => {
    const { model: info } = await clientOf(slot).getModelInfo({});
    expect(info).toMatchObject({
      name: "tiny",
      version: model.version,
      family: ModelFamily.GBTREE,
      objective: TINY_CARD.objective,
      featureNames: TINY_CARD.featureNames,
      featureImportance: [{ feature: "hr", importance: 1 }],
      metrics: { test_rmse: 42 },
      runtime: "onnxruntime-node",
    });
  });

  it("routes StartScoring to the scoring handler it was given: bad paths name the field, a good request queues a job", async () => {
    const client = clientOf(slot);
    const outside = violationsOf(
      await client.startScoring({ input: "../etc/passwd", output: "out.parquet" }).catch((e: unknown) => e),
    );
    expect(outside.code).toBe(Code.InvalidArgument);
    expect(outside.fields).toEqual(["input"]);

    await writeFile(join(dir, "hours.csv"), "season,yr,mnth,hr,holiday,weekday,workingday\n");
    const { job } = await client.startScoring({
      input: "hours.csv",
      output: "scored.parquet",
      reason: "fast",
    });
    expect(job).toMatchObject({ kind: "score", reason: "fast", requestedBy: "anonymous" });
    expect((await jobs.get(job?.id ?? ""))?.kind).toBe("score");
    await expect.poll(() => queued).toEqual([job?.id]);
  });
});
