/**
 * Jobs over a real Debian redis-server and real `bikeshare worker` processes: work is shared,
 * a worker killed mid-job costs a retry and nothing else, and Redis going away stops only the jobs.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { tableFromIPC } from "apache-arrow";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RAW_FIELD_NAMES } from "../../core/features/index.js";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService, RunStatus } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

const ROOT = join(import.meta.dirname, "../..");
const conditions = modelInput(readHourCsvRecords()[5000] as Record<string, number>);

interface WorkerProcess {
  child: ChildProcess;
  /** Job ids this worker started, in order. */
  started: string[];
  /** How each job this worker ran ended, by job id. */
  outcomes: Map<string, string>;
  /** Its warning and error lines, to show when a test fails. */
  troubles: string[];
}

let redis: TestRedis;
let t: TestServer;
const workers: WorkerProcess[] = [];

function startWorkerProcess(): WorkerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "cli/bikeshare.ts"), "worker"], {
    env: {
      ...process.env,
      REDIS_URL: redis.url,
      WORKER_METRICS_PORT: "0",
      // A dead worker's job goes back to the queue after this long without a lock renewal.
      WORKER_LOCK_MS: "10000",
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const worker: WorkerProcess = { child, started: [], outcomes: new Map(), troubles: [] };
  let buffer = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const line of lines) {
      const entry = JSON.parse(line) as { level: string; msg: string; job_id?: string; outcome?: string };
      if (entry.level === "warn" || entry.level === "error") worker.troubles.push(line);
      if (entry.msg === "job started" && entry.job_id) worker.started.push(entry.job_id);
      if (entry.msg === "job finished" && entry.job_id)
        worker.outcomes.set(entry.job_id, entry.outcome ?? "");
    }
  });
  workers.push(worker);
  return worker;
}

