import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inlineExecutor, type JobExecutor } from "../../pipelines/jobs/tasks.js";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { runTrainingJob, type TrainingContext } from "../../services/jobs/train-job.js";
import { createLogger } from "../../services/observability/log.js";
import { Registry, RegistryError } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";
import { QUICK_REQUEST } from "../helpers/server.js";

const MODEL = "bikeshare-demand";

let dir: string;
let db: Database;
let registry: Registry;
let jobs: JobStore;
let logs: string[];

function context(reg: Registry): TrainingContext {
  return {
    registry: reg,
    jobs,
    events: new JobEvents(),
    log: createLogger({}, "debug", (line) => logs.push(line)),
    executor: inlineExecutor,
    dataPath: HOUR_CSV,
    modelName: MODEL,
    nthread: 2,
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-hardening-runner-"));
  db = await Database.open(join(dir, "bikeshare.duckdb"));
  registry = await Registry.open(db, join(dir, "models"));
  jobs = await JobStore.open(db);
  logs = [];
});

afterAll(async () => {
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

describe("a retried training job whose registry read fails", () => {
  it("fails with the registry's error instead of registering a second version", async () => {
    const { job } = await jobs.create(QUICK_REQUEST, "test");
    await runTrainingJob(context(registry), job.id, new AbortController().signal);
    const first = await jobs.get(job.id);
    expect(first?.state, first?.error).toBe("succeeded");
    expect(await registry.listModelVersions(MODEL)).toHaveLength(1);

    // The process died after registering and the job is picked up again; this time the registry
    // read that tells "already registered" from "not yet" fails for a reason other than not-found.
    await jobs.requeue(job.id);
    const outage = new Error("IO Error: could not read from the database file (test outage)");
    const failing = new Proxy(registry, {
      get(target, key, receiver) {
        if (key === "listModelVersions") return () => Promise.reject(outage);
        const value = Reflect.get(target, key, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    await runTrainingJob(context(failing), job.id, new AbortController().signal);

    const retried = await jobs.get(job.id);
    expect(retried?.state).toBe("failed");
    expect(retried?.error).toContain("test outage");
    expect(await registry.listModelVersions(MODEL)).toHaveLength(1);
  }, 300_000);

  it("still treats a model that does not exist yet as nothing registered", async () => {
    // A retried job whose final run exists but whose model was never created (killed in between).
    const other = await Registry.open(db, join(dir, "models"));
    const { job } = await jobs.create({ ...QUICK_REQUEST, reason: "not found is not an error" }, "test");
    const run = await other.createRun({ experiment: "tests", tags: { job_id: job.id, role: "final" } });
    await other.endRun(run.id, "failed");
    const ctx = { ...context(other), modelName: "never-registered" };
    await runTrainingJob(ctx, job.id, new AbortController().signal);
    const done = await jobs.get(job.id);
    expect(done?.state, done?.error).toBe("succeeded");
    expect(await other.listModelVersions("never-registered")).toHaveLength(1);
  }, 300_000);

  it("fails the job, not the process, when a stage write fails while the task computes", async () => {
    const { job } = await jobs.create({ ...QUICK_REQUEST, reason: "stage write fails" }, "test");
    const full = new Error('Could not write file "bikeshare.duckdb.wal": No space left on device (test)');
    const failingJobs = new Proxy(jobs, {
      get(target, key, receiver) {
        if (key === "progress") return () => Promise.reject(full);
        const value = Reflect.get(target, key, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    // The task reports a stage, then goes on computing for a while before it fails by itself.
    const executor: JobExecutor = {
      async run(_kind, _jobId, _input, report) {
        report({ type: "stage", stage: "train", progress: 0.1, message: "training" } as never);
        await new Promise((r) => setTimeout(r, 1000));
        throw new Error("the task ended");
      },
      close: async () => {},
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      await runTrainingJob(
        { ...context(registry), jobs: failingJobs, executor },
        job.id,
        new AbortController().signal,
      );
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    expect(unhandled).toEqual([]);
    const done = await jobs.get(job.id);
    expect(done?.state).toBe("failed");
  }, 60_000);
});

describe("a job cancelled while it is being dequeued", () => {
  it("stays cancelled: the runner does not mark it running nor train", async () => {
    const { job } = await jobs.create(QUICK_REQUEST, "test");
    const versionCount = () =>
      registry.listModelVersions(MODEL).then(
        (list) => list.length,
        (error: unknown) => {
          if (error instanceof RegistryError && error.code === "not_found") return 0;
          throw error;
        },
      );
    const versions = await versionCount();
    // The cancel lands between the runner's read of the job (still queued) and its start.
    const racing = Object.create(jobs) as JobStore;
    racing.markRunning = async (id) => {
      await jobs.finish(id, "cancelled", { error: "cancelled before it started" });
      return jobs.markRunning(id);
    };
    let ran = false;
    const executor: JobExecutor = {
      run(kind, jobId, input, report, signal) {
        ran = true;
        return inlineExecutor.run(kind, jobId, input, report, signal);
      },
      close: async () => {},
    };
    await runTrainingJob(
      { ...context(registry), jobs: racing, executor },
      job.id,
      new AbortController().signal,
    );
    const after = await jobs.get(job.id);
    expect(after?.state).toBe("cancelled");
    expect(ran).toBe(false);
    expect(await versionCount()).toBe(versions);
  });
});
