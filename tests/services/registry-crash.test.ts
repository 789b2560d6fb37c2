import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { deserialize, serialize } from "node:v8";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inlineExecutor, type JobExecutor } from "../../pipelines/jobs/tasks.js";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { runTrainingJob } from "../../services/jobs/train-job.js";
import { createLogger } from "../../services/observability/log.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { BACKENDS, type Backend } from "../helpers/backends.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";
import { type RecordedTask, recordingExecutor, replayExecutor } from "../helpers/replay-executor.js";
import { QUICK_REQUEST } from "../helpers/server.js";

const ROOT = resolve(import.meta.dirname, "../..");
const CHILD = join(ROOT, "tests/helpers/registry-crash-child.ts");

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-registry-crash-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Child {
  process: ChildProcess;
  lines: string[];
  stderr: string[];
  /** Resolves with the first line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<NodeJS.Signals | number | null>;
}

function startChild(mode: string, db: string, artifacts: string, env: Record<string, string> = {}): Child {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode, db, artifacts], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (data: string) => {
    buffered += data;
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      for (const w of waiters.filter((w) => w.pattern.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (data: string) => stderr.push(data));
  const exited = new Promise<NodeJS.Signals | number | null>((done) => {
    child.on("exit", (code, signal) => done(signal ?? code));
  });
  return {
    process: child,
    lines,
    stderr,
    exited,
    waitFor(pattern, timeoutMs = 30_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child never printed ${pattern}; stderr: ${stderr.join("")}`)),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(() => {
          if (!lines.some((l) => pattern.test(l))) {
            clearTimeout(timer);
            reject(new Error(`child exited before printing ${pattern}; stderr: ${stderr.join("")}`));
          }
        });
      });
    },
  };
}

const lastNumber = (lines: readonly string[], prefix: string): number =>
  Math.max(
    0,
    ...lines.filter((l) => l.startsWith(`${prefix} `)).map((l) => Number(l.slice(prefix.length + 1))),
  );

describe.each(BACKENDS)("registry on $name", (backend) => {
  describe("crash safety (SIGKILL)", () => {
    it("keeps a transaction committed right before the kill and nothing of one killed before COMMIT", async () => {
      const probe = await backend.create(dir);
      const committed = startChild("die-after-commit", probe, join(dir, "probe-artifacts"));
      await committed.waitFor(/^committed$/);
      expect(await committed.exited).toBe("SIGKILL");

      const torn = startChild("die-in-transaction", probe, join(dir, "probe-artifacts"));
      await torn.waitFor(/^inside$/);
      expect(await torn.exited).toBe("SIGKILL");

      const db = await backend.open(probe);
      try {
        expect(await db.all("SELECT label, n FROM crash_probe ORDER BY n")).toEqual([
          { label: "committed", n: 1 },
          { label: "committed", n: 2 },
        ]);
      } finally {
        await db.close();
      }
    });

    it("leaves a consistent registry after being killed at a random moment, three times over", async () => {
      const dbPath = await backend.create(dir);
      const artifactsDir = join(dir, `artifacts-${backend.name}`);
      let previousVersions = 0;
      for (let round = 1; round <= 3; round++) {
        const child = startChild("loop", dbPath, artifactsDir);
        await child.waitFor(/^ready$/);
        await child.waitFor(/^a \d+$/); // at least one full iteration in this round
        await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
        child.process.kill("SIGKILL");
        expect(await child.exited).toBe("SIGKILL");
        const reportedVersion = lastNumber(child.lines, "v");
        const reportedAlias = lastNumber(child.lines, "a");

        const db = await backend.open(dbPath);
        try {
          const registry = await Registry.open(db, artifactsDir);
          if (backend.name === "duckdb") expect(await readdir(join(artifactsDir, "tmp"))).toEqual([]);

          // Version numbers are contiguous from 1, and nothing the child saw committed was lost.
          const versions = await registry.listModelVersions("crash-model");
          const numbers = versions.map((v) => Number(v.version));
          expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
          expect(numbers.length).toBeGreaterThanOrEqual(reportedVersion);
          expect(numbers.length).toBeGreaterThan(previousVersions);
          previousVersions = numbers.length;

          // Every version has all of its run's artifacts, stored, with the recorded sha256.
          for (const v of versions) {
            const run = await registry.getRun(v.runId);
            expect(run?.status).toBe("finished");
            expect(v.artifacts.map((a) => a.path)).toEqual(["card.json", "model.onnx", "shared.bin"]);
            expect(v.artifacts).toEqual(run?.artifacts);
            for (const a of v.artifacts) {
              const bytes =
                backend.name === "duckdb"
                  ? await readFile(registry.blobPath(a.sha256))
                  : ((
                      await db.all<{ bytes: Buffer }>("SELECT bytes FROM registry.blobs WHERE sha256 = $1", [
                        a.sha256,
                      ])
                    )[0]?.bytes ?? Buffer.alloc(0));
              expect(bytes.length).toBe(a.sizeBytes);
              expect(createHash("sha256").update(bytes).digest("hex")).toBe(a.sha256);
            }
          }

          // Every alias points at an existing version, and the audit log agrees with it.
          const model = await registry.getRegisteredModel("crash-model");
          const aliases = Object.entries(model?.aliases ?? {});
          expect(aliases.map(([alias]) => alias)).toEqual(["staging"]);
          for (const [alias, version] of aliases) {
            expect(numbers).toContain(Number(version));
            const history = await registry.aliasHistory("crash-model", alias);
            expect(history.at(-1)?.toVersion).toBe(version);
            expect(history.every((c) => c.actor === "crash-child")).toBe(true);
          }
          expect(Number(model?.aliases.staging)).toBeGreaterThanOrEqual(reportedAlias);
          // Each committed move's audit row chains from the previous one.
          const history = await registry.aliasHistory("crash-model");
          history.forEach((c, i) => {
            expect(c.fromVersion).toBe(i === 0 ? "" : history[i - 1]?.toVersion);
          });

          // The content shared by every run is stored once.
          const shared = versions[0]?.artifacts.find((a) => a.path === "shared.bin")?.sha256;
          expect(versions.every((v) => v.artifacts.some((a) => a.sha256 === shared))).toBe(true);
        } finally {
          await db.close();
        }
      }
    });
  });
});

const CRASH_MODEL = "crash-model";

function trainingContext(registry: Registry, jobs: JobStore, executor: JobExecutor) {
  return {
    registry,
    jobs,
    events: new JobEvents(),
    log: createLogger({}, "warn", () => {}),
    executor,
    dataPath: HOUR_CSV,
    modelName: CRASH_MODEL,
    nthread: 2,
  };
}

/** Everything a training job's registration decides, without ids and times that differ by run. */
async function registrationState(backend: Backend, dbPath: string, artifacts: string, jobId: string) {
  const db = await backend.open(dbPath);
  try {
    const registry = await Registry.open(db, artifacts);
    const jobs = await JobStore.open(db);
    const job = await jobs.get(jobId);
    const model = await registry.getRegisteredModel(CRASH_MODEL);
    const versions = model ? await registry.listModelVersions(CRASH_MODEL) : [];
    const history = model ? await registry.aliasHistory(CRASH_MODEL) : [];
    const { runs } = await registry.searchRuns({ filter: `tags.job_id = '${jobId}'` });
    return {
      job: { state: job?.state, modelVersion: job?.modelVersion, promoted: job?.promoted, error: job?.error },
      versions: versions.map((v) => v.version),
      versionRunsFinished: versions.map((v) => runs.find((r) => r.id === v.runId)?.status),
      aliases: model?.aliases ?? {},
      aliasMoves: history.map((c) => `${c.alias}: ${c.fromVersion || "-"} -> ${c.toVersion}`),
      runsLeftRunning: runs.filter((r) => r.status === "running").length,
    };
  } finally {
    await db.close();
  }
}

describe.each(BACKENDS)("registration on $name", (backend) => {
  describe("a training job killed at each database write of its register stage", () => {
    it("resumes to the state an unkilled run reaches: one version, staging, the gate's decision", async () => {
      // The training task itself is recorded once from a real run and replayed: what is under test
      // is the registration that follows it.
      const recordDir = join(dir, "record");
      const recordDb = await Database.open(join(recordDir, "bikeshare.duckdb"));
      const recorder = recordingExecutor(inlineExecutor);
      try {
        const jobs = await JobStore.open(recordDb);
        const registry = await Registry.open(recordDb, join(recordDir, "artifacts"));
        const { job } = await jobs.create(QUICK_REQUEST, "test");
        await runTrainingJob(trainingContext(registry, jobs, recorder), job.id, new AbortController().signal);
        expect((await jobs.get(job.id))?.state).toBe("succeeded");
      } finally {
        await recordDb.close();
      }
      const outcomeFile = join(dir, "training-outcome.bin");
      await writeFile(outcomeFile, serialize(recorder.recorded));
      const recorded = deserialize(await readFile(outcomeFile)) as RecordedTask;

      const killed: { n: number; state: Awaited<ReturnType<typeof registrationState>> }[] = [];
      let unkilled: Awaited<ReturnType<typeof registrationState>> | undefined;
      for (let n = 1; n <= 60 && !unkilled; n++) {
        const caseDir = join(dir, `kill-after-${n}`);
        const dbPath = await backend.create(caseDir);
        const artifacts = join(caseDir, "artifacts");
        const setup = await backend.open(dbPath);
        const { job } = await (await JobStore.open(setup)).create(QUICK_REQUEST, "test");
        await setup.close();

        const child = startChild("train-job", dbPath, artifacts, {
          JOB_ID: job.id,
          OUTCOME_FILE: outcomeFile,
          KILL_AFTER: String(n),
        });
        const exit = await child.exited;
        if (exit !== "SIGKILL") expect(exit, child.stderr.join("")).toBe(0);

        // The restarted server runs every unfinished job again.
        const db = await backend.open(dbPath);
        try {
          const jobs = await JobStore.open(db);
          const registry = await Registry.open(db, artifacts);
          for (const unfinished of await jobs.unfinished()) {
            await runTrainingJob(
              trainingContext(registry, jobs, replayExecutor(recorded)),
              unfinished.id,
              new AbortController().signal,
            );
          }
        } finally {
          await db.close();
        }
        const state = await registrationState(backend, dbPath, artifacts, job.id);
        if (exit === "SIGKILL") killed.push({ n, state });
        else unkilled = state;
      }

      // What an unkilled run does with the first model: staging and, through the gate, production.
      expect(unkilled).toEqual({
        job: { state: "succeeded", modelVersion: "1", promoted: true, error: undefined },
        versions: ["1"],
        versionRunsFinished: ["finished"],
        aliases: { production: "1", staging: "1" },
        aliasMoves: ["staging: - -> 1", "production: - -> 1"],
        runsLeftRunning: 0,
      });
      // Every write of the stage was a kill point (the run record, its artifacts, the version, the job).
      expect(killed.length).toBeGreaterThanOrEqual(8);
      for (const { n, state } of killed) expect(state, `killed after database call ${n}`).toEqual(unkilled);
    }, 900_000);
  });
});