async function workerReady(worker: WorkerProcess): Promise<void> {
  // The worker logs "worker ready" once subscribed; waiting for its first stdout line is enough.
  await new Promise<void>((resolve, reject) => {
    worker.child.stdout?.once("data", () => resolve());
    worker.child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

function clientAs<S extends DescService>(service: S, token?: string) {
  return connectClient(t.baseUrl, service, token);
}

async function waitForJob(jobId: string, timeoutMs: number) {
  const trainer = clientAs(TrainService, t.tokens.trainer);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { job } = await trainer.getJob({ jobId });
    if (job && [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(job.state)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${JobState[job?.state ?? 0]}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The warning and error lines of the server and the workers, to say why a job did not succeed. */
function troubles(): string {
  const serverLines = t.logs.filter((l) => /"level":"(warn|error)"/.test(l));
  return [
    "server warnings and errors:",
    ...serverLines,
    "workers' warnings and errors:",
    ...workers.flatMap((w) => w.troubles),
  ].join("\n");
}

async function versionsOfJob(jobId: string) {
  const registry = clientAs(RegistryService, t.tokens.reader);
  const { runs } = await registry.searchRuns({ filter: `tags.job_id = '${jobId}' and tags.role = 'final'` });
  const { versions } = await registry.listModelVersions({ modelName: "bike-demand" });
  return versions.filter((v) => runs.some((r) => r.id === v.runId));
}

beforeAll(async () => {
  redis = await startRedis();
  t = await startTestServer({ redisUrl: redis.url });
  const started = [startWorkerProcess(), startWorkerProcess()];
  await Promise.all(started.map(workerReady));
}, 120_000);

afterAll(async () => {
  for (const w of workers) w.child.kill("SIGKILL");
  await t?.stop();
  await redis?.destroy();
});

describe("jobs on BullMQ workers", () => {
  it("two worker processes share 20 jobs; each registers exactly one version and streams its progress", async () => {
    const trainer = clientAs(TrainService, t.tokens.trainer);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const { job } = await trainer.startTraining({
        families: [ModelFamily.LINEAR],
        searchTrials: 0,
        reason: `test: shared job ${i}`,
      });
      ids.push(job?.id as string);
    }
    const rounds: number[] = [];
    for await (const e of trainer.watchJob({ jobId: ids[0] as string }))
      if (e.candidate) rounds.push(e.round);
    expect(rounds.length).toBeGreaterThan(10);

    const done = await Promise.all(ids.map((id) => waitForJob(id, 240_000)));
    const unsuccessful = done
      .filter((j) => j.state !== JobState.SUCCEEDED || j.error !== "")
      .map((j) => `${j.id} ${JobState[j.state]} (stage ${j.stage}): ${j.error}`);
    expect(unsuccessful, `${unsuccessful.join("\n")}\n${troubles()}`).toEqual([]);
    for (const id of ids) expect(await versionsOfJob(id)).toHaveLength(1);
    // Every candidate's end reached the registry: the last progress of a job is not lost.
    const { runs: open } = await clientAs(RegistryService, t.tokens.reader).searchRuns({
      filter: "attributes.status = 'RUNNING'",
    });
    expect(open.map((r) => r.name)).toEqual([]);
    const [a, b] = workers as [WorkerProcess, WorkerProcess];
    expect(a.started.length).toBeGreaterThan(0);
    expect(b.started.length).toBeGreaterThan(0);
    expect(new Set([...a.started, ...b.started])).toEqual(new Set(ids));
  }, 300_000);

  it("runs a scoring job on a worker", async () => {
    await mkdir(t.config.scoringDir, { recursive: true });
    const rows = readHourCsvRecords().slice(0, 500) as Record<string, number>[];
    const csv = [RAW_FIELD_NAMES.join(","), ...rows.map((r) => RAW_FIELD_NAMES.map((f) => r[f]).join(","))];
    await writeFile(join(t.config.scoringDir, "hours.csv"), `${csv.join("\n")}\n`);
    const { job } = await clientAs(PredictService, t.tokens.trainer).startScoring({
      input: "hours.csv",
      output: "hours.arrow",
    });
    const jobId = job?.id as string;
    const done = await waitForJob(jobId, 120_000);
    expect([done.state, done.error]).toEqual([JobState.SUCCEEDED, ""]);
    expect(done.scoring?.rowsScored).toBe(500n);
    expect(workers.some((w) => w.started.includes(jobId))).toBe(true);
    const table = tableFromIPC(await readFile(join(t.config.scoringDir, "hours.arrow")));
    expect(table.numRows).toBe(500);
  }, 180_000);

  it("cancels a job running on a worker between boosting rounds; nothing is registered", async () => {
    const trainer = clientAs(TrainService, t.tokens.trainer);
    const before = (
      await clientAs(RegistryService, t.tokens.reader).listModelVersions({ modelName: "bike-demand" })
    ).versions.length;
    const { job } = await trainer.startTraining({
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      paramOverrides: { eta: "0.001" },
      reason: "test: cancelled on a worker",
    });
    const jobId = job?.id as string;
    for await (const e of trainer.watchJob({ jobId })) {
      if (e.round >= 5) break;
    }
    await trainer.cancelJob({ jobId, reason: "test" });
    const done = await waitForJob(jobId, 60_000);
    expect(done.state).toBe(JobState.CANCELLED);
    // The worker that held it stopped too (the cancel travels over Redis pub/sub).
    await expect
      .poll(() => workers.map((w) => w.outcomes.get(jobId)).find(Boolean), { timeout: 30_000 })
      .toBe("cancelled");
    const after = (
      await clientAs(RegistryService, t.tokens.reader).listModelVersions({ modelName: "bike-demand" })
    ).versions.length;
    expect(after).toBe(before);
  }, 120_000);

  it("retries a job whose worker was killed with SIGKILL; the registry holds exactly one version for it", async () => {
    const trainer = clientAs(TrainService, t.tokens.trainer);
    const { job } = await trainer.startTraining({
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      paramOverrides: { eta: "0.02" },
      reason: "test: worker dies",
    });
    const jobId = job?.id as string;
    for await (const e of trainer.watchJob({ jobId })) if (e.round >= 20) break;
    const holder = workers.find((w) => w.child.exitCode === null && w.started.includes(jobId));
    expect(holder).toBeDefined();
    holder?.child.kill("SIGKILL");
    await workerReady(startWorkerProcess()); // keep two workers alive

    const done = await waitForJob(jobId, 240_000);
    expect([done.state, done.error]).toEqual([JobState.SUCCEEDED, ""]);
    const others = workers.filter((w) => w !== holder && w.started.includes(jobId));
    expect(others.length).toBeGreaterThan(0);
    expect(await versionsOfJob(jobId)).toHaveLength(1);
    const registry = clientAs(RegistryService, t.tokens.reader);
    const { runs } = await registry.searchRuns({
      filter: `tags.job_id = '${jobId}' and tags.role = 'candidate'`,
    });
    // The killed attempt's run is closed as failed; the retry's run finished.
    expect(runs.map((r) => r.status).sort()).toEqual([RunStatus.FINISHED, RunStatus.FAILED].sort());
  }, 300_000);

  it("keeps predicting while Redis is down, and runs the jobs accepted meanwhile once it is back", async () => {
    await redis.stop();
    const predict = clientAs(PredictService);
    for (let i = 0; i < 20; i++) {
      const res = await predict.predict({ conditions });
      expect(res.prediction).toBeGreaterThan(0);
    }
    const trainer = clientAs(TrainService, t.tokens.trainer);
    const { job } = await trainer.startTraining({
      families: [ModelFamily.LINEAR],
      searchTrials: 0,
      reason: "test: accepted while Redis is down",
    });
    const jobId = job?.id as string;
    await new Promise((r) => setTimeout(r, 2000));
    const { job: waiting } = await trainer.getJob({ jobId });
    expect([JobState.QUEUED, JobState.RUNNING]).toContain(waiting?.state);

    await redis.start();
    const done = await waitForJob(jobId, 120_000);
    expect([done.state, done.error]).toEqual([JobState.SUCCEEDED, ""]);
    expect(await versionsOfJob(jobId)).toHaveLength(1);
  }, 200_000);
});
