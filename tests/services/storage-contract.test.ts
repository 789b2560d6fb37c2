/**
 * The storage contract both backends keep (embedded DuckDB and a real PostgreSQL server started by the
 * test): the JS types rows come back as, parameters, transactions, versioned migrations, and the monitor's
 * actuals. PostgreSQL only: migrations applied by several processes at once, an upgrade of a database made
 * by the previous schema, and "unavailable" errors that never show the password.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JOB_MIGRATIONS, JobStore } from "../../services/jobs/store.js";
import { Actuals } from "../../services/monitor/actuals.js";
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { Registry } from "../../services/registry/registry.js";
import { REGISTRY_MIGRATIONS } from "../../services/registry/schema.js";
import { type SqlDatabase, StoreUnavailableError } from "../../services/storage/database.js";
import { type Migration, migrate } from "../../services/storage/migrations.js";
import { openDatabase } from "../../services/storage/open.js";
import { PgDatabase } from "../../services/storage/postgres.js";
import { BACKENDS, DUCKDB, testPostgres } from "../helpers/backends.js";
import { SUMMER_EVENING } from "../helpers/hour-csv.js";
import { freePort } from "../helpers/ports.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-storage-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const step = (version: number, ...statements: string[]): Migration => ({
  version,
  statements: () => statements,
});

describe.each(BACKENDS)("SqlDatabase on $name", (backend) => {
  async function fresh(): Promise<SqlDatabase> {
    return backend.open(await backend.create(dir));
  }

  it("gives the same JS types: BIGINT as bigint, TIMESTAMP as a UTC Date, bytes, double lists", async () => {
    const db = await fresh();
    try {
      expect(db.dialect).toBe(backend.name);
      await db.run(
        "CREATE TABLE t (k VARCHAR, big BIGINT, n INTEGER, x DOUBLE PRECISION, ts TIMESTAMP, b BYTEA, xs DOUBLE PRECISION[], ok BOOLEAN)",
      );
      const when = new Date("2012-07-04T21:05:06.789Z");
      const bytes = new Uint8Array([0, 1, 2, 255]);
      await db.run("INSERT INTO t VALUES ($k, $big, $n, $x, $ts, $b, $xs, $ok)", {
        k: "a'b",
        big: 2n ** 53n + 1n,
        n: 7,
        x: 0.1 + 0.2,
        ts: when,
        b: bytes,
        xs: Float64Array.from([0, 0.5, -1e300]),
        ok: true,
      });
      const [row] = await db.all<Record<string, unknown>>("SELECT * FROM t WHERE k = $1", ["a'b"]);
      expect(row).toMatchObject({ k: "a'b", big: 2n ** 53n + 1n, n: 7, x: 0.1 + 0.2, ts: when, ok: true });
      expect(Array.from(row?.b as Uint8Array)).toEqual([0, 1, 2, 255]);
      expect(row?.xs).toEqual([0, 0.5, -1e300]);
      // now()::TIMESTAMP is UTC on both, whatever the server's or the process's time zone.
      const [clock] = await db.all<{ t: Date }>("SELECT now()::TIMESTAMP AS t");
      expect(Math.abs(Number(clock?.t.getTime()) - Date.now())).toBeLessThan(60_000);
      const [count] = await db.all<{ n: bigint }>("SELECT count(*) AS n FROM t");
      expect(count?.n).toBe(1n);
    } finally {
      await db.close();
    }
  });

  it("rolls back a failed transaction; calls inside one join it", async () => {
    const db = await fresh();
    try {
      await db.run("CREATE TABLE t (k VARCHAR PRIMARY KEY)");
      await expect(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('a')");
          await db.run("INSERT INTO t VALUES ('b')"); // joins: rolled back with the rest
          await db.transaction((inner) => inner.run("INSERT INTO t VALUES ('a')")); // duplicate key
        }),
      ).rejects.toThrow(/duplicate key/i);
      expect(await db.all("SELECT * FROM t")).toEqual([]);
      await db.close();
      await expect(db.all("SELECT 1")).rejects.toThrow(/closed/);
    } finally {
      await db.close();
    }
  });

  it("applies migrations in order once, records them, and refuses a database from a newer build", async () => {
    const db = await fresh();
    try {
      const v1 = [step(1, "CREATE TABLE m (i INTEGER)", "INSERT INTO m VALUES (1)")];
      const v2 = [...v1, step(2, "ALTER TABLE m ADD COLUMN j INTEGER", "UPDATE m SET j = 2")];
      expect(await migrate(db, "demo", v1)).toEqual([1]);
      expect(await migrate(db, "demo", v1)).toEqual([]);
      expect(await migrate(db, "demo", v2)).toEqual([2]);
      expect(await db.all("SELECT i, j FROM m")).toEqual([{ i: 1, j: 2 }]);
      const applied = await db.all<{ version: number }>(
        "SELECT version FROM schema_migrations WHERE component = 'demo' ORDER BY version",
      );
      expect(applied.map((r) => r.version)).toEqual([1, 2]);
      await expect(migrate(db, "demo", v1)).rejects.toThrow(
        /the demo schema in .* has version 2; this build knows version 1 at most/,
      );
    } finally {
      await db.close();
    }
  });

  it("actuals: the latest report of an hour wins, unmatched hours are counted, the latest prediction scores", async () => {
    const db = await fresh();
    try {
      const log = await PredictionLog.open(db, { spoolDir: undefined, flushIntervalMs: 60_000 });
      const actuals = await Actuals.open(db);
      const h0 = Date.UTC(2012, 6, 4, 20);
      const h1 = h0 + 3_600_000;
      const logged = (requestId: string, hourStart: number, prediction: number, servedAt: number) => ({
        requestId,
        row: 0,
        modelVersion: "3",
        record: SUMMER_EVENING,
        prediction,
        servedAt,
        hourStart,
      });
      // Two predictions of h0: only the later one (100) counts.
      await log.log([logged("a", h0, 50, 1_000), logged("b", h0, 100, 2_000), logged("c", h1, 300, 3_000)]);
      await log.close();
      expect(await actuals.report([{ hourStart: h0, cnt: 1 }])).toEqual({ accepted: 1, unmatched: 0 });
      const h2 = h1 + 3_600_000;
      expect(
        await actuals.report([
          { hourStart: h0, cnt: 110 },
          { hourStart: h1, cnt: 290 },
          { hourStart: h2, cnt: 5 },
        ]),
      ).toEqual({ accepted: 3, unmatched: 1 });
      const [perf] = await actuals.performance({ from: h0, until: h2 });
      expect(perf).toMatchObject({ modelVersion: "3", labelledHours: 2, rmse: 10, mae: 10 });
      expect(await actuals.performance({ from: h1 + 1 })).toEqual([]);
    } finally {
      await db.close();
    }
  });
  it("jobs: idempotent creation, the lifecycle's writes, newest first, unfinished after a restart", async () => {
    const location = await backend.create(dir);
    let db = await backend.open(location);
    try {
      const jobs = await JobStore.open(db);
      const request = {
        experiment: "e",
        families: [],
        objectives: [],
        paramOverrides: {},
        reason: "nightly",
      };
      const first = await jobs.create(request, "alice", "key-1");
      expect(first.created).toBe(true);
      expect(first.job).toMatchObject({ kind: "train", state: "queued", requestedBy: "alice", attempts: 0 });
      expect(first.job.createdAt).toBeInstanceOf(Date);
      expect(Math.abs(first.job.createdAt.getTime() - Date.now())).toBeLessThan(60_000);
      // The same caller retrying (keys are per caller and kind: tests/services/jobs-idempotency).
      const again = await jobs.create(request, "alice", "key-1");
      expect([again.created, again.job.id]).toEqual([false, first.job.id]);
      const scoring = { input: "a.csv", output: "b.parquet", invalidOutput: "c.csv", reason: "adhoc" };
      const second = await jobs.add("score", scoring, "alice");
      expect(await jobs.markRunning(first.job.id)).toBe(true);
      await jobs.progress(first.job.id, "fitting", 0.5);
      expect(await jobs.get(first.job.id)).toMatchObject({
        state: "running",
        stage: "fitting",
        progress: 0.5,
      });
      await jobs.finish(first.job.id, "succeeded", { runId: "r1", modelVersion: "4", promoted: true });
      expect(await jobs.markRunning(first.job.id)).toBe(false);
      const done = await jobs.get(first.job.id);
      expect(done).toMatchObject({
        state: "succeeded",
        runId: "r1",
        modelVersion: "4",
        promoted: true,
        attempts: 1,
      });
      expect(done?.finishedAt).toBeInstanceOf(Date);
      expect((await jobs.list({ limit: 10, offset: 0 })).map((j) => j.id)).toEqual([
        second.job.id,
        first.job.id,
      ]);
      expect((await jobs.list({ state: "succeeded", limit: 10, offset: 0 })).map((j) => j.id)).toEqual([
        first.job.id,
      ]);
      await db.close();
      db = await backend.open(location);
      const reopened = await JobStore.open(db);
      expect((await reopened.unfinished()).map((j) => [j.id, j.kind, j.request.reason])).toEqual([
        [second.job.id, "score", "adhoc"],
      ]);
    } finally {
      await db.close();
    }
  });
});

describe("DuckDB files made before schema_migrations", () => {
  it("a registry recorded in registry.schema_version upgrades in place; a newer one is refused", async () => {
    const path = join(dir, "legacy-registry.duckdb");
    const old = await DUCKDB.open(path);
    try {
      // What the previous build left: its tables, its own version table, a run.
      for (const ddl of REGISTRY_MIGRATIONS[0]?.statements("duckdb") ?? []) await old.run(ddl);
      await old.run(
        "CREATE TABLE registry.schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)",
      );
      await old.run("INSERT INTO registry.schema_version VALUES (1, now()::TIMESTAMP)");
      await old.run("INSERT INTO registry.experiments VALUES ('e1', 'old', now()::TIMESTAMP)");
      await old.run(
        "INSERT INTO registry.runs VALUES ('r1', 1, 'e1', 'kept', 'finished', now()::TIMESTAMP, NULL, 'abc', 'fp')",
      );
    } finally {
      await old.close();
    }
    const db = await DUCKDB.open(path);
    try {
      const registry = await Registry.open(db, join(dir, "legacy-artifacts"));
      expect((await registry.getRun("r1"))?.name).toBe("kept");
      const versions = await db.all<{ version: number }>(
        "SELECT version FROM schema_migrations WHERE component = 'registry' ORDER BY version",
      );
      expect(versions.map((r) => r.version)).toEqual([1, 2]);
      await db.run("DELETE FROM schema_migrations WHERE component = 'registry'");
      await db.run("INSERT INTO registry.schema_version VALUES (7, now()::TIMESTAMP)");
      await expect(Registry.open(db, join(dir, "legacy-artifacts"))).rejects.toMatchObject({
        code: "failed_precondition",
        message: expect.stringMatching(/schema version 7; this build knows version 2 at most/),
      });
    } finally {
      await db.close();
    }
  });
});

describe("PostgreSQL only", () => {
  it("two processes starting together apply each migration exactly once", async () => {
    const url = await (await testPostgres()).createDatabase();
    const pools = await Promise.all([1, 2, 3, 4].map(() => PgDatabase.open(url)));
    const [first] = pools as [PgDatabase];
    try {
      // Not idempotent on purpose: a second application fails (CREATE TABLE) or doubles the row.
      const steps = [step(1, "CREATE TABLE raced (i INTEGER)", "INSERT INTO raced VALUES (1)")];
      const applied = await Promise.all(pools.map((db) => migrate(db, "race", steps)));
      expect(applied.flat()).toEqual([1]);
      // The real stores too: registry and its neighbours opened by all four at once.
      await Promise.all(pools.map((db, i) => Registry.open(db, join(dir, `artifacts-${i}`))));
      const [rows] = await first.all<{ n: bigint }>("SELECT count(*) AS n FROM raced");
      expect(rows?.n).toBe(1n);
      const registry = await first.all<{ version: number }>(
        "SELECT version FROM schema_migrations WHERE component = 'registry'",
      );
      expect(registry.map((r) => r.version)).toEqual(REGISTRY_MIGRATIONS.map((m) => m.version));
    } finally {
      await Promise.all(pools.map((db) => db.close()));
    }
  });

  it("two processes writing the registry at once: versions and the audit log stay contiguous", async () => {
    const url = await (await testPostgres()).createDatabase();
    const pools = await Promise.all([1, 2].map(() => PgDatabase.open(url)));
    try {
      const registries = await Promise.all(pools.map((db, i) => Registry.open(db, join(dir, `both-${i}`))));
      const [first] = registries as [Registry];
      const run = await first.createRun({ experiment: "shared" });
      await first.putArtifact(run.id, "model.json", new TextEncoder().encode("{}"));
      await first.endRun(run.id, "finished");
      // Each registration reads MAX(version) + 1 and writes it back: without one lock across processes
      // two of them would pick the same number.
      const created = await Promise.all(
        registries.flatMap((registry) =>
          Array.from({ length: 8 }, () => registry.createModelVersion({ modelName: "m", runId: run.id })),
        ),
      );
      const numbers = created.map((v) => Number(v.version)).sort((a, b) => a - b);
      expect(numbers).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
      await Promise.all(
        registries.map((registry, i) =>
          registry.setAlias({ modelName: "m", alias: `a${i}`, version: "1", actor: "t", reason: "race" }),
        ),
      );
      const history = await first.aliasHistory("m");
      expect(history.map((c) => c.alias).sort()).toEqual(["a0", "a1"]);
    } finally {
      await Promise.all(pools.map((db) => db.close()));
    }
  });

  it("upgrades a database made by the previous registry schema, keeping its rows", async () => {
    const url = await (await testPostgres()).createDatabase();
    const old = await PgDatabase.open(url);
    try {
      // The previous build: every registry migration but the last, and a run it wrote.
      await migrate(old, "registry", REGISTRY_MIGRATIONS.slice(0, -1));
      await old.run("INSERT INTO registry.experiments VALUES ('e1', 'old', $1)", [new Date()]);
      await old.run(
        `INSERT INTO registry.runs VALUES ('r1', 1, 'e1', 'before-upgrade', 'finished', $1, $1, 'abc', 'fp')`,
        [new Date()],
      );
    } finally {
      await old.close();
    }
    const db = await PgDatabase.open(url);
    try {
      const registry = await Registry.open(db, join(dir, "upgrade-artifacts"));
      expect(await registry.getRun("r1")).toMatchObject({ name: "before-upgrade", status: "finished" });
      const versions = await db.all<{ version: number }>(
        "SELECT version FROM schema_migrations WHERE component = 'registry' ORDER BY version",
      );
      expect(versions.map((r) => r.version)).toEqual(REGISTRY_MIGRATIONS.map((m) => m.version));
      // The last migration's table works: an artifact of a new run is stored in the database.
      const run = await registry.createRun({ experiment: "old" });
      await registry.putArtifact(run.id, "model.json", new TextEncoder().encode("{}"));
      expect((await registry.readArtifact(run.id, "model.json")).toString()).toBe("{}");
    } finally {
      await db.close();
    }
  });

  it("upgrades a job store made by the previous jobs schema: its jobs read as training jobs", async () => {
    const url = await (await testPostgres()).createDatabase();
    const old = await PgDatabase.open(url);
    try {
      await migrate(old, "jobs", JOB_MIGRATIONS.slice(0, -1));
      await old.run(
        `INSERT INTO jobs (id, state, stage, progress, reason, request, created_at, started_at, finished_at, error,
           run_id, model_version, promoted, requested_by, idempotency_key, attempts)
         VALUES ('j1', 'succeeded', 'succeeded', 1, 'old', $1, now()::TIMESTAMP, NULL, NULL, NULL, NULL, '3', true, 'someone', NULL, 1)`,
        [
          JSON.stringify({
            experiment: "e",
            families: [],
            objectives: [],
            paramOverrides: {},
            reason: "old",
          }),
        ],
      );
    } finally {
      await old.close();
    }
    const db = await PgDatabase.open(url);
    try {
      const jobs = await JobStore.open(db);
      expect(await jobs.get("j1")).toMatchObject({ kind: "train", state: "succeeded", modelVersion: "3" });
      const applied = await db.all<{ version: number }>(
        "SELECT version FROM schema_migrations WHERE component = 'jobs' ORDER BY version",
      );
      expect(applied.map((r) => Number(r.version))).toEqual(JOB_MIGRATIONS.map((m) => m.version));
      const { job } = await jobs.add(
        "score",
        { input: "a", output: "b", invalidOutput: "c", reason: "new" },
        "x",
      );
      expect((await jobs.get(job.id))?.kind).toBe("score");
    } finally {
      await db.close();
    }
  });

  it("a lost connection is `unavailable`; a server nobody runs fails the start without showing the password", async () => {
    const url = await (await testPostgres()).createDatabase();
    const db = await PgDatabase.open(url);
    try {
      // Sessions read timestamps in UTC, and one stuck inside a transaction cannot hold the lock forever.
      expect(await db.all("SHOW TimeZone")).toEqual([{ TimeZone: "UTC" }]);
      expect(await db.all("SHOW idle_in_transaction_session_timeout")).toEqual([
        { idle_in_transaction_session_timeout: "2min" },
      ]);
      const error = await db.all("SELECT pg_terminate_backend(pg_backend_pid())").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).not.toContain("secret");
      // The pool replaces the connection: the next statement works.
      expect(await db.all("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
    }
    const nobody = `postgres://bikeshare:hunter2@127.0.0.1:${await freePort()}/bikeshare`;
    const refused = await openDatabase({ dbPath: "unused", databaseUrl: nobody }).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(
      /^BIKESHARE_DATABASE_URL=postgres:\/\/bikeshare:\*\*\*@127\.0\.0\.1/,
    );
    expect((refused as Error).message).toMatch(/ECONNREFUSED|unavailable/);
    expect((refused as Error).message).not.toContain("hunter2");
  });
});
