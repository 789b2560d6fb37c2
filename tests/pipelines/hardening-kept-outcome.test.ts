import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BullExecutor, type RunningWorker, startWorker } from "../../pipelines/jobs/bullmq.js";
import type { TrainingOutcome } from "../../pipelines/training/job.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { QUICK_REQUEST } from "../helpers/server.js";

let redis: TestRedis;
let worker: RunningWorker | undefined;
let executor: BullExecutor | undefined;
const started: string[] = [];
const reused: string[] = [];
let outageDone: Promise<void> | undefined;

beforeAll(async () => {
  redis = await startRedis();
  worker = await startWorker(redis.url, {
    // A short lock: a Redis outage longer than it loses the job's lock, as a long one does in production.
    lockDurationMs: 1000,
    onStarted: (_kind, jobId) => started.push(jobId),
    onReused: (_kind, jobId) => reused.push(jobId),
    onError: () => {}, // the outage is expected here; tests/pipelines/hardening-queue-errors.test.ts covers reporting
    around: async (_kind, _jobId, task) => {
      const output = await task();
      // Redis goes away between the end of the computation and the job's completion.
      if (!outageDone) {
        await redis.stop();
        outageDone = new Promise<void>((resolve, reject) => {
          setTimeout(() => redis.start().then(resolve, reject), 3000);
        });
      }
      return output;
    },
  });
  executor = new BullExecutor(redis.url, { recheckMs: 1000, onError: () => {} });
}, 60_000);

afterAll(async () => {
  await outageDone;
  await executor?.close();
  await worker?.close();
  await redis?.destroy();
});

describe("a job whose lock was lost while Redis was away after it finished", () => {
  it("is not computed again: its retry returns the outcome the first attempt kept", async () => {
    const jobId = randomUUID();
    const output = (await executor?.run(
      "train",
      jobId,
      { request: QUICK_REQUEST, dataPath: HOUR_CSV, nthread: 1 },
      () => {},
      new AbortController().signal,
    )) as TrainingOutcome;
    expect(output.winner.spec.family).toBe("gbtree");
    expect(outageDone).toBeDefined();
    expect(started).toEqual([jobId]);
    expect(reused).toEqual([jobId]);
  }, 600_000);
});
