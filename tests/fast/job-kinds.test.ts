import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InProcessQueue } from "../../pipelines/jobs/queue.js";
import { type JobEvent, JobEvents } from "../../services/jobs/events.js";
import { JOB_HANDLERS } from "../../services/jobs/kinds.js";
import { cancelJob, type JobHandler, jobRunner, withDeps } from "../../services/jobs/lifecycle.js";
import { jobToProto } from "../../services/jobs/proto.js";
import { JobStore, type StoredJob } from "../../services/jobs/store.js";
import { createLogger } from "../../services/observability/log.js";
import { Database } from "../../services/storage/database.js";

// A third kind of job written as a new kind would be: one handler, run by the one lifecycle over the
// real job store (in-memory DuckDB). Nothing in the store, the lifecycle or the proto mapping knows it.

type EchoJob = StoredJob<"echo", { reason: string; text: string; wait?: boolean }, { echoed: string }>;

/** Echoes its text with the prefix it was given; waits for a cancel when asked to. */
const echoJobs: JobHandler<EchoJob, { prefix: string; afterStage: (jobId: string) => Promise<void> }> = {
  kind: "echo",
  label: "echo job",
  async run(job, run, signal, deps) {
    await run.stage("echo", 0.5, `echoing ${job.request.text}`);
    await deps.afterStage(job.id);
    if (job.request.wait) {
      await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    }
    if (job.request.text === "fail") throw new Error("asked to fail");
    return { result: { echoed: `${deps.prefix}${job.request.text}` } };
  },
  failureMessage: (error, deps) => `${deps.prefix}${(error as Error).message}`,
};

let db: Database;
let jobs: JobStore;
let events: JobEvents;
/** What the store held for each job once its handler had reported its stage. */
let seen: [string, unknown[]][];
let finished: [string, string][];
const log = createLogger({}, "error", () => {});

beforeEach(async () => {
  db = await Database.open(":memory:");
  jobs = await JobStore.open(db);
  events = new JobEvents();
  seen = [];
  finished = [];
});

afterEach(async () => {
  await db?.close();
});

function runner() {
  const afterStage = async (jobId: string) => {
    const stored = await jobs.get(jobId);
    seen.push([jobId, [stored?.state, stored?.stage, stored?.progress]]);
  };
  return jobRunner({ jobs, events, log, onFinished: (job) => finished.push([job.id, job.state]) }, [
    withDeps(echoJobs, { prefix: "> ", afterStage }),
  ]);
}

async function eventsOf(jobId: string): Promise<Pick<JobEvent, "state" | "stage" | "message">[]> {
  const all = [];
  for await (const { state, stage, message } of events.watch(jobId)) all.push({ state, stage, message });
  return all;
}

describe("a job kind registered as one handler", () => {
  it("runs start → progress → succeeded, storing its stage, progress and its own result", async () => {
    const { job, created } = await jobs.add("echo", { reason: "test", text: "hello" }, "tester");
    expect([created, job.kind, job.state]).toEqual([true, "echo", "queued"]);
    const watching = eventsOf(job.id);
    await runner()(job.id, new AbortController().signal);

    expect(seen).toEqual([[job.id, ["running", "echo", 0.5]]]);
    expect(finished).toEqual([[job.id, "succeeded"]]);
    const done = (await jobs.get(job.id)) as StoredJob;
    expect(done).toMatchObject({
      kind: "echo",
      state: "succeeded",
      stage: "succeeded",
      progress: 1,
      attempts: 1,
      request: { reason: "test", text: "hello" },
      result: { echoed: "> hello" },
      requestedBy: "tester",
    });
    expect(done.startedAt).toBeInstanceOf(Date);
    expect(done.finishedAt).toBeInstanceOf(Date);
    expect(await watching).toEqual([
      { state: "running", stage: "echo", message: "echoing hello" },
      { state: "succeeded", stage: "succeeded", message: "succeeded" },
    ]);
    // The API shows the kind and the fields every job has, without another kind's fields.
    const message = jobToProto(done);
    expect([message.kind, message.progress, message.requestedBy, message.scoring]).toEqual([
      "echo",
      1,
      "tester",
      undefined,
    ]);
  });

  it("cancels a running job and a waiting one, and records each as cancelled", async () => {
    const queue = new InProcessQueue(runner());
    try {
      const { job: running } = await jobs.add("echo", { reason: "r", text: "long", wait: true }, "tester");
      const { job: waiting } = await jobs.add("echo", { reason: "w", text: "never" }, "tester");
      const runningEvents = eventsOf(running.id);
      await queue.enqueue(running.id);
      await queue.enqueue(waiting.id);
      for await (const event of events.watch(running.id)) if (event.stage === "echo") break;

      await cancelJob({ jobs, events, queue }, (await jobs.get(waiting.id)) as StoredJob, "not needed");
      await cancelJob({ jobs, events, queue }, (await jobs.get(running.id)) as StoredJob, "stop");
      expect((await runningEvents).at(-1)).toEqual({
        state: "cancelled",
        stage: "cancelled",
        message: "cancelled",
      });

      expect(await jobs.get(running.id)).toMatchObject({
        state: "cancelled",
        error: "cancelled by request",
        progress: 0.5,
      });
      expect((await jobs.get(running.id))?.result).toBeUndefined();
      expect(await jobs.get(waiting.id)).toMatchObject({ state: "cancelled", error: "not needed" });
      expect(seen.map(([id]) => id)).toEqual([running.id]);
      expect(finished).toEqual([[running.id, "cancelled"]]);
    } finally {
      await queue.close();
    }
  });

  it("stores a failure with the handler's own message", async () => {
    const { job } = await jobs.add("echo", { reason: "test", text: "fail" }, "tester");
    await runner()(job.id, new AbortController().signal);
    expect(await jobs.get(job.id)).toMatchObject({ state: "failed", error: "> asked to fail" });
    expect((await eventsOf(job.id)).at(-1)).toMatchObject({ state: "failed" });
  });

  it("leaves a job of a kind with no handler queued, and says so", async () => {
    const { job } = await jobs.add("nobody", { reason: "test" }, "tester");
    await expect(runner()(job.id, new AbortController().signal)).rejects.toThrow(
      `job ${job.id} is of kind nobody, which has no handler here`,
    );
    expect((await jobs.get(job.id))?.state).toBe("queued");
  });

  it("lists the server's kinds once, and maps each kind's own fields through its handler", async () => {
    expect(JOB_HANDLERS.map((h) => h.kind)).toEqual(["train", "score"]);
    const { job } = await jobs.add(
      "score",
      { input: "a.csv", output: "b.parquet", invalidOutput: "c.csv", reason: "test" },
      "tester",
    );
    expect(jobToProto(job).scoring).toMatchObject({ input: "a.csv", output: "b.parquet", rowsScored: 0n });
  });
});
