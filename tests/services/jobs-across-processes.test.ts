import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService, type WatchJobResponse } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import {
  ACROSS_POLL_MS,
  CancelsAcrossProcesses,
  type Notifications,
  sharedJobEvents,
} from "../../services/jobs/across-processes.js";
import type { JobEvent } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { openDatabase } from "../../services/storage/open.js";
import { testPostgres } from "../helpers/backends.js";
import {
  freePort,
  type ServeProcess,
  seedTinyVersions,
  serveEnv,
  startServe,
} from "../helpers/serve-process.js";
import { connectClient, QUICK_REQUEST, type Tokens, writeTokens } from "../helpers/server.js";

/**
 * Two control processes on one PostgreSQL database behind a balancer that may send each call to
 * either: a job accepted (and run) by A is watched and cancelled through B (docs/deployment.md, "Roles").
 */

let dir: string;
let tokens: Tokens;
let a: ServeProcess;
let b: ServeProcess;
let databaseUrl: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-jobs-across-"));
  await mkdir(join(dir, "models"), { recursive: true });
  tokens = await writeTokens({ tokensPath: join(dir, "tokens.json") } as ServerConfig);
  const url = await (await testPostgres()).createDatabase();
  await seedTinyVersions(url, join(dir, "models"), 1); // a production model: no bootstrap training
  databaseUrl = url;
  a = await startServe(["--role", "control"], serveEnv(dir, url, await freePort()));
  b = await startServe(["--role", "control"], serveEnv(dir, url, await freePort()));
}, 60_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

const TERMINAL = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED];

describe("jobs across two control processes", () => {
  it("WatchJob through B shows the progress of a job A runs, ends with its one terminal event", async () => {
    const { job } = await connectClient(a.baseUrl, TrainService, tokens.trainer).startTraining({
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      reason: "test: watched elsewhere",
    });
    const jobId = job?.id as string;
    const events: WatchJobResponse[] = [];
    // Without the shared channel this stream never ends: the timeout turns that into a failure.
    const watch = connectClient(b.baseUrl, TrainService, tokens.reader).watchJob(
      { jobId },
      { signal: AbortSignal.timeout(150_000) },
    );
    for await (const e of watch) events.push(e);

    expect(events.at(-1)?.state).toBe(JobState.SUCCEEDED);
    expect(events.filter((e) => TERMINAL.includes(e.state))).toHaveLength(1);
    const rounds = events.filter((e) => e.state === JobState.RUNNING && e.candidate !== "");
    expect(rounds.length).toBeGreaterThan(10);
    expect(events.some((e) => e.state === JobState.RUNNING && e.stage === "register")).toBe(true);
    // The job ran on A, which accepted it: B only relayed what A published.
    expect(a.logs.some((l) => l.job_id === jobId)).toBe(true);
    expect(b.logs.some((l) => l.job_id === jobId && l.msg !== "job skipped: another process runs it")).toBe(
      false,
    );
  }, 180_000);

  it("CancelJob through B stops a job running on A within seconds, and it registers nothing", async () => {
    const registry = connectClient(b.baseUrl, RegistryService, tokens.reader);
    const before = (await registry.listModelVersions({ modelName: "bike-demand" })).versions.length;
    const trainA = connectClient(a.baseUrl, TrainService, tokens.trainer);
    const trainB = connectClient(b.baseUrl, TrainService, tokens.trainer);
    const { job } = await trainA.startTraining({
      families: [ModelFamily.GBTREE],
      paramOverrides: { eta: "0.001" },
      reason: "test: cancelled elsewhere",
    });
    const jobId = job?.id as string;
    // Cancelled once it computes, through B: A learns of it and aborts its executor.
    const watch = trainA.watchJob({ jobId }, { signal: AbortSignal.timeout(150_000) });
    let asked = 0;
    const states: JobState[] = [];
    for await (const e of watch) {
      states.push(e.state);
      if (asked === 0 && e.round >= 3) {
        asked = Date.now();
        const { job: answered } = await trainB.cancelJob({ jobId, reason: "test: through B" });
        expect(answered?.state).toBe(JobState.RUNNING); // A records the outcome once it stopped
      }
    }
    const stoppedAfter = Date.now() - asked;
    expect(asked).toBeGreaterThan(0);
    expect(states.at(-1)).toBe(JobState.CANCELLED);
    expect(stoppedAfter).toBeLessThan(3_000); // the announcement is heard at once; stopping the task takes the rest
    const { job: done } = await trainB.getJob({ jobId });
    expect([done?.state, done?.modelVersion, done?.error]).toEqual([
      JobState.CANCELLED,
      "",
      "cancelled by request",
    ]);
    // The executor stopped: nothing registered since, and nothing more happens to the job on A.
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await registry.listModelVersions({ modelName: "bike-demand" })).versions.length).toBe(before);
    expect(a.logs.some((l) => l.job_id === jobId && /registered|promot/.test(l.msg))).toBe(false);
  }, 180_000);
});

