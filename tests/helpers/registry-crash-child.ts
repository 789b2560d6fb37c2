/**
 * Child process for tests/services/registry-crash.test.ts; it is killed with SIGKILL by the test.
 *
 *   node --import tsx tests/helpers/registry-crash-child.ts <mode> <db file> <artifacts dir>
 *
 * Modes:
 *   loop                run → artifacts → finished → model version → alias "staging", as fast as it can;
 *                       prints "v <version>" once a version is committed and "a <version>" once
 *                       the alias move is committed (stdout to a pipe is synchronous on Linux, so a
 *                       printed line means the commit returned before the kill).
 *   die-after-commit    commits one row to crash_probe, then kills itself.
 *   die-in-transaction  writes rows inside a transaction and kills itself before COMMIT.
 *   train-job           runs training job $JOB_ID with the task outcome recorded in $OUTCOME_FILE
 *                       (see replayExecutor) and kills itself right after the $KILL_AFTER-th database
 *                       call (statement or transaction) of the job's "register" stage; exits 0 when
 *                       the job ends before that.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { deserialize } from "node:v8";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { runTrainingJob } from "../../services/jobs/train-job.js";
import { createLogger } from "../../services/observability/log.js";
import { Registry } from "../../services/registry/registry.js";
import type { SqlDatabase } from "../../services/storage/database.js";
import { openDatabase } from "../../services/storage/open.js";
import { HOUR_CSV } from "./hour-csv.js";
import { type RecordedTask, replayExecutor } from "./replay-executor.js";

/** `db` as seen by the job: after `stage` is written, the `n`-th call's completion kills the process. */
function killingAfter(db: SqlDatabase, stage: string, n: number, kill: () => void): SqlDatabase {
  let armed = false;
  let calls = 0;
  return new Proxy(db, {
    get(target, key) {
      const value = Reflect.get(target, key, target);
      if (typeof value !== "function") return value;
      if (key !== "all" && key !== "run" && key !== "transaction") return value.bind(target);
      return async (...args: unknown[]) => {
        if (!armed && key === "run" && Array.isArray(args[1]) && args[1][1] === stage) armed = true;
        const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        if (armed && ++calls === n) kill();
        return result;
      };
    },
  });
}

const [mode, dbPath, artifactsDir] = process.argv.slice(2);
if (!mode || !dbPath || !artifactsDir) {
  process.stderr.write(
    "usage: registry-crash-child.ts <mode> <db file or postgres:// URL> <artifacts dir>\n",
  );
  process.exit(2);
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const die = () => process.kill(process.pid, "SIGKILL");

const db = await openDatabase(
  dbPath.startsWith("postgres://") ? { dbPath: "", databaseUrl: dbPath } : { dbPath },
);

if (mode === "die-after-commit" || mode === "die-in-transaction") {
  await db.run("CREATE TABLE IF NOT EXISTS crash_probe (label VARCHAR, n INTEGER)");
  if (mode === "die-after-commit") {
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO crash_probe VALUES ('committed', 1)");
      await tx.run("INSERT INTO crash_probe VALUES ('committed', 2)");
    });
    say("committed");
    die();
  } else {
    await db.transaction(async (tx) => {
      await tx.run(
        db.dialect === "postgres"
          ? "INSERT INTO crash_probe SELECT 'uncommitted', n FROM generate_series(1, 10000) AS n"
          : "INSERT INTO crash_probe SELECT 'uncommitted', range::INTEGER FROM range(10000)",
      );
      say("inside");
      die();
      await new Promise(() => undefined);
    });
  }
} else if (mode === "loop") {
  const registry = await Registry.open(db, artifactsDir);
  const shared = Buffer.alloc(10_000, 7); // identical in every run: stored once
  say("ready");
  for (let i = 0; ; i++) {
    const run = await registry.createRun({ experiment: "crash", name: `iteration ${i}` });
    await registry.logRunData(run.id, {
      params: { iteration: String(i) },
      metrics: [{ key: "rmse", value: 50 + Math.random() * 10 }],
    });
    await registry.putArtifact(run.id, "model.onnx", randomBytes(2_000 + Math.floor(Math.random() * 40_000)));
    await registry.putArtifact(
      run.id,
      "card.json",
      Buffer.from(JSON.stringify({ iteration: i, pid: process.pid })),
    );
    await registry.putArtifact(run.id, "shared.bin", shared);
    await registry.endRun(run.id, "finished");
    const version = await registry.createModelVersion({ modelName: "crash-model", runId: run.id });
    say(`v ${version.version}`);
    await registry.setAlias({
      modelName: "crash-model",
      alias: "staging",
      version: version.version,
      actor: "crash-child",
      reason: `iteration ${i}`,
    });
    say(`a ${version.version}`);
  }
} else if (mode === "train-job") {
  const jobId = process.env.JOB_ID ?? "";
  const recorded = deserialize(await readFile(process.env.OUTCOME_FILE ?? "")) as RecordedTask;
  const watched = killingAfter(db, "register", Number(process.env.KILL_AFTER), die);
  const ctx = {
    registry: await Registry.open(watched, artifactsDir),
    jobs: await JobStore.open(watched),
    events: new JobEvents(),
    log: createLogger({}, "warn", () => {}),
    executor: replayExecutor(recorded),
    dataPath: HOUR_CSV,
    modelName: "crash-model",
    nthread: 1,
  };
  await runTrainingJob(ctx, jobId, new AbortController().signal);
  await db.close();
  say("finished");
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
