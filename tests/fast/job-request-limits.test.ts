import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { InProcessQueue } from "../../pipelines/jobs/queue.js";
import { errorInterceptor } from "../../services/errors.js";
import { JobEvents } from "../../services/jobs/events.js";
import { startScoringHandler } from "../../services/jobs/score-job.js";
import { JobStore } from "../../services/jobs/store.js";
import { Database } from "../../services/storage/database.js";
import { createTrainService } from "../../services/train/train-service.js";
import { violationsOf } from "../helpers/rpc-errors.js";

// StartTraining, CancelJob and StartScoring over connect's in-memory transport and an in-memory
// DuckDB: bad requests are refused up front, naming the field, and store no job. The queue holds
// each job until it is cancelled, so nothing trains or scores.

let db: Database;
let jobs: JobStore;
let queue: InProcessQueue;
let dir: string;
let train: ReturnType<typeof createClient<typeof TrainService>>;
let predict: ReturnType<typeof createClient<typeof PredictService>>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "job-limits-"));
  await mkdir(join(dir, "scoring"));
  await writeFile(join(dir, "scoring", "hours.csv"), "instant\n1\n");
  db = await Database.open(":memory:");
  jobs = await JobStore.open(db);
  queue = new InProcessQueue(async (_jobId, signal) => {
    await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  });
  const events = new JobEvents();
  const transport = createRouterTransport(
    (router) => {
      router.service(TrainService, createTrainService({ jobs, queue, events, defaultExperiment: "e" }));
      router.service(PredictService, {
        startScoring: startScoringHandler({ jobs, queue, scoringDir: join(dir, "scoring") }),
      });
    },
    { router: { interceptors: [errorInterceptor()] } },
  );
  train = createClient(TrainService, transport);
  predict = createClient(PredictService, transport);
});

