import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RawRecord, recordsToColumns } from "../../core/features/index.js";
import { ServingModel, WORKER_BATCH_ROWS } from "../../services/predict/serving-model.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { seedModels, testConfig } from "../helpers/server.js";

const records = readHourCsvRecords().map(
  (r) => Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f]])) as RawRecord,
);

describe("ServingModel", () => {
  let dir: string;
  let db: Database;
  let model: ServingModel;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-serving-"));
    const config = await testConfig(dir);
    await seedModels(config, 1);
    db = await Database.open(config.dbPath);
    const registry = await Registry.open(db, config.modelsDir);
    const version = await registry.getModelVersion(config.modelName, "production");
    if (!version) throw new Error("the seed job registered no production version");
    model = await ServingModel.load(registry, version, 1);
  });

  afterAll(async () => {
    await model?.retire();
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("predicts a large batch on its worker exactly as small requests are predicted in-thread", async () => {
    const rows = records.slice(0, 3 * WORKER_BATCH_ROWS);
    const batch = await model.predict(recordsToColumns(rows));
    const small: number[] = [];
    for (let i = 0; i < rows.length; i += WORKER_BATCH_ROWS) {
      small.push(...(await model.predict(recordsToColumns(rows.slice(i, i + WORKER_BATCH_ROWS)))));
    }
    expect(Array.from(batch)).toEqual(small);
  });

  it("leaves the event loop free while a full batch is predicted", async () => {
    const rows = records.slice(0, 10_000);
    let turns = 0;
    let spinning = true;
    const spin = () => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    setImmediate(spin);
    const predictions = await model.predict(recordsToColumns(rows));
    spinning = false;
    expect(predictions).toHaveLength(rows.length);
    // On the event loop's thread ONNX Runtime runs the whole batch between two turns of the loop.
    expect(turns).toBeGreaterThan(5);
  });
});
