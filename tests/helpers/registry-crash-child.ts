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
 */
import { randomBytes } from "node:crypto";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";

const [mode, dbPath, artifactsDir] = process.argv.slice(2);
if (!mode || !dbPath || !artifactsDir) {
  process.stderr.write("usage: registry-crash-child.ts <mode> <db file> <artifacts dir>\n");
  process.exit(2);
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const die = () => process.kill(process.pid, "SIGKILL");

const db = await Database.open(dbPath);

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
      await tx.run("INSERT INTO crash_probe SELECT 'uncommitted', range::INTEGER FROM range(10000)");
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
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
