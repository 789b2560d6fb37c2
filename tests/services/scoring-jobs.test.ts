/**
 * PredictService.StartScoring: a file on the server scored as a job with the production model,
 * followed with TrainService.GetJob; its paths cannot leave the scoring directory.
 */

import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { DuckDBInstance } from "@duckdb/node-api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RAW_FIELD_NAMES } from "../../core/features/index.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { inlineExecutor } from "../../pipelines/jobs/tasks.js";
import { JobEvents } from "../../services/jobs/events.js";
import { runScoringJob } from "../../services/jobs/score-job.js";
import { JobStore } from "../../services/jobs/store.js";
import { createLogger } from "../../services/observability/log.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
const records = readHourCsvRecords().slice(8000, 8200) as Record<string, number>[];

function clientAs<S extends DescService>(service: S, token?: string) {
  return connectClient(t.baseUrl, service, token);
}

/** 200 hours of hour.csv as CSV; row 7 (1-based) gets an impossible hour. */
async function writeInput(path: string): Promise<void> {
  const lines = [RAW_FIELD_NAMES.join(",")];
  records.forEach((r, i) => {
    lines.push(RAW_FIELD_NAMES.map((f) => (i === 6 && f === "hr" ? 31 : r[f])).join(","));
  });
  await writeFile(path, `${lines.join("\n")}\n`);
}