afterAll(async () => {
  await queue?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

const jobCount = async () => (await jobs.list({ limit: 1000, offset: 0 })).length;
const refused = (p: Promise<unknown>) => p.then(() => undefined).catch((e: unknown) => e);

describe("job request limits", () => {
  it("refuses a reason over 1000 characters and an idempotency key over 128 or unprintable, storing no job", async () => {
    const before = await jobCount();
    const long = violationsOf(await refused(train.startTraining({ reason: "x".repeat(6_000_000) })));
    expect(long).toMatchObject({ code: Code.InvalidArgument, fields: ["reason"] });
    expect(long.descriptions[0]).toBe("must be at most 1000 characters, got 6000000");
    const key = violationsOf(await refused(train.startTraining({ idempotencyKey: "k".repeat(129) })));
    expect(key).toMatchObject({ code: Code.InvalidArgument, fields: ["idempotency_key"] });
    const unprintable = violationsOf(await refused(train.startTraining({ idempotencyKey: "k\u0000é" })));
    expect(unprintable.fields).toEqual(["idempotency_key"]);
    const scoring = violationsOf(
      await refused(
        predict.startScoring({
          input: "hours.csv",
          output: "a.parquet",
          reason: "y".repeat(1001),
          idempotencyKey: "z".repeat(200),
        }),
      ),
    );
    expect(scoring).toMatchObject({ code: Code.InvalidArgument, fields: ["reason", "idempotency_key"] });
    expect(await jobCount()).toBe(before);
    // At the limits: accepted, line breaks in a reason included.
    const { job } = await train.startTraining({
      reason: `a\n${"r".repeat(998)}`,
      idempotencyKey: "k".repeat(128),
    });
    expect(job?.reason.length).toBe(1000);
    await train.cancelJob({ jobId: job?.id ?? "" });
  });

  it("refuses a CancelJob reason over 1000 characters and leaves the job running", async () => {
    const { job } = await train.startTraining({ reason: "to cancel" });
    const id = job?.id ?? "";
    const bad = violationsOf(await refused(train.cancelJob({ jobId: id, reason: "c".repeat(1001) })));
    expect(bad).toMatchObject({ code: Code.InvalidArgument, fields: ["reason"] });
    expect((await jobs.get(id))?.state).toBe("queued");
    await train.cancelJob({ jobId: id, reason: "ok" });
  });

  it("bounds param_overrides (count, names, values) and the lists of a training request", async () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`p${i}`, "1"]));
    expect(violationsOf(await refused(train.startTraining({ paramOverrides: many }))).fields).toEqual([
      "param_overrides",
    ]);
    const lists = violationsOf(
      await refused(train.startTraining({ experiment: "e".repeat(257), families: Array(17).fill(1) })),
    );
    expect(lists.fields).toEqual(["experiment", "families"]);
    const bad = violationsOf(
      await refused(
        train.startTraining({
          paramOverrides: { ["a".repeat(65)]: "1", gamma: "9".repeat(257), lambda: "1\u0000" },
        }),
      ),
    );
    expect(bad.fields).toEqual([
      `param_overrides["${"a".repeat(64)}"]`,
      'param_overrides["gamma"]',
      'param_overrides["lambda"]',
    ]);
  });

  it("refuses overrides the training job would refuse after queueing: a non-number, a reserved name", async () => {
    const before = await jobCount();
    const bad = violationsOf(
      await refused(train.startTraining({ paramOverrides: { max_depth: "banana", objective: "reg:gamma" } })),
    );
    expect(bad).toMatchObject({
      code: Code.InvalidArgument,
      fields: ['param_overrides["max_depth"]', 'param_overrides["objective"]'],
    });
    expect(bad.descriptions[0]).toBe('override max_depth must be a number, got "banana"');
    expect(await jobCount()).toBe(before);
    const { job } = await train.startTraining({
      paramOverrides: { max_depth: "6", grow_policy: "lossguide" },
    });
    await train.cancelJob({ jobId: job?.id ?? "" });
  });

  it("refuses a NUL or other control character in a scoring path with invalid_argument naming the field", async () => {
    for (const [request, field] of [
      [{ input: "hours\u0000.csv", output: "a.parquet" }, "input"],
      [{ input: "hours.csv", output: "a\u0000.parquet" }, "output"],
      [{ input: "hours.csv", output: "a.parquet", invalidOutput: "bad\u0000.csv" }, "invalid_output"],
      [{ input: "hours.csv", output: "a\n.parquet" }, "output"],
    ] as const) {
      const bad = violationsOf(await refused(predict.startScoring(request)));
      expect(bad, JSON.stringify(request)).toMatchObject({ code: Code.InvalidArgument, fields: [field] });
      expect(bad.descriptions[0]).toContain("control characters");
    }
  });

  it("refuses scoring requests whose input, output and invalid-rows file are not three different files", async () => {
    const before = await jobCount();
    for (const [request, field] of [
      [{ input: "hours.csv", output: "a.parquet", invalidOutput: "hours.csv" }, "invalid_output"],
      [{ input: "hours.csv", output: "a.parquet", invalidOutput: "./hours.csv" }, "invalid_output"],
      [{ input: "hours.csv", output: "out/../hours.csv.parquet", invalidOutput: "x.csv" }, ""],
    ] as const) {
      const result = await refused(predict.startScoring(request));
      if (field === "") {
        // Different files: accepted (the control case).
        expect(result).toBeUndefined();
        continue;
      }
      const bad = violationsOf(result);
      expect(bad, JSON.stringify(request)).toMatchObject({ code: Code.InvalidArgument, fields: [field] });
      expect(bad.descriptions[0]).toContain("three different files");
    }
    expect(await jobCount()).toBe(before + 1);
  });

  it("keeps idempotency keys per job kind, and refuses a reused key with a different request", async () => {
    const scoring = await predict.startScoring({
      input: "hours.csv",
      output: "k.parquet",
      idempotencyKey: "k1",
    });
    const training = await train.startTraining({ reason: "same key", idempotencyKey: "k1" });
    expect(training.job?.kind).toBe("train");
    expect(training.job?.id).not.toBe(scoring.job?.id);
    // The same request again: the same job.
    const again = await predict.startScoring({
      input: "hours.csv",
      output: "k.parquet",
      idempotencyKey: "k1",
    });
    expect(again.job?.id).toBe(scoring.job?.id);
    const different = await refused(
      predict.startScoring({ input: "hours.csv", output: "other.parquet", idempotencyKey: "k1" }),
    );
    expect(different).toBeInstanceOf(ConnectError);
    expect((different as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((different as ConnectError).rawMessage).toBe(
      `idempotency_key "k1" was already used for job ${scoring.job?.id} with a different request; use a new key for a new request`,
    );
    await train.cancelJob({ jobId: training.job?.id ?? "" });
    await train.cancelJob({ jobId: scoring.job?.id ?? "" });
  });
});
