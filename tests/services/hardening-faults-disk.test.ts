import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { JobState, Objective, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import { JobStore } from "../../services/jobs/store.js";
import { createLogger } from "../../services/observability/log.js";
import { type RunningServer, startServer } from "../../services/server.js";
import { Database } from "../../services/storage/database.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import {
  connectClient,
  QUICK_REQUEST,
  seedModels,
  type Tokens,
  testConfig,
  writeTokens,
} from "../helpers/server.js";

let dir: string;
let disk: string;
let config: ServerConfig;
let tokens: Tokens;
let server: RunningServer | undefined;
const logs: string[] = [];
const first = modelInput(readHourCsvRecords()[0] as Record<string, number>);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-disk-full-"));
  disk = join(dir, "disk");
  await mkdir(disk);
  // A real small file system that can be filled: the database and the artifacts live on it.
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=96m", "tmpfs", disk]);
  config = await testConfig(disk, { trainThreads: 1 });
  tokens = await writeTokens(config);
  await seedModels(config, 1);
  server = await startServer(
    config,
    createLogger({}, "debug", (line) => logs.push(line)),
  );
}, 300_000);

afterAll(async () => {
  await rm(join(disk, "filler"), { force: true });
  await server?.close().catch(() => undefined);
  execFileSync("umount", [disk]);
  await rm(dir, { recursive: true, force: true });
});

/** Writes a file until the file system has no byte left. */
async function fillDisk(): Promise<void> {
  const file = await open(join(disk, "filler"), "w");
  try {
    for (const size of [1 << 20, 4096, 512]) {
      const chunk = Buffer.alloc(size, 1);
      for (;;) {
        try {
          await file.write(chunk);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "ENOSPC") break;
          throw error;
        }
      }
    }
  } finally {
    await file.close().catch(() => undefined);
  }
}

const training = {
  families: [ModelFamily.GBTREE],
  objectives: [Objective.SQUARED_ERROR],
  searchTrials: 0,
  reason: "disk full test",
};

describe("a disk that fills up during a training job", () => {
  it("fails the job clearly and keeps serving", async () => {
    if (!server) throw new Error("no server");
    const base = `http://127.0.0.1:${server.port}`;
    const train = connectClient(base, TrainService, tokens.trainer);
    const { job } = await train.startTraining(training);
    const jobId = job?.id ?? "";
    let deadline = Date.now() + 120_000;
    for (;;) {
      const { job: now } = await train.getJob({ jobId });
      if (now?.state === JobState.RUNNING && now.stage === "train") break;
      if (Date.now() > deadline) throw new Error(`job never reached training: ${JSON.stringify(now)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await fillDisk();

    deadline = Date.now() + 240_000;
    let done = (await train.getJob({ jobId })).job;
    while (done?.state === JobState.RUNNING || done?.state === JobState.QUEUED) {
      if (Date.now() > deadline) throw new Error(`job still ${JobState[done.state]} with the disk full`);
      await new Promise((r) => setTimeout(r, 250));
      done = (await train.getJob({ jobId })).job;
    }
    expect(done?.state, done?.error).toBe(JobState.FAILED);
    expect(done?.error).toMatch(/no space left on device/i);
    expect(done?.error).toContain(disk);

    // Predictions go on, and the server says it is ready and that its store is not writable.
    const predicted = await fetch(`${base}/predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(first),
    });
    expect(predicted.status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^bikeshare_store_writable 0$/m);
    expect(logs.some((l) => l.includes("the database cannot be written") && l.includes(disk))).toBe(true);

    // A new job is refused with a code a client can act on, not `internal`.
    const refused = await train.startTraining(training).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(refused?.code, refused?.message).toBe(Code.ResourceExhausted);
    expect(refused?.message).toMatch(/no space left on device/i);

    // Space comes back: the store takes writes again and new jobs are accepted.
    await rm(join(disk, "filler"));
    const { job: again } = await train.startTraining({ ...training, reason: "after space returned" });
    expect(again?.state).toBe(JobState.QUEUED);
    expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^bikeshare_store_writable 1$/m);
    await train.cancelJob({ jobId: again?.id ?? "" });
  }, 600_000);

  it("after a restart with the disk still full, a resumed job ends instead of staying running", async () => {
    await server?.close();
    server = undefined;
    // A job the previous process had started when it went down.
    const db = await Database.open(config.dbPath);
    const { job } = await (await JobStore.open(db)).create(QUICK_REQUEST, "test");
    await (await JobStore.open(db)).markRunning(job.id);
    await db.close();
    await fillDisk();

    server = await startServer(
      config,
      createLogger({}, "debug", (line) => logs.push(line)),
    );
    const train = connectClient(`http://127.0.0.1:${server.port}`, TrainService, tokens.trainer);
    const deadline = Date.now() + 240_000;
    let done = (await train.getJob({ jobId: job.id })).job;
    while (done?.state === JobState.RUNNING || done?.state === JobState.QUEUED) {
      if (Date.now() > deadline)
        throw new Error(`resumed job still ${JobState[done.state]} with the disk full`);
      await new Promise((r) => setTimeout(r, 250));
      done = (await train.getJob({ jobId: job.id })).job;
    }
    expect(done?.state, done?.error).toBe(JobState.FAILED);
    expect(done?.error).toMatch(/no space left on device/i);
    expect(done?.error).toContain(disk);
  }, 600_000);
});