async function waitForJob(jobId: string) {
  const trainer = clientAs(TrainService, t.tokens.trainer);
  for (;;) {
    const { job } = await trainer.getJob({ jobId });
    if (job && [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  t = await startTestServer();
  await mkdir(t.config.scoringDir, { recursive: true });
  await writeInput(join(t.config.scoringDir, "hours.csv"));
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

describe("scoring jobs", () => {
  it("scores a server file into Parquet with the production model; the invalid row goes to the side file", async () => {
    const { job } = await clientAs(PredictService, t.tokens.trainer).startScoring({
      input: "hours.csv",
      output: "out/scored.parquet",
      reason: "test",
    });
    expect(job?.kind).toBe("score");
    const done = await waitForJob(job?.id as string);
    expect([done.state, done.error]).toEqual([JobState.SUCCEEDED, ""]);
    expect(done.scoring).toMatchObject({
      input: "hours.csv",
      output: "out/scored.parquet",
      invalidOutput: "out/scored.parquet.invalid.csv",
      rowsRead: 200n,
      rowsScored: 199n,
      rowsInvalid: 1n,
      modelVersion: "1",
    });

    // The same rows through PredictBatch: the job must give the same forecasts, in input order.
    const valid = records.filter((_, i) => i !== 6);
    const batch = await clientAs(PredictService).predictBatch({ rows: valid.map((r) => modelInput(r)) });
    const instance = await DuckDBInstance.create(":memory:");
    const connection = await instance.connect();
    const path = join(t.config.scoringDir, "out/scored.parquet");
    const rows = (await connection.runAndReadAll(`SELECT * FROM read_parquet('${path}')`)).getRowObjectsJS();
    connection.closeSync();
    instance.closeSync();
    expect(rows).toHaveLength(199);
    const predictions = rows.map((r) => Number(r.prediction));
    const worst = Math.max(...predictions.map((p, i) => Math.abs(p - (batch.predictions[i] as number))));
    expect(worst).toBeLessThan(1e-3);

    const invalid = await readFile(join(t.config.scoringDir, "out/scored.parquet.invalid.csv"), "utf8");
    expect(invalid.trim().split("\n")).toEqual([
      "row,field,reason",
      '7,hr,"hr must be an integer in 0..23 (hour of the day), got 31"',
    ]);
  }, 120_000);

  it("refuses paths outside the scoring directory, missing inputs and unknown formats, naming the field", async () => {
    const predict = clientAs(PredictService, t.tokens.trainer);
    const cases = [
      [{ input: "../../etc/passwd.csv", output: "x.parquet" }, "input"],
      [{ input: "/etc/hosts.csv", output: "x.parquet" }, "input"],
      [{ input: "nope.csv", output: "x.parquet" }, "input"],
      [{ input: "hours.csv", output: "x.json" }, "output"],
      [{ input: "hours.csv", output: "../x.parquet" }, "output"],
      [{ input: "hours.csv", output: "" }, "output"],
    ] as const;
    for (const [request, field] of cases) {
      const error = await predict.startScoring(request).catch((e: unknown) => ConnectError.from(e));
      expect(error, JSON.stringify(request)).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage).toContain(field);
    }
  });

  it("refuses a symlink planted in the scoring directory that leads outside it, for every path field", async () => {
    const outside = await mkdtemp(join(tmpdir(), "bikeshare-outside-"));
    try {
      await writeInput(join(outside, "secret.csv"));
      await symlink(join(outside, "secret.csv"), join(t.config.scoringDir, "planted.csv"));
      await symlink(outside, join(t.config.scoringDir, "linked"));
      const predict = clientAs(PredictService, t.tokens.trainer);
      const cases = [
        [{ input: "planted.csv", output: "x.parquet" }, "input"],
        [{ input: "linked/secret.csv", output: "x.parquet" }, "input"],
        [{ input: "hours.csv", output: "linked/out.parquet" }, "output"],
        // Folders the job would create under the link: still outside.
        [{ input: "hours.csv", output: "linked/new/deeper/out.parquet" }, "output"],
        [{ input: "hours.csv", output: "x.parquet", invalidOutput: "linked/bad.csv" }, "invalid_output"],
      ] as const;
      for (const [request, field] of cases) {
        const error = await predict.startScoring(request).catch((e: unknown) => ConnectError.from(e));
        expect(error, JSON.stringify(request)).toBeInstanceOf(ConnectError);
        expect((error as ConnectError).code, JSON.stringify(request)).toBe(Code.InvalidArgument);
        expect((error as ConnectError).rawMessage).toContain(
          `${field} must be a path inside the scoring directory`,
        );
        expect((error as ConnectError).rawMessage).toContain("symbolic link");
      }
      // Nothing was written outside.
      expect((await readdir(outside)).sort()).toEqual(["secret.csv"]);
    } finally {
      await rm(join(t.config.scoringDir, "planted.csv"), { force: true });
      await rm(join(t.config.scoringDir, "linked"), { force: true });
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("checks the paths again when the job runs: a link planted while it waited in the queue fails it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bikeshare-scoring-queue-"));
    const db = await Database.open(join(dir, "jobs.duckdb"));
    try {
      const scoringDir = join(dir, "scoring");
      const outside = join(dir, "outside");
      await mkdir(join(scoringDir, "out"), { recursive: true });
      await mkdir(outside);
      await writeInput(join(scoringDir, "hours.csv"));
      const jobs = await JobStore.open(db);
      // Accepted while out/ was a real folder; then out/ becomes a link to a folder outside.
      const { job } = await jobs.add(
        "score",
        { input: "hours.csv", output: "out/scored.parquet", invalidOutput: "out/bad.csv", reason: "test" },
        "test",
      );
      await rm(join(scoringDir, "out"), { recursive: true });
      await symlink(outside, join(scoringDir, "out"));
      await runScoringJob(
        {
          registry: await Registry.open(db, join(dir, "models")),
          jobs,
          events: new JobEvents(),
          log: createLogger({}, "error", () => {}),
          executor: inlineExecutor,
          modelName: "bike-demand",
          scoringDir,
        },
        job.id,
        new AbortController().signal,
      );
      const done = await jobs.get(job.id);
      expect([done?.state, done?.error]).toEqual([
        "failed",
        "output must be a path inside the scoring directory, got out/scored.parquet (a symbolic link leads out of it)",
      ]);
      expect(await readdir(outside)).toEqual([]);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("accepts names that merely start with .. and links that stay inside the scoring directory", async () => {
    await mkdir(join(t.config.scoringDir, "..data"), { recursive: true });
    await writeInput(join(t.config.scoringDir, "..data", "x.csv"));
    await symlink("..data/x.csv", join(t.config.scoringDir, "inside-link.csv"));
    try {
      const predict = clientAs(PredictService, t.tokens.trainer);
      for (const [input, output] of [
        ["..data/x.csv", "..parquet"],
        ["inside-link.csv", "..data/..out.arrow"],
      ] as const) {
        const { job } = await predict.startScoring({ input, output, reason: "test: dot-dot names" });
        const done = await waitForJob(job?.id as string);
        expect([input, done.state, done.error]).toEqual([input, JobState.SUCCEEDED, ""]);
        expect(done.scoring?.rowsScored).toBe(199n);
        expect((await stat(join(t.config.scoringDir, output))).size).toBeGreaterThan(0);
      }
    } finally {
      await rm(join(t.config.scoringDir, "inside-link.csv"), { force: true });
    }
  });

  it("needs a trainer token", async () => {
    const error = await clientAs(PredictService, t.tokens.reader)
      .startScoring({ input: "hours.csv", output: "x.parquet" })
      .catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).code).toBe(Code.PermissionDenied);
  });
});