/** Every notification lost, as when a process's session is down: only the jobs' rows tell. */
const LOST: Notifications = { listen: () => {}, notify: () => {} };

describe("jobs across processes when every notification is lost", () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("a watcher starts from the job's row and ends with the outcome the row shows, once", async () => {
    const db = await openDatabase({ dbPath: "", databaseUrl });
    try {
      const jobs = await JobStore.open(db);
      const { job } = await jobs.create(QUICK_REQUEST, "test");
      await jobs.markRunning(job.id);
      await jobs.progress(job.id, "train", 0.5);
      const seen: JobEvent[] = [];
      const watching = (async () => {
        for await (const e of sharedJobEvents(LOST, jobs).watch(job.id)) seen.push(e);
      })();
      await sleep(300);
      const finished = Date.now();
      await jobs.finish(job.id, "failed", { error: "boom" });
      await watching;
      expect(Date.now() - finished).toBeLessThan(ACROSS_POLL_MS * 2);
      expect(seen.map((e) => [e.state, e.stage, e.message])).toEqual([
        ["running", "train", "train (50%)"],
        ["failed", "failed", "failed: boom"],
      ]);
    } finally {
      await db.close();
    }
  });

  it("the process running a job reads a cancel asked elsewhere from its row within 2 s", async () => {
    const db = await openDatabase({ dbPath: "", databaseUrl });
    try {
      const jobs = await JobStore.open(db);
      const { job } = await jobs.create(QUICK_REQUEST, "test");
      expect(await jobs.markRunning(job.id)).toBe(true);
      let cancelledAfter = Number.POSITIVE_INFINITY;
      let asked = 0;
      await new CancelsAcrossProcesses(LOST, jobs).follow(
        job.id,
        () => {
          cancelledAfter = Math.min(cancelledAfter, Date.now() - asked);
        },
        async () => {
          await sleep(200);
          asked = Date.now();
          expect(await jobs.requestCancel(job.id, "elsewhere")).toBe("running");
          while (Date.now() - asked < 3_000 && !Number.isFinite(cancelledAfter)) await sleep(50);
        },
      );
      expect(cancelledAfter).toBeLessThan(2_000);
    } finally {
      await db.close();
    }
  });

  it("a job whose cancel was asked before it ran never starts, and its end is recorded once", async () => {
    const db = await openDatabase({ dbPath: "", databaseUrl });
    try {
      const jobs = await JobStore.open(db);
      const { job } = await jobs.create(QUICK_REQUEST, "test");
      expect(await jobs.requestCancel(job.id, "before it ran")).toBe("queued");
      expect(await jobs.markRunning(job.id)).toBe(false);
      expect(await jobs.endCancelled(job.id, "cancelled by request")).toBe(true);
      expect(await jobs.endCancelled(job.id, "cancelled by request")).toBe(false);
      expect(await jobs.get(job.id)).toMatchObject({ state: "cancelled", error: "before it ran" });
      expect(await jobs.requestCancel(job.id, "again")).toBeUndefined();
    } finally {
      await db.close();
    }
  });
});
