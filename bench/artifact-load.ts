/**
 * How long a server takes to load a model when its artifacts are files beside the embedded DuckDB
 * database versus rows of registry.blobs in PostgreSQL (docs/deployment.md, "Storage backends").
 * One real model (the quickest training job) is registered in both; each round reads what LiveModel
 * reads (model card + ONNX, sha256 checked) and then builds the ONNX sessions (ServingModel.load);
 * a 20 MiB artifact shows how the read scales. Medians of ROUNDS, in one process, backends alternating.
 * Usage: npx tsx bench/artifact-load.ts (starts its own throwaway PostgreSQL cluster; prints markdown).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ServingModel } from "../services/predict/serving-model.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX } from "../services/registry/model-card.js";
import { type ModelVersion, Registry } from "../services/registry/registry.js";
import type { SqlDatabase } from "../services/storage/database.js";
import { openDatabase } from "../services/storage/open.js";
import { startPostgres } from "../tests/helpers/postgres.js";
import { seedModels, testConfig } from "../tests/helpers/server.js";

const ROUNDS = 15;
const BIG = 20 * 1024 * 1024;

interface Side {
  name: string;
  db: SqlDatabase;
  registry: Registry;
  version: ModelVersion;
  bigRun: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const dir = await mkdtemp(join(tmpdir(), "bikeshare-artifact-bench-"));
const pg = await startPostgres();
try {
  const config = await testConfig(dir);
  await seedModels(config, 1);
  const duck = await openDatabase(config);
  const duckRegistry = await Registry.open(duck, config.modelsDir);
  const duckVersion = await duckRegistry.getModelVersion(config.modelName, "1");
  if (!duckVersion) throw new Error("the seed job registered no version");

  // The same artifacts, registered in PostgreSQL.
  const url = await pg.createDatabase();
  const pgDb = await openDatabase({ dbPath: "unused", databaseUrl: url });
  const pgRegistry = await Registry.open(pgDb, join(dir, "unused-models"));
  const copy = await pgRegistry.createRun({ experiment: "bench" });
  for (const a of duckVersion.artifacts) {
    await pgRegistry.putArtifact(copy.id, a.path, await duckRegistry.readArtifact(duckVersion.runId, a.path));
  }
  await pgRegistry.endRun(copy.id, "finished");
  const pgVersion = await pgRegistry.createModelVersion({ modelName: config.modelName, runId: copy.id });

  const big = randomBytes(BIG);
  const sides: Side[] = [];
  for (const [name, db, registry, version] of [
    ["DuckDB + files", duck, duckRegistry, duckVersion],
    ["PostgreSQL (bytea)", pgDb, pgRegistry, pgVersion],
  ] as const) {
    const run = await registry.createRun({ experiment: "bench-big" });
    await registry.putArtifact(run.id, "big.bin", big);
    sides.push({ name, db, registry, version, bigRun: run.id });
  }

  const times = new Map<string, { read: number[]; load: number[]; big: number[] }>();
  for (const s of sides) times.set(s.name, { read: [], load: [], big: [] });
  for (let round = 0; round < ROUNDS + 1; round++) {
    for (const s of round % 2 ? [...sides].reverse() : sides) {
      const t = times.get(s.name) as { read: number[]; load: number[]; big: number[] };
      const read = await timed(async () => {
        await s.registry.readArtifact(s.version.runId, ARTIFACT_CARD);
        await s.registry.readArtifact(s.version.runId, ARTIFACT_ONNX);
      });
      let model: ServingModel | undefined;
      const load = await timed(async () => {
        model = await ServingModel.load(s.registry, s.version, 1);
      });
      await model?.retire();
      const bigRead = await timed(() => s.registry.readArtifact(s.bigRun, "big.bin"));
      // The first round warms caches and connections on both sides: left out.
      if (round > 0) {
        t.read.push(read);
        t.load.push(load);
        t.big.push(bigRead);
      }
    }
  }
  const onnx = duckVersion.artifacts.find((a) => a.path === ARTIFACT_ONNX)?.sizeBytes ?? 0;
  console.log(
    `Model ${config.modelName} v1: ONNX ${(onnx / 1024).toFixed(0)} KiB; medians of ${ROUNDS} rounds on ${new Date().toISOString().slice(0, 7)}.\n`,
  );
  console.log(
    "| artifacts in | card + ONNX read | ServingModel.load (read + ONNX sessions) | 20 MiB artifact read |",
  );
  console.log("|---|---|---|---|");
  for (const s of sides) {
    const t = times.get(s.name) as { read: number[]; load: number[]; big: number[] };
    console.log(
      `| ${s.name} | ${median(t.read).toFixed(1)} ms | ${median(t.load).toFixed(1)} ms | ${median(t.big).toFixed(1)} ms |`,
    );
  }
  await duck.close();
  await pgDb.close();
} finally {
  await pg.destroy();
  await rm(dir, { recursive: true, force: true });
}
