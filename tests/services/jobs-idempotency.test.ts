/**
 * Idempotency keys of the job store on both backends: one key means one request of one caller for one
 * kind of job; the same key with another request is an error, not the earlier job.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStore, type TrainingRequest } from "../../services/jobs/store.js";
import { BACKENDS } from "../helpers/backends.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "jobs-idem-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const training = (reason: string): TrainingRequest => ({
  experiment: "e",
  families: ["gbtree"],
  objectives: [],
  paramOverrides: { max_depth: "6", eta: "0.1" },
  reason,
});
const scoring = { input: "a.csv", output: "a.parquet", invalidOutput: "a.csv.invalid.csv", reason: "s" };

describe.each(BACKENDS)("job idempotency keys on $name", (backend) => {
  it("scopes a key by kind and caller, and refuses the same key with a different request", async () => {
    const db = await backend.open(await backend.create(dir));
    try {
      const jobs = await JobStore.open(db);
      const score = await jobs.add("score", scoring, "alice", "k");
      const train = await jobs.create(training("r"), "alice", "k");
      const bobs = await jobs.create(training("r"), "bob", "k");
      expect([score.created, train.created, bobs.created]).toEqual([true, true, true]);
      expect(new Set([score.job.id, train.job.id, bobs.job.id]).size).toBe(3);
      expect([score.job.kind, train.job.kind, bobs.job.kind]).toEqual(["score", "train", "train"]);
      expect(train.job.idempotencyKey).toBe("k");
      // A retry, its map entries in another order: the same job.
      const retry = await jobs.create(
        { ...training("r"), paramOverrides: { eta: "0.1", max_depth: "6" } },
        "alice",
        "k",
      );
      expect([retry.created, retry.job.id]).toEqual([false, train.job.id]);
      await expect(jobs.create(training("other"), "alice", "k")).rejects.toMatchObject({
        code: "failed_precondition",
        message: expect.stringContaining(`was already used for job ${train.job.id} with a different request`),
      });
      expect(await jobs.list({ limit: 10, offset: 0 })).toHaveLength(3);
    } finally {
      await db.close();
    }
  });

  it("answers a key stored before keys were scoped only for the same kind and caller", async () => {
    const db = await backend.open(await backend.create(dir));
    try {
      const jobs = await JobStore.open(db);
      const old = await jobs.create(training("r"), "alice");
      await db.run("UPDATE jobs SET idempotency_key = $1 WHERE id = $2", ["legacy", old.job.id]);
      const again = await jobs.create(training("r"), "alice", "legacy");
      expect([again.created, again.job.id]).toEqual([false, old.job.id]);
      const other = await jobs.add("score", scoring, "alice", "legacy");
      expect(other.created).toBe(true);
    } finally {
      await db.close();
    }
  });
});
