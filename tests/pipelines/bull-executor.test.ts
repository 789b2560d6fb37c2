/**
 * The server's side of BullMQ jobs against a real redis-server and a worker in this process: every
 * job's outcome and its last progress reach the caller, however the finish falls between the
 * executor's own looks at the job.
 */

import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FEATURE_NAMES, RAW_FIELD_NAMES } from "../../core/features/index.js";
import { xgboostToOnnx } from "../../core/onnx/index.js";
import { train } from "../../core/xgboost/index.js";
import { BullExecutor, type RunningWorker, startWorker } from "../../pipelines/jobs/bullmq.js";
import type { ScoringProgress } from "../../pipelines/scoring/score-file.js";
import { readHourCsvRecords } from "../helpers/hour-csv.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";

const ROWS = 50;
const JOBS = 30;

let redis: TestRedis;
let dir: string;
let onnx: Uint8Array;
let worker: RunningWorker;

beforeAll(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), "bikeshare-executor-"));
  // Any model of the right width will do: the test is about the outcome's journey, not its numbers.
  const cols = FEATURE_NAMES.length;
  const rows = 200;
  const data = Float32Array.from({ length: rows * cols }, (_, i) => (i * 7919) % 101);
  const labels = Float32Array.from({ length: rows }, (_, i) => i % 37);
  const { booster } = await train({
    params: { max_depth: 2, nthread: 1 },
    rounds: 3,
    train: { data, rows, cols, labels },
  });
  onnx = xgboostToOnnx(booster.saveJson(), { featureNames: FEATURE_NAMES });
  booster.dispose();
  const records = readHourCsvRecords().slice(0, ROWS) as Record<string, number>[];
  const csv = [RAW_FIELD_NAMES.join(","), ...records.map((r) => RAW_FIELD_NAMES.map((f) => r[f]).join(","))];
  await writeFile(join(dir, "hours.csv"), `${csv.join("\n")}\n`);
  worker = await startWorker(redis.url, { concurrency: 4 });
}, 60_000);

afterAll(async () => {
  await worker?.close();
  await redis?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("BullExecutor", () => {
  it("hands back every outcome and the last progress of each job, even when a job finishes while it looks", async () => {
    // Looking at each job every millisecond puts many finishes between a look's two Redis calls.
    const executor = new BullExecutor(redis.url, { recheckMs: 1 });
    try {
      const runs = Array.from({ length: JOBS }, async (_, i) => {
        const reports: ScoringProgress[] = [];
        const summary = await executor.run(
          "score",
          randomUUID(),
          {
            input: join(dir, "hours.csv"),
            output: join(dir, `scored-${i}.arrow`),
            invalidOutput: join(dir, `invalid-${i}.csv`),
            onnx,
          },
          (p) => reports.push(p),
          new AbortController().signal,
        );
        return { rowsScored: summary?.rowsScored, lastReported: reports.at(-1)?.rowsScored };
      });
      expect(await Promise.all(runs)).toEqual(
        Array.from({ length: JOBS }, () => ({ rowsScored: ROWS, lastReported: ROWS })),
      );
    } finally {
      await executor.close();
    }
  }, 120_000);
});
