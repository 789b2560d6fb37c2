import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type AliasChange,
  GATE_CHALLENGER_RMSE,
  GATE_CHAMPION_RMSE,
  GATE_CHAMPION_VERSION_TAG,
  Registry,
  RegistryError,
  type Run,
} from "../../services/registry/registry.js";
import { parseFilter, parseOrderBy } from "../../services/registry/search-filter.js";
import type { SqlDatabase } from "../../services/storage/database.js";
import { BACKENDS } from "../helpers/backends.js";

describe.each(BACKENDS)("registry on $name", (backend) => {
  let dir: string;
  let dbPath: string;
  let artifactsDir: string;
  let db: SqlDatabase;
  let registry: Registry;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-registry-"));
    dbPath = await backend.create(dir);
    artifactsDir = join(dir, "artifacts");
    db = await backend.open(dbPath);
    registry = await Registry.open(db, artifactsDir);
  });

  afterEach(async () => {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  async function reopen(): Promise<void> {
    await db.close();
    db = await backend.open(dbPath);
    registry = await Registry.open(db, artifactsDir);
  }

  async function rejection(promise: Promise<unknown>): Promise<RegistryError> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RegistryError);
    return error as RegistryError;
  }

  async function expectError(
    promise: Promise<unknown>,
    code: RegistryError["code"],
    message?: string | RegExp,
  ) {
    const error = await rejection(promise);
    expect(error.code).toBe(code);
    if (message !== undefined) expect(error.message).toMatch(message);
    return error;
  }

  const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

  async function* inChunks(bytes: Uint8Array, size: number): AsyncIterable<Uint8Array> {
    for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
  }

  /** The stored blobs as `<2 hex>/<sha256>`: files beside DuckDB, rows of registry.blobs on PostgreSQL. */
  async function blobFiles(): Promise<string[]> {
    if (backend.name === "postgres") {
      const rows = await db.all<{ sha256: string }>("SELECT sha256 FROM registry.blobs ORDER BY sha256");
      return rows.map((r) => `${r.sha256.slice(0, 2)}/${r.sha256}`);
    }
    const out: string[] = [];
    const root = join(artifactsDir, "sha256");
    for (const prefix of await readdir(root)) {
      for (const file of await readdir(join(root, prefix))) out.push(`${prefix}/${file}`);
    }
    return out.sort();
  }

  /** Replaces a blob's bytes behind the registry's back (undefined: removes it), as a failing disk would. */
  async function tamper(sha256: string, bytes: Uint8Array | undefined): Promise<void> {
    if (backend.name === "postgres") {
      if (bytes) await db.run("UPDATE registry.blobs SET bytes = $2 WHERE sha256 = $1", [sha256, bytes]);
      else await db.run("DELETE FROM registry.blobs WHERE sha256 = $1", [sha256]);
      return;
    }
    if (bytes) await writeFile(registry.blobPath(sha256), bytes);
    else await rm(registry.blobPath(sha256));
  }

  /** A finished run with one artifact and the given metrics/tags, ready to become a version. */
  async function finishedRun(
    opts: { metrics?: Record<string, number>; tags?: Record<string, string>; bytes?: Uint8Array } = {},
  ): Promise<Run> {
    const run = await registry.createRun({
      experiment: "bike-demand",
      ...(opts.tags ? { tags: opts.tags } : {}),
    });
    if (opts.metrics) {
      await registry.logRunData(run.id, {
        metrics: Object.entries(opts.metrics).map(([key, value]) => ({ key, value })),
      });
    }
    await registry.putArtifact(run.id, "model.onnx", opts.bytes ?? randomBytes(256));
    return registry.endRun(run.id, "finished");
  }

  async function version(opts: Parameters<typeof finishedRun>[0] = {}): Promise<string> {
    const run = await finishedRun(opts);
    return (await registry.createModelVersion({ modelName: "bike-demand", runId: run.id })).version;
  }

  /** A candidate evaluated against `champion` on the gate window. */
  function gated(champion: string, challengerRmse: number, championRmse: number) {
    return {
      tags: { [GATE_CHAMPION_VERSION_TAG]: champion },
      metrics: { [GATE_CHALLENGER_RMSE]: challengerRmse, [GATE_CHAMPION_RMSE]: championRmse },
    };
  }

  const move = (alias: string, v: string, extra: { force?: boolean; reason?: string } = {}) =>
    registry.setAlias({
      modelName: "bike-demand",
      alias,
      version: v,
      actor: "alice",
      reason: extra.reason ?? `move ${alias} to ${v}`,
      ...(extra.force !== undefined ? { force: extra.force } : {}),
    });

  describe("Database", () => {
    it("rolls a transaction back when its callback throws, and when a statement fails", async () => {
      await db.run("CREATE TABLE t (k VARCHAR PRIMARY KEY, v INTEGER)");
      await expect(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('a', 1)");
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      await expect(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('b', 1)");
          await tx.run("INSERT INTO t VALUES ('b', 2)"); // duplicate key
        }),
      ).rejects.toThrow(/duplicate key/i);
      expect(await db.all("SELECT * FROM t")).toEqual([]);
      await db.transaction((tx) => tx.run("INSERT INTO t VALUES ($1, $2)", ["c", 3]));
      expect(await db.all("SELECT k, v FROM t")).toEqual([{ k: "c", v: 3 }]);
      expect(await db.all("SELECT v FROM t WHERE k = $k", { k: "c" })).toEqual([{ v: 3 }]);
    });

    it("serialises callers: a statement never sees half of another caller's transaction", async () => {
      await db.run("CREATE TABLE t (i INTEGER)");
      const writer = db.transaction(async (tx) => {
        await tx.run("INSERT INTO t VALUES (1)");
        await new Promise((r) => setTimeout(r, 50));
        await tx.run("INSERT INTO t VALUES (2)");
      });
      const seen = db.all<{ n: number }>("SELECT CAST(COUNT(*) AS INTEGER) AS n FROM t");
      await writer;
      // DuckDB queues the read behind the transaction; PostgreSQL reads the last committed state.
      expect((await seen)[0]?.n).toBe(backend.name === "duckdb" ? 2 : 0);
    });

    it("binds Dates as timestamps, keeps bigints, and persists across a reopen", async () => {
      const when = new Date("2024-05-06T07:08:09.123Z");
      await db.run("CREATE TABLE t (ts TIMESTAMP, big BIGINT)");
      await db.run("INSERT INTO t VALUES ($1, $2)", [when, 2n ** 40n]);
      await db.close();
      await expect(db.all("SELECT 1")).rejects.toThrow(/closed/);
      db = await backend.open(dbPath);
      expect(await db.all("SELECT ts, big FROM t")).toEqual([{ ts: when, big: 2n ** 40n }]);
    });
  });

  describe("experiments and runs", () => {
    it("creates, finds and lists experiments; a duplicate name is already_exists", async () => {
      const exp = await registry.createExperiment("demand", { owner: "ml" });
      expect(exp.id).toMatch(/^[0-9a-f]{32}$/);
      await expectError(
        registry.createExperiment("demand"),
        "already_exists",
        /experiment "demand" already exists/,
      );
      expect(await registry.getExperiment(exp.id)).toEqual(exp);
      expect(await registry.getExperiment("demand")).toEqual(exp);
      expect(await registry.getExperiment("nope")).toBeUndefined();
      expect((await registry.ensureExperiment("demand")).id).toBe(exp.id);
      const other = await registry.ensureExperiment("other");
      expect((await registry.listExperiments()).map((e) => e.name).sort()).toEqual(["demand", "other"]);
      const run = await registry.createRun({ experiment: "third" });
      expect((await registry.getExperiment("third"))?.id).toBe(run.experimentId);
      expect((await registry.createRun({ experiment: other.id })).experimentId).toBe(other.id);
    });

    it("records a run's params, tags, step-indexed metrics, commit and data fingerprint", async () => {
      const run = await registry.createRun({
        experiment: "demand",
        name: "xgb depth 6",
        tags: { family: "gbtree" },
        sourceCommit: "abc123",
        dataFingerprint: "f".repeat(64),
      });
      expect(run).toMatchObject({ status: "running", name: "xgb depth 6", sourceCommit: "abc123" });
      expect(run.endTime).toBeUndefined();
      await registry.logRunData(run.id, {
        params: { max_depth: "6", eta: "0.1" },
        metrics: [
          { key: "valid_rmse", value: 90, step: 0 },
          { key: "valid_rmse", value: 70, step: 2 },
          { key: "valid_rmse", value: 80, step: 1 },
          { key: "valid.r2", value: 0.9 },
        ],
        tags: { family: "gblinear", note: "x" },
      });
      const got = await registry.getRun(run.id);
      expect(got?.params).toEqual({ max_depth: "6", eta: "0.1" });
      expect(got?.tags).toEqual({ family: "gblinear", note: "x" });
      expect(got?.metrics).toEqual({ valid_rmse: 70, "valid.r2": 0.9 });
      expect((await registry.metricHistory(run.id, "valid_rmse")).map((p) => [p.step, p.value])).toEqual([
        [0, 90],
        [1, 80],
        [2, 70],
      ]);
      const ended = await registry.endRun(run.id, "finished");
      expect(ended.status).toBe("finished");
      expect(ended.endTime).toBeInstanceOf(Date);
      expect((await registry.endRun(run.id, "finished")).endTime).toEqual(ended.endTime);
      await expectError(
        registry.endRun(run.id, "failed"),
        "failed_precondition",
        /already ended as finished/,
      );
      await expectError(
        registry.logRunData(run.id, { tags: { a: "b" } }),
        "failed_precondition",
        /is finished; data can only be logged to a running run/,
      );
      await expectError(registry.endRun("missing", "failed"), "not_found", /run missing does not exist/);
      expect(await registry.getRun("missing")).toBeUndefined();
    });

    it("refuses to change a param (MLflow rule) and keeps nothing of the rejected batch", async () => {
      const run = await registry.createRun({ experiment: "demand" });
      await registry.logRunData(run.id, { params: { max_depth: "6" } });
      await registry.logRunData(run.id, { params: { max_depth: "6" } }); // same value: fine
      const error = await expectError(
        registry.logRunData(run.id, {
          params: { eta: "0.3", max_depth: "7" },
          metrics: [{ key: "rmse", value: 1 }],
          tags: { t: "1" },
        }),
        "invalid_argument",
      );
      expect(error.message).toContain(`param max_depth is already "6" on run ${run.id.slice(0, 8)}`);
      expect(error.message).toContain("params cannot change");
      expect(error.field).toBe("params.max_depth");
      const after = await registry.getRun(run.id);
      expect(after?.params).toEqual({ max_depth: "6" });
      expect(after?.metrics).toEqual({});
      expect(after?.tags).toEqual({});
    });

    it("validates keys, steps and names", async () => {
      const run = await registry.createRun({ experiment: "demand" });
      await expectError(
        registry.logRunData(run.id, { params: { "bad'key": "1" } }),
        "invalid_argument",
        /bad'key/,
      );
      await expectError(
        registry.logRunData(run.id, { metrics: [{ key: "rmse", value: 1, step: 1.5 }] }),
        "invalid_argument",
        /step must be an integer/,
      );
      await expectError(registry.createRun({ experiment: "" }), "invalid_argument", /experiment is required/);
      await expectError(registry.createRegisteredModel("has space"), "invalid_argument", /model name/);
    });
  });

  describe("persistence", () => {
    it("keeps every experiment, run, artifact, version, alias and audit row across a reopen", async () => {
      const bytes = randomBytes(5000);
      const run = await finishedRun({ metrics: { rmse: 42 }, bytes });
      const v = await registry.createModelVersion({
        modelName: "bike-demand",
        runId: run.id,
        description: "first",
      });
      await move("staging", v.version);
      const before = {
        run: await registry.getRun(run.id),
        version: await registry.getModelVersion("bike-demand", "1"),
        model: await registry.getRegisteredModel("bike-demand"),
        history: await registry.aliasHistory("bike-demand"),
        experiments: await registry.listExperiments(),
      };
      await reopen();
      expect(await registry.getRun(run.id)).toEqual(before.run);
      expect(await registry.getModelVersion("bike-demand", "staging")).toEqual(before.version);
      expect(await registry.getRegisteredModel("bike-demand")).toEqual(before.model);
      expect(await registry.aliasHistory("bike-demand")).toEqual(before.history);
      expect(await registry.listExperiments()).toEqual(before.experiments);
      expect(await registry.readArtifact(run.id, "model.onnx")).toEqual(bytes);
      // Numbering continues from the stored state, not from memory.
      expect(await version()).toBe("2");
    });
  });

  describe("artifacts", () => {
    it("stores by content: identical bytes once, at sha256/<2 hex>/<hash>, from bytes or a stream", async () => {
      const bytes = randomBytes(200_000);
      const hash = sha(bytes);
      const a = await registry.createRun({ experiment: "demand" });
      const b = await registry.createRun({ experiment: "demand" });
      const first = await registry.putArtifact(a.id, "model.onnx", bytes);
      const second = await registry.putArtifact(
        b.id,
        "nested/copy.bin",
        inChunks(bytes, 7000),
        "application/x-test",
      );
      expect(first).toEqual({
        path: "model.onnx",
        sha256: hash,
        sizeBytes: 200_000,
        contentType: "application/octet-stream",
      });
      expect(second).toEqual({
        path: "nested/copy.bin",
        sha256: hash,
        sizeBytes: 200_000,
        contentType: "application/x-test",
      });
      expect(await blobFiles()).toEqual([`${hash.slice(0, 2)}/${hash}`]);
      if (backend.name === "duckdb") {
        expect(await readFile(join(artifactsDir, "sha256", hash.slice(0, 2), hash))).toEqual(bytes);
        expect(await readdir(join(artifactsDir, "tmp"))).toEqual([]);
      }

      await registry.putArtifact(a.id, "card.json", new TextEncoder().encode("{}"));
      expect((await registry.listArtifacts(a.id)).map((x) => [x.path, x.contentType])).toEqual([
        ["card.json", "application/json"],
        ["model.onnx", "application/octet-stream"],
      ]);
      expect((await blobFiles()).length).toBe(2);
      expect(await registry.readArtifact(b.id, "nested/copy.bin")).toEqual(bytes);

      const { artifact, chunks } = await registry.openArtifact(a.id, "model.onnx", 64 * 1024);
      expect(artifact.sha256).toBe(hash);
      const parts: Uint8Array[] = [];
      for await (const c of chunks) parts.push(c);
      expect(parts.map((p) => p.length)).toEqual([65536, 65536, 65536, 3392]);
      expect(Buffer.concat(parts)).toEqual(bytes);
    });

    it("removes temporary files left by an interrupted upload when it opens (PostgreSQL: writes no files)", async () => {
      if (backend.name === "postgres") {
        const run = await registry.createRun({ experiment: "demand" });
        await registry.putArtifact(run.id, "model.onnx", randomBytes(100));
        await expect(readdir(artifactsDir)).rejects.toThrow(/ENOENT/);
        return;
      }
      await writeFile(join(artifactsDir, "tmp", "dead.part"), "half an upload");
      await reopen();
      expect(await readdir(join(artifactsDir, "tmp"))).toEqual([]);
    });

    it("rejects bad paths, finished runs and missing or damaged files", async () => {
      const run = await registry.createRun({ experiment: "demand" });
      for (const path of ["../x", "/abs", "a//b", "a/./b", ""]) {
        await expectError(registry.putArtifact(run.id, path, new Uint8Array(1)), "invalid_argument");
      }
      await expectError(
        registry.putArtifact("nope", "a", new Uint8Array(1)),
        "not_found",
        /run nope does not exist/,
      );
      const bytes = randomBytes(1000);
      const art = await registry.putArtifact(run.id, "model.onnx", bytes);
      await registry.endRun(run.id, "finished");
      await expectError(registry.putArtifact(run.id, "late.txt", new Uint8Array(1)), "failed_precondition");
      await expectError(registry.readArtifact(run.id, "other"), "not_found", /has no artifact "other"/);

      const damaged = Buffer.from(bytes);
      damaged[10] = (damaged[10] ?? 0) ^ 0xff;
      await tamper(art.sha256, damaged);
      await expectError(registry.readArtifact(run.id, "model.onnx"), "data_loss", /damaged/);
      const opened = await registry.openArtifact(run.id, "model.onnx");
      await expectError(
        (async () => {
          for await (const _ of opened.chunks);
        })(),
        "data_loss",
      );
      await tamper(art.sha256, undefined);
      await expectError(
        registry.readArtifact(run.id, "model.onnx"),
        "not_found",
        /missing from the artifact store/,
      );
      await expectError(registry.openArtifact(run.id, "model.onnx"), "not_found", /missing/);
      await expectError(
        registry.createModelVersion({ modelName: "m", runId: run.id }),
        "failed_precondition",
        /missing from the artifact store; no version was created/,
      );
      expect(await registry.getRegisteredModel("m")).toBeUndefined();
    });
  });

  describe("registered models and versions", () => {
    it("numbers versions 1..10 under 10 concurrent createModelVersion calls", async () => {
      const runs = await Promise.all(Array.from({ length: 10 }, () => finishedRun()));
      const versions = await Promise.all(
        runs.map((r) => registry.createModelVersion({ modelName: "bike-demand", runId: r.id })),
      );
      expect(versions.map((v) => Number(v.version)).sort((a, b) => a - b)).toEqual([
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
      ]);
      const listed = await registry.listModelVersions("bike-demand");
      expect(listed.map((v) => v.version)).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
      for (const v of versions) expect(listed.find((l) => l.version === v.version)?.runId).toBe(v.runId);
      expect((await registry.getRegisteredModel("bike-demand"))?.latestVersion).toBe("10");
    });

    it("needs a finished run with artifacts; carries lineage and the run's latest metrics", async () => {
      const running = await registry.createRun({ experiment: "demand" });
      await expectError(
        registry.createModelVersion({ modelName: "m", runId: running.id }),
        "failed_precondition",
        /is running; only a finished run/,
      );
      await registry.endRun(running.id, "finished");
      await expectError(
        registry.createModelVersion({ modelName: "m", runId: running.id }),
        "failed_precondition",
        /has no artifacts/,
      );
      await expectError(registry.createModelVersion({ modelName: "m", runId: "nope" }), "not_found");
      expect(await registry.listRegisteredModels()).toEqual([]);

      const run = await finishedRun({ metrics: { test_rmse: 61.5 } });
      const v = await registry.createModelVersion({ modelName: "m", runId: run.id, description: "d" });
      expect(v).toMatchObject({
        modelName: "m",
        version: "1",
        runId: run.id,
        metrics: { test_rmse: 61.5 },
        description: "d",
      });
      expect(v.artifacts).toEqual(run.artifacts);
      expect(await registry.getModelVersion("m", "latest")).toEqual(v);
      expect(await registry.getModelVersion("m", "2")).toBeUndefined();
      expect(await registry.getModelVersion("m", "production")).toBeUndefined();
      expect(await registry.getModelVersion("zz", "1")).toBeUndefined();
      await expectError(registry.listModelVersions("zz"), "not_found", /model "zz" does not exist/);
    });

    it("creates registered models explicitly; duplicates are already_exists", async () => {
      const m = await registry.createRegisteredModel("bike-demand", "hourly demand");
      expect(m).toMatchObject({
        name: "bike-demand",
        description: "hourly demand",
        aliases: {},
        latestVersion: "",
      });
      await expectError(
        registry.createRegisteredModel("bike-demand"),
        "already_exists",
        /model "bike-demand"/,
      );
      await registry.createRegisteredModel("another");
      expect((await registry.listRegisteredModels()).map((x) => x.name)).toEqual(["another", "bike-demand"]);
    });
  });

  describe("aliases, the champion/challenger gate and the audit log", () => {
    it("allows the first production, then only a version that beat the current one on the gate window", async () => {
      const v1 = await version();
      const first = await move("production", v1);
      expect(first).toMatchObject({ fromVersion: "", toVersion: "1", actor: "alice", forced: false });

      const v2 = await version(); // no evaluation at all
      await expectError(
        move("production", v2),
        "failed_precondition",
        /version 2 has no champion\/challenger evaluation/,
      );

      const v3 = await version(gated("1", 60, 65));
      expect((await move("production", v3)).fromVersion).toBe("1");

      const v4 = await version(gated("1", 50, 65)); // evaluated against a stale champion
      await expectError(
        move("production", v4),
        "failed_precondition",
        "version 4 was compared against version 1, but production is now version 3; re-evaluate",
      );

      const v5 = await version(gated("3", 66.1, 65.2));
      const denied = await expectError(move("production", v5), "failed_precondition");
      expect(denied.message).toBe(
        "version 5 does not beat production version 3 on the gate window (RMSE 66.1 vs 65.2); pass force with a reason to override",
      );
      expect((await registry.getModelVersion("bike-demand", "production"))?.version).toBe("3");

      await expectError(
        move("production", v5, { force: true, reason: "  " }),
        "invalid_argument",
        /reason is required/,
      );
      const forced = await move("production", v5, { force: true, reason: "rollback of a bad feature" });
      expect(forced).toMatchObject({
        fromVersion: "3",
        toVersion: "5",
        forced: true,
        reason: "rollback of a bad feature",
      });

      // Other aliases are not gated.
      expect((await move("staging", v2)).forced).toBe(false);

      const history = await registry.aliasHistory("bike-demand", "production");
      expect(history.map((c) => [c.fromVersion, c.toVersion, c.forced, c.actor])).toEqual([
        ["", "1", false, "alice"],
        ["1", "3", false, "alice"],
        ["3", "5", true, "alice"],
      ]);
      expect((await registry.aliasHistory("bike-demand")).length).toBe(4);
      expect((await registry.getRegisteredModel("bike-demand"))?.aliases).toEqual({
        production: "5",
        staging: "2",
      });
      expect((await registry.getModelVersion("bike-demand", "5"))?.aliases).toEqual(["production"]);
    });

    it("validates alias moves and deletes aliases with an audit row", async () => {
      const v1 = await version();
      await expectError(move("staging", "9"), "not_found", 'model "bike-demand" has no version 9');
      await expectError(move("staging", "x"), "invalid_argument", /version must be a positive integer/);
      await expectError(move("9lives", v1), "invalid_argument", /alias "9lives" is not valid/);
      await expectError(move("latest", v1), "invalid_argument");
      await expectError(
        registry.setAlias({ modelName: "nope", alias: "staging", version: "1", actor: "a", reason: "r" }),
        "not_found",
        /model "nope" does not exist/,
      );
      await move("Staging", v1); // aliases are case-insensitive, stored lower-case
      expect((await registry.getModelVersion("bike-demand", "STAGING"))?.version).toBe("1");
      const deleted = await registry.deleteAlias({
        modelName: "bike-demand",
        alias: "staging",
        actor: "bob",
        reason: "retired",
      });
      expect(deleted).toMatchObject({ fromVersion: "1", toVersion: "", actor: "bob", reason: "retired" });
      await expectError(
        registry.deleteAlias({ modelName: "bike-demand", alias: "staging", actor: "bob", reason: "again" }),
        "not_found",
        /has no alias "staging"/,
      );
      expect((await registry.aliasHistory("bike-demand", "staging")).map((c) => c.toVersion)).toEqual([
        "1",
        "",
      ]);
    });

    it("maps legacy stages to aliases: Staging, Production (gated) and Archived", async () => {
      const t = (v: string, stage: string) =>
        registry.transitionStage({
          modelName: "bike-demand",
          version: v,
          stage,
          actor: "carol",
          reason: `to ${stage}`,
        });
      const v1 = await version();
      expect((await t(v1, "Staging")).aliases).toEqual(["staging"]);
      expect((await t(v1, "PRODUCTION")).aliases).toEqual(["production", "staging"]);
      const v2 = await version(gated("1", 80, 70));
      await expectError(t(v2, "production"), "failed_precondition", /does not beat production version 1/);
      await expectError(t(v2, "None"), "invalid_argument", /Staging, Production or Archived/);
      const archived = await t(v1, "archived");
      expect(archived.aliases).toEqual([]);
      expect(await registry.getRegisteredModel("bike-demand")).toMatchObject({ aliases: {} });
      const history = await registry.aliasHistory("bike-demand");
      expect(history.map((c) => [c.alias, c.fromVersion, c.toVersion, c.actor])).toEqual([
        ["staging", "", "1", "carol"],
        ["production", "", "1", "carol"],
        ["production", "1", "", "carol"],
        ["staging", "1", "", "carol"],
      ]);
    });

    it("tells listeners about each committed change, after the commit, and never about a refused one", async () => {
      const v1 = await version();
      const v2 = await version();
      const seen: AliasChange[] = [];
      const readBack: Promise<string | undefined>[] = [];
      const callerHadAnswer: boolean[] = [];
      let settled = false;
      const unsubscribe = registry.onAliasChange((change) => {
        seen.push(change);
        // The caller has not got its answer yet, and the change is already visible to everyone.
        callerHadAnswer.push(settled);
        readBack.push(registry.getModelVersion(change.modelName, change.alias).then((v) => v?.version));
      });
      registry.onAliasChange(() => {
        throw new Error("a faulty listener must not break the move");
      });
      const moved = await move("production", v1).finally(() => {
        settled = true;
      });
      settled = false;
      await expectError(move("production", v2), "failed_precondition");
      expect(seen).toEqual([moved]);
      expect(callerHadAnswer).toEqual([false]);
      expect(await Promise.all(readBack)).toEqual(["1"]);

      await registry.transitionStage({
        modelName: "bike-demand",
        version: v1,
        stage: "Staging",
        actor: "a",
        reason: "r",
      });
      await registry.transitionStage({
        modelName: "bike-demand",
        version: v1,
        stage: "Archived",
        actor: "a",
        reason: "r",
      });
      expect(seen.map((c) => `${c.alias}:${c.fromVersion}->${c.toVersion}`)).toEqual([
        "production:->1",
        "staging:->1",
        "production:1->",
        "staging:1->",
      ]);
      unsubscribe();
      await move("staging", v2);
      expect(seen.length).toBe(4);
    });
  });

  describe("searchRuns", () => {
    let runs: Record<string, Run>;

    beforeEach(async () => {
      runs = {};
      const make = async (
        name: string,
        metrics: Record<string, number>,
        params: Record<string, string>,
        tags: Record<string, string>,
        status: "finished" | "failed" | "running",
        experiment = "search",
      ) => {
        const run = await registry.createRun({ experiment, name, tags });
        await registry.logRunData(run.id, {
          params,
          metrics: Object.entries(metrics).map(([key, value]) => ({ key, value })),
        });
        // The latest value counts: rmse of r2 moves from 55 to 50 at a later step.
        if (name === "r2")
          await registry.logRunData(run.id, { metrics: [{ key: "rmse", value: 50, step: 5 }] });
        if (status !== "running") await registry.endRun(run.id, status);
        runs[name] = run;
        await new Promise((r) => setTimeout(r, 3)); // distinct start times
      };
      await make("r1", { rmse: 70, "valid.rmse": 71 }, { max_depth: "6" }, { family: "gbtree" }, "finished");
      await make("r2", { rmse: 55 }, { max_depth: "6" }, { family: "gbtree" }, "finished");
      await make("r3", { rmse: 58 }, { max_depth: "10" }, { family: "gblinear" }, "failed");
      await make("r4", {}, { max_depth: "12" }, {}, "running");
      await make("r5", { rmse: 40 }, { max_depth: "6" }, { family: "GBTree" }, "finished", "elsewhere");
    });

    const names = async (q: Parameters<Registry["searchRuns"]>[0]) =>
      (await registry.searchRuns(q)).runs.map((r) => r.name);

    it("filters on metrics, params, tags and attributes (runs lacking the key are left out)", async () => {
      const sorted = async (filter: string, experiments?: string[]) =>
        (await names({ filter, ...(experiments ? { experiments } : {}) })).sort();
      expect(await sorted("metrics.rmse < 60")).toEqual(["r2", "r3", "r5"]);
      expect(await sorted("metrics.rmse <= 50")).toEqual(["r2", "r5"]);
      expect(await sorted("metrics.rmse < 60 and params.max_depth = '6'")).toEqual(["r2", "r5"]);
      expect(await sorted("metrics.rmse < 60 AND params.max_depth = '6'", ["search"])).toEqual(["r2"]);
      expect(await sorted("metrics.rmse != 70")).toEqual(["r2", "r3", "r5"]);
      expect(await sorted("metrics.`valid.rmse` >= 71")).toEqual(["r1"]);
      expect(await sorted("metrics.valid.rmse = 71.0")).toEqual(["r1"]);
      expect(await sorted("tags.family = 'gbtree'")).toEqual(["r1", "r2"]);
      expect(await sorted('tags.family != "gbtree"')).toEqual(["r3", "r5"]);
      expect(await sorted("tags.family ILIKE 'gbt%'")).toEqual(["r1", "r2", "r5"]);
      expect(await sorted("tags.family LIKE 'gbt%'")).toEqual(["r1", "r2"]);
      expect(await sorted("params.max_depth LIKE '1%'")).toEqual(["r3", "r4"]);
      expect(await sorted("attributes.status = 'FINISHED'")).toEqual(["r1", "r2", "r5"]);
      // Case-sensitive with MLflow's status names, as MLflow compares them.
      expect(await sorted("attributes.status = 'running'")).toEqual([]);
      expect(await sorted("status = 'RUNNING'")).toEqual(["r4"]);
      expect(await sorted("attributes.run_name = 'r3'")).toEqual(["r3"]);
      expect(await sorted(`attributes.run_id = '${runs.r4?.id}'`)).toEqual(["r4"]);
      const r3Start = runs.r3?.startTime.getTime() as number;
      expect(await sorted(`attributes.start_time >= ${r3Start}`)).toEqual(["r3", "r4", "r5"]);
      expect(await sorted(`attributes.start_time < '${runs.r2?.startTime.toISOString()}'`)).toEqual(["r1"]);
      expect(await sorted("attributes.end_time > 0 and metrics.rmse > 60")).toEqual(["r1"]);
      // Values are parameters, never SQL.
      expect(await sorted("params.max_depth = '6'' OR ''1''=''1'")).toEqual([]);
      expect(await sorted("params.`max_depth' OR 1=1 --` = '6'")).toEqual([]);
      expect(await sorted("")).toEqual(["r1", "r2", "r3", "r4", "r5"]);
    });

    it("runs the rest of MLflow's grammar: IS NULL, IN lists, run. and bare attributes, user_id, artifact_uri, KILLED", async () => {
      const sorted = async (filter: string) => (await names({ filter })).sort();
      const r3 = runs.r3?.id as string;
      const r4 = runs.r4?.id as string;
      expect(await sorted("tags.family IS NULL")).toEqual(["r4"]);
      expect(await sorted("tags.family IS NOT NULL and params.max_depth = '6'")).toEqual(["r1", "r2", "r5"]);
      expect(await sorted("params.nope is null and metrics.rmse > 60")).toEqual(["r1"]);
      expect(await sorted(`attributes.run_id IN ('${r3}', '${r4}')`)).toEqual(["r3", "r4"]);
      expect(await sorted(`run_id NOT IN ('${r3}', "${r4}")`)).toEqual(["r1", "r2", "r5"]);
      expect(await sorted("run.run_name = 'r2'")).toEqual(["r2"]);
      expect(await sorted("run_name LIKE 'r%' and status = 'FAILED' and")).toEqual(["r3"]);
      expect(await sorted('metrics."valid.rmse" > 70')).toEqual(["r1"]);
      expect(await sorted("`metric`.rmse >= 58 and `tags`.family != 'gbtree'")).toEqual(["r3"]);
      const uri = `mlflow-artifacts:/${runs.r3?.experimentId}/${r3}/artifacts`;
      expect(await sorted(`attributes.artifact_uri = '${uri}'`)).toEqual(["r3"]);
      expect(await sorted("attributes.artifact_uri LIKE '%/artifacts'")).toHaveLength(5);
      expect(await sorted("attributes.user_id = ''")).toHaveLength(5);

      const killed = await registry.createRun({
        experiment: "search",
        name: "r6",
        tags: { "mlflow.user": "ada" },
      });
      await registry.endRun(killed.id, "cancelled");
      expect(await sorted("status = 'KILLED'")).toEqual(["r6"]);
      expect(await sorted("status = 'CANCELLED'")).toEqual([]);
      expect(await sorted("attributes.user_id = 'ada'")).toEqual(["r6"]);
      expect(await sorted("user_id ILIKE 'AD%'")).toEqual(["r6"]);
      expect(await names({ filter: "run_name LIKE 'r%'", orderBy: ["status DESC", "run_name"] })).toEqual([
        "r4", // RUNNING
        "r6", // KILLED
        "r1", // FINISHED
        "r2",
        "r5",
        "r3", // FAILED
      ]);

      // MLflow keeps a doubled quote as written: the filter value 'it''s' reads it''s, both quotes kept.
      await registry.logRunData(r4, { params: { quote: "it''s", plain: "it's" } });
      expect(await sorted("params.quote = 'it''s'")).toEqual(["r4"]);
      expect(await sorted("params.plain = 'it''s'")).toEqual([]);
      expect(await sorted(`params.plain = "it's"`)).toEqual(["r4"]);
    });

    it("orders by metrics, params and attributes, with missing values last, and pages", async () => {
      expect(await names({ orderBy: ["metrics.rmse ASC"] })).toEqual(["r5", "r2", "r3", "r1", "r4"]);
      expect(await names({ orderBy: ["metrics.rmse DESC"] })).toEqual(["r1", "r3", "r2", "r5", "r4"]);
      expect(await names({ orderBy: ["params.max_depth", "attributes.start_time DESC"] })).toEqual([
        "r3",
        "r4",
        "r5",
        "r2",
        "r1",
      ]);
      expect(await names({ orderBy: ["start_time ASC"] })).toEqual(["r1", "r2", "r3", "r4", "r5"]);
      expect(await names({})).toEqual(["r5", "r4", "r3", "r2", "r1"]);

      const all: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await registry.searchRuns({ orderBy: ["metrics.rmse"], pageSize: 2, pageToken });
        all.push(...page.runs.map((r) => r.name));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "");
      expect(pages).toBe(3);
      expect(all).toEqual(["r5", "r2", "r3", "r1", "r4"]);
      const firstPage = await registry.searchRuns({ pageSize: 2 });
      await expectError(
        registry.searchRuns({ pageSize: 3, pageToken: firstPage.nextPageToken }),
        "invalid_argument",
        /page_token is not valid/,
      );
      await expectError(registry.searchRuns({ pageToken: "garbage" }), "invalid_argument");
      await expectError(registry.searchRuns({ experiments: ["nope"] }), "not_found", /experiment "nope"/);
      const full = (await registry.searchRuns({ filter: "attributes.run_name = 'r2'" })).runs[0];
      expect(full).toEqual(await registry.getRun(runs.r2?.id as string));
    });

    it("explains a malformed filter or order_by with the position of the bad token", async () => {
      const cases: [string, string][] = [
        ["metrics.rmse lt 60", 'filter: expected a comparison operator at position 14, found "lt"'],
        ["metrics.rmse < 'sixty'", "filter: metrics.rmse must be compared to a number at position 16"],
        [
          "params.max_depth = 6",
          "filter: params.max_depth must be compared to a quoted string at position 20",
        ],
        [
          "metrics.rmse < 60 or params.a = '1'",
          'filter: or is not supported; conditions can only be joined by and at position 19, found "or"',
        ],
        ["rmse < 60", 'filter: unknown attribute "rmse"; expected one of status, run_name'],
        ["metricz.rmse < 60", 'filter: unknown entity "metricz"'],
        ["attributes.colour = 'red'", 'filter: unknown attribute "colour"'],
        ["tags.a = 'open", "filter: unterminated string (position 10)"],
        ["metrics.rmse < 60 and metrics", 'filter: unknown attribute "metrics"'],
        ["metrics.rmse LIKE '6%'", "filter: LIKE cannot be used with metrics.rmse"],
        ["params.a < '1'", "filter: < cannot be used with params.a"],
        ["attributes.status IN ('FINISHED')", "filter: IN is only supported on attributes.run_id"],
        ["metrics.rmse == 60", "filter: == is not an operator; use ="],
        [
          "metrics.rmse <",
          "filter: expected a number, a quoted string or a list at position 15, found end of input",
        ],
      ];
      for (const [filter, message] of cases) {
        const error = await expectError(registry.searchRuns({ filter }), "invalid_argument");
        expect(error.message, filter).toContain(message);
        expect(error.field).toBe("filter");
      }
      const bad = await expectError(
        registry.searchRuns({ orderBy: ["metrics.rmse", "metrics.rmse DOWN"] }),
        "invalid_argument",
      );
      expect(bad.message).toBe('order_by[1]: expected ASC or DESC at position 14, found "DOWN"');
      expect(() => parseOrderBy(["colour"])).toThrow(RegistryError);
      expect(parseFilter("  ")).toEqual([]);
      expect(parseFilter("metrics.`a b` >= -1.5e2")).toEqual([
        { entity: "metrics", key: "a b", op: ">=", value: -150, position: 1 },
      ]);
    });
  });

  describe("on-disk layout", () => {
    it("creates the database file's folder and the artifact folders", async () => {
      if (backend.name === "duckdb") {
        expect((await stat(dbPath)).isFile()).toBe(true);
        expect((await stat(join(artifactsDir, "sha256"))).isDirectory()).toBe(true);
      } else {
        // Beside a shared database nothing is kept on the replica's disk.
        await expect(stat(artifactsDir)).rejects.toThrow(/ENOENT/);
      }
    });
  });
});
