import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { JobState, Objective, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { InProcessQueue } from "../../pipelines/jobs/queue.js";
import { errorInterceptor } from "../../services/errors.js";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { Database } from "../../services/storage/database.js";
import { createTrainService } from "../../services/train/train-service.js";
import { violationsOf } from "../helpers/rpc-errors.js";

// TrainService over connect's in-memory transport and an in-memory DuckDB. The queue is the real
// in-process queue; its handler stands in for the training run and holds each job until it is cancelled.

let db: Database;
let jobs: JobStore;
let queue: InProcessQueue;
const started: string[] = [];
let client: ReturnType<typeof createClient<typeof TrainService>>;

beforeAll(async () => {
  db = await Database.open(":memory:");
  jobs = await JobStore.open(db);
  queue = new InProcessQueue(async (jobId, signal) => {
    started.push(jobId);
    await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  });
  const service = createTrainService({
    jobs,
    queue,
    events: new JobEvents(),
    defaultExperiment: "default-exp",
  });
  client = createClient(
    TrainService,
    createRouterTransport((router) => router.service(TrainService, service), {
      router: { interceptors: [errorInterceptor()] },
    }),
  );
});

afterAll(async () => {
  await queue?.close();
  await db?.close();
});

describe("TrainService (in-memory transport)", () => {
  it("refuses a request naming every bad field at once, and stores no job", async () => {
    const bad = violationsOf(
      await client
        .startTraining({
          families: [ModelFamily.GBTREE, 99 as ModelFamily],
          objectives: [Objective.UNSPECIFIED],
          searchTrials: 201,
          paramOverrides: { "Max-Depth": "8" },
          dataFrom: timestampFromDate(new Date("2012-06-01T00:00:00Z")),
          dataUntil: timestampFromDate(new Date("2012-05-01T00:00:00Z")),
        })
        .catch((e: unknown) => e),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual([
      "families[1]",
      "objectives[0]",
      "search_trials",
      'param_overrides["Max-Depth"]',
      "data_until",
    ]);
    expect(bad.descriptions[2]).toBe("must be at most 200, got 201");
    expect(bad.descriptions[4]).toBe("must be after data_from (2012-06-01), got 2012-05-01");
    expect((await client.listJobs({})).jobs).toEqual([]);
  });

  it("stores and queues a valid request once per idempotency key, with the defaults filled in", async () => {
    const request = {
      families: [ModelFamily.LINEAR, ModelFamily.LINEAR],
      searchTrials: 0,
      reason: "fast test",
      idempotencyKey: "key-1",
    };
    const { job } = await client.startTraining(request);
    expect(job).toMatchObject({
      state: JobState.QUEUED,
      kind: "train",
      reason: "fast test",
      requestedBy: "anonymous",
    });
    const stored = await jobs.get(job?.id ?? "");
    expect(stored?.kind === "train" && stored.request).toMatchObject({
      experiment: "default-exp",
      families: ["linear"],
      objectives: [],
      trials: 0,
    });
    const again = await client.startTraining(request);
    expect(again.job?.id).toBe(job?.id);
    await expect.poll(() => started).toEqual([job?.id]);
  });

  it("answers invalid_argument without a job id and not_found for an unknown one", async () => {
    const empty = violationsOf(await client.getJob({}).catch((e: unknown) => e));
    expect(empty).toMatchObject({ code: Code.InvalidArgument, fields: ["job_id"] });
    const unknown = await client.getJob({ jobId: "no-such-job" }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(ConnectError);
    expect((unknown as ConnectError).code).toBe(Code.NotFound);
    expect((unknown as ConnectError).rawMessage).toContain("no-such-job");
  });

  it("cancels a job once; a watcher of the cancelled job gets its outcome", async () => {
    const { job } = await client.startTraining({ reason: "to cancel" });
    const id = job?.id ?? "";
    const cancelled = await client.cancelJob({ jobId: id, reason: "changed my mind" });
    expect(cancelled.job).toMatchObject({ state: JobState.CANCELLED, error: "changed my mind" });
    const twice = await client.cancelJob({ jobId: id }).catch((e: unknown) => e);
    expect((twice as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((twice as ConnectError).rawMessage).toBe(`job ${id} has already been cancelled`);
    const watched = [];
    for await (const e of client.watchJob({ jobId: id })) watched.push(e.state);
    expect(watched).toEqual([JobState.CANCELLED]);
    const { jobs: list } = await client.listJobs({ state: JobState.CANCELLED });
    expect(list.map((j) => j.id)).toEqual([id]);
  });
});
