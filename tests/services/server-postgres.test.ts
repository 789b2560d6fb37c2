/**
 * The whole server on PostgreSQL (BIKESHARE_DATABASE_URL): it starts on a database it migrates itself,
 * serves the version a seed job registered there, logs predictions to it, and runs a training job whose
 * runs, version and artifact bytes all land in that database (nothing in the artifacts folder).
 */

import { stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { PgDatabase } from "../../services/storage/postgres.js";
import { testPostgres } from "../helpers/backends.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let url: string;
beforeAll(async () => {
  url = await (await testPostgres()).createDatabase();
  t = await startTestServer({ databaseUrl: url, spoolDir: false });
});
afterAll(async () => {
  await t?.stop();
});

describe("the server on PostgreSQL", () => {
  it("predicts with the version stored in PostgreSQL and logs the prediction there", async () => {
    const conditions = modelInput(readHourCsvRecords()[4000] as Record<string, number>);
    const res = await connectClient(t.baseUrl, PredictService).predict({ conditions });
    expect(res.modelVersion).toBe("1");
    expect(res.prediction).toBeGreaterThan(0);
    const db = await PgDatabase.open(url);
    try {
      await expect
        .poll(async () => (await db.all<{ n: bigint }>("SELECT count(*) AS n FROM predictions"))[0]?.n, {
          timeout: 5_000,
        })
        .toBe(1n);
    } finally {
      await db.close();
    }
  });

  it("runs a training job: its version and artifact bytes are in the database, no artifact file is written", async () => {
    const trainer = connectClient(t.baseUrl, TrainService, t.tokens.trainer);
    const { job } = await trainer.startTraining({
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      reason: "test: on postgres",
    });
    for await (const _ of trainer.watchJob({ jobId: job?.id as string }));
    const { job: done } = await trainer.getJob({ jobId: job?.id as string });
    expect([done?.state, done?.error]).toEqual([JobState.SUCCEEDED, ""]);
    expect(done?.modelVersion).toBe("2");

    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.reader);
    const { version } = await registry.getModelVersion({ modelName: "bike-demand", versionOrAlias: "2" });
    expect(version?.aliases).toContain("staging");
    const db = await PgDatabase.open(url);
    try {
      const blobs = await db.all<{ sha256: string; n: number }>(
        "SELECT b.sha256, octet_length(b.bytes) AS n FROM registry.blobs b JOIN registry.artifacts a USING (sha256) WHERE a.run_id = $1",
        [version?.runId],
      );
      expect(blobs.length).toBeGreaterThanOrEqual(3); // model JSON, ONNX, model card
      expect(blobs.every((b) => b.n > 0)).toBe(true);
    } finally {
      await db.close();
    }
    await expect(stat(join(t.config.modelsDir, "sha256"))).rejects.toThrow(/ENOENT/);
  });
});
