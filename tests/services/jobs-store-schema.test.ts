/**
 * The job store's schema carries a version: databases written before it had one (with or without the
 * scoring columns) open, keep their jobs and are brought to the current version; a newer one is refused.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStore } from "../../services/jobs/store.js";
import { Database } from "../../services/storage/database.js";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-jobs-schema-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The jobs table as the code before the schema version created it (training jobs only). */
const FIRST_TABLE = `CREATE TABLE jobs (
  id VARCHAR PRIMARY KEY, state VARCHAR NOT NULL, stage VARCHAR NOT NULL, progress DOUBLE NOT NULL,
  reason VARCHAR NOT NULL, request VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, started_at TIMESTAMP,
  finished_at TIMESTAMP, error VARCHAR, run_id VARCHAR, model_version VARCHAR, promoted BOOLEAN NOT NULL,
  requested_by VARCHAR NOT NULL, idempotency_key VARCHAR UNIQUE, attempts INTEGER NOT NULL)`;
const TRAINING = JSON.stringify({
  experiment: "e",
  families: [],
  objectives: [],
  paramOverrides: {},
  reason: "old",
});

async function versionOf(db: Database): Promise<number> {
  const [row] = await db.all<{ version: number }>(
    "SELECT CAST(MAX(version) AS INTEGER) AS version FROM schema_migrations WHERE component = 'jobs'",
  );
  return Number(row?.version);
}

describe("the job store's schema version", () => {
  it("opens a database from before scoring jobs: its jobs read as training jobs", async () => {
    const db = await Database.open(join(dir, "first.duckdb"));
    try {
      await db.run(FIRST_TABLE);
      await db.run(
        `INSERT INTO jobs VALUES ('j1', 'succeeded', 'succeeded', 1, 'old', $1, now()::TIMESTAMP, NULL, NULL, NULL, NULL, '3', true, 'someone', NULL, 1)`,
        [TRAINING],
      );
      const jobs = await JobStore.open(db);
      const job = await jobs.get("j1");
      expect([job?.kind, job?.state, job?.modelVersion, job?.request.reason]).toEqual([
        "train",
        "succeeded",
        "3",
        "old",
      ]);
      expect(await versionOf(db)).toBe(3);
      const { job: scoring } = await jobs.add(
        "score",
        { input: "a.csv", output: "b.parquet", invalidOutput: "c.csv", reason: "new" },
        "someone",
      );
      expect((await jobs.get(scoring.id))?.kind).toBe("score");
    } finally {
      await db.close();
    }
  });

  it("opens a database made with the one-off column migration, and a second open changes nothing", async () => {
    const path = join(dir, "altered.duckdb");
    const db = await Database.open(path);
    try {
      await db.run(FIRST_TABLE);
      await db.run(`ALTER TABLE jobs ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'train'`);
      await db.run(`ALTER TABLE jobs ADD COLUMN IF NOT EXISTS result VARCHAR`);
      await db.run(
        `INSERT INTO jobs VALUES ('s1', 'succeeded', 'succeeded', 1, 'old', $1, now()::TIMESTAMP, NULL, NULL, NULL, NULL, '3', false, 'someone', NULL, 1, 'score', $2)`,
        [
          JSON.stringify({ input: "a.csv", output: "b.parquet", invalidOutput: "c.csv", reason: "old" }),
          JSON.stringify({ rowsRead: 5, rowsScored: 4, rowsInvalid: 1, modelVersion: "3" }),
        ],
      );
      await JobStore.open(db);
      const jobs = await JobStore.open(db);
      const job = await jobs.get("s1");
      expect(job?.kind === "score" ? job.result : undefined).toEqual({
        rowsRead: 5,
        rowsScored: 4,
        rowsInvalid: 1,
        modelVersion: "3",
      });
      expect(await versionOf(db)).toBe(3);
      const [count] = await db.all<{ n: number }>(
        "SELECT CAST(count(*) AS INTEGER) AS n FROM schema_migrations WHERE component = 'jobs'",
      );
      expect(Number(count?.n)).toBe(3);
    } finally {
      await db.close();
    }
  });

  it("refuses a database written by a newer schema, naming both versions", async () => {
    const db = await Database.open(join(dir, "newer.duckdb"));
    try {
      await JobStore.open(db);
      await db.run("INSERT INTO schema_migrations VALUES ('jobs', 99, now()::TIMESTAMP)");
      await expect(JobStore.open(db)).rejects.toThrow(
        /job store in .*newer\.duckdb has schema version 99; this build knows version 3 at most/,
      );
    } finally {
      await db.close();
    }
  });

  it("reads the version a database recorded in job_schema_version before schema_migrations existed", async () => {
    const db = await Database.open(join(dir, "recorded.duckdb"));
    try {
      await db.run(FIRST_TABLE);
      await db.run(
        "CREATE TABLE job_schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)",
      );
      await db.run("INSERT INTO job_schema_version VALUES (99, now()::TIMESTAMP)");
      await expect(JobStore.open(db)).rejects.toThrow(
        /schema version 99; this build knows version 3 at most/,
      );
    } finally {
      await db.close();
    }
  });
});
