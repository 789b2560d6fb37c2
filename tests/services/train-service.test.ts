import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService, RunStatus } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService, type WatchJobResponse } from "../../gen/bikeshare/v1/train_pb.js";
import { BACKENDS, testPostgres } from "../helpers/backends.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

const conditions = modelInput(readHourCsvRecords()[4000] as Record<string, number>);

/** TrainService and the job store behind it, on the embedded file and on PostgreSQL. */
describe.each(BACKENDS)("TrainService on $name", (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(
      backend.name === "postgres" ? { databaseUrl: await (await testPostgres()).createDatabase() } : {},
    );
  });
  afterAll(async () => {
    await t?.stop();
  });

  function clientAs<S extends DescService>(service: S, token?: string) {
    return connectClient(t.baseUrl, service, token);
  }

  describe("access control", () => {
    it("answers unauthenticated without a token and permission_denied for a too-weak role", async () => {
      const anonymous = await clientAs(TrainService)
        .startTraining({ reason: "x" })
        .catch((e) => e);
      expect(anonymous).toBeInstanceOf(ConnectError);
      expect(anonymous.code).toBe(Code.Unauthenticated);
      const reader = await clientAs(TrainService, t.tokens.reader)
        .startTraining({ reason: "x" })
        .catch((e) => e);
      expect(reader.code).toBe(Code.PermissionDenied);
      expect(reader.message).toContain("test-reader has role reader");
      const trainerMovesAlias = await clientAs(RegistryService, t.tokens.trainer)
        .setAlias({ modelName: "bike-demand", alias: "production", version: "1", reason: "x" })
        .catch((e) => e);
      expect(trainerMovesAlias.code).toBe(Code.PermissionDenied);
      const forged = await clientAs(TrainService, "not-a-real-token")
        .listJobs({})
        .catch((e) => e);
      expect(forged.code).toBe(Code.Unauthenticated);
    });

    it("lets a reader read, and keeps Predict open", async () => {
      const { jobs } = await clientAs(TrainService, t.tokens.reader).listJobs({});
      // The job that registered the seeded version, as the server stored it.
      expect(jobs.find((j) => j.reason === "test seed 1")).toMatchObject({
        state: JobState.SUCCEEDED,
        kind: "train",
        modelVersion: "1",
        requestedBy: "test-seed",
      });
      const { version } = await clientAs(RegistryService, t.tokens.reader).getModelVersion({
        modelName: "bike-demand",
        versionOrAlias: "production",
      });
      const res = await clientAs(PredictService).predict({ conditions });
      expect(res.modelVersion).toBe(version?.version);
      expect(res.prediction).toBeGreaterThan(0);
    });

    it("never writes a token into a log line or an error", async () => {
      const error = await clientAs(TrainService, "secret-looking-token-123")
        .listJobs({})
        .catch((e) => e);
      expect(error.message).not.toContain("secret-looking-token-123");
      const logs = t.logs.join("\n");
      for (const token of [...Object.values(t.tokens), "secret-looking-token-123"])
        expect(logs).not.toContain(token);
    });
  });

  describe("training jobs", () => {
    it("validates the request, naming the field", async () => {
      const trainer = clientAs(TrainService, t.tokens.trainer);
      const tooMany = await trainer.startTraining({ searchTrials: 5000 }).catch((e) => e);
      expect(tooMany.code).toBe(Code.InvalidArgument);
      expect(tooMany.message).toContain("search_trials must be at most 200");
      const backwards = await trainer
        .startTraining({
          dataFrom: { seconds: BigInt(Date.UTC(2012, 5, 1) / 1000), nanos: 0 },
          dataUntil: { seconds: BigInt(Date.UTC(2012, 0, 1) / 1000), nanos: 0 },
        })
        .catch((e) => e);
      expect(backwards.code).toBe(Code.InvalidArgument);
      expect(backwards.message).toContain("data_until must be after data_from");
      const missing = await trainer.getJob({ jobId: "" }).catch((e) => e);
      expect(missing.code).toBe(Code.InvalidArgument);
      const unknown = await trainer.getJob({ jobId: "no-such-job" }).catch((e) => e);
      expect(unknown.code).toBe(Code.NotFound);
    });

    it("streams stages and per-round metrics, registers a version as staging, and promotes only through the gate", async () => {
      const trainer = clientAs(TrainService, t.tokens.trainer);
      const registry = clientAs(RegistryService, t.tokens.reader);
      const next = String(
        (await registry.listModelVersions({ modelName: "bike-demand" })).versions.length + 1,
      );
      const champion = (
        await registry.getModelVersion({ modelName: "bike-demand", versionOrAlias: "production" })
      ).version?.version;
      const request = {
        families: [ModelFamily.GBTREE],
        searchTrials: 0,
        reason: "test: challenger",
        idempotencyKey: "challenger-1",
      };
      const { job } = await trainer.startTraining(request);
      expect(job?.state).toBe(JobState.QUEUED);
      // A retry is the same request under the same key (another request under it is refused).
      const again = await trainer.startTraining(request);
      expect(again.job?.id).toBe(job?.id);

      const events: WatchJobResponse[] = [];
      for await (const e of trainer.watchJob({ jobId: job?.id as string })) events.push(e);
      const rounds = events.filter((e) => e.candidate !== "");
      expect(rounds.length).toBeGreaterThan(50);
      expect(
        rounds.every(
          (e, i) =>
            i === 0 ||
            e.round > (rounds[i - 1] as WatchJobResponse).round ||
            e.candidate !== rounds[i - 1]?.candidate,
        ),
      ).toBe(true);
      expect(rounds.every((e) => e.trainMetric > 0 && e.validMetric > 0)).toBe(true);
      const stages = new Set(events.map((e) => e.stage));
      for (const stage of ["load", "train", "refit", "register", "promote"]) expect(stages).toContain(stage);
      expect(events.at(-1)?.state).toBe(JobState.SUCCEEDED);

      const { job: done } = await trainer.getJob({ jobId: job?.id as string });
      expect(done?.modelVersion).toBe(next);
      const { version } = await registry.getModelVersion({ modelName: "bike-demand", versionOrAlias: next });
      expect(version?.aliases).toContain("staging");
      const { run } = await registry.getRun({ runId: version?.runId as string });
      expect(run?.tags.job_id).toBe(job?.id);
      // search_trials 0 (not unset) asks for the family baseline alone: one candidate run.
      const { runs: candidates } = await registry.searchRuns({
        filter: `tags.job_id = '${job?.id}' and tags.role = 'candidate'`,
      });
      expect(candidates.map((r) => [r.name, r.status])).toEqual([["gbtree#0", RunStatus.FINISHED]]);
      expect(run?.artifacts.map((a) => a.path).sort()).toEqual([
        "calibration.json",
        "metadata.json",
        "model.json",
        "model.onnx",
        "reference.json",
      ]);
      // Same data, same parameters: the challenger cannot beat the champion, so production stays.
      const beats =
        (run?.metrics["gate.challenger_rmse"] as number) < (run?.metrics["gate.champion_rmse"] as number);
      expect(done?.promoted).toBe(beats);
      const { version: production } = await registry.getModelVersion({
        modelName: "bike-demand",
        versionOrAlias: "production",
      });
      expect(production?.version).toBe(beats ? next : champion);

      // Forcing needs an admin and a reason, is audited, and the server follows the alias.
      const admin = clientAs(RegistryService, t.tokens.admin);
      const noReason = await admin
        .setAlias({ modelName: "bike-demand", alias: "production", version: next, reason: "", force: true })
        .catch((e) => e);
      expect(noReason.code).toBe(Code.InvalidArgument);
      await admin.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: next,
        reason: "test: forced",
        force: true,
      });
      const { changes } = await registry.listAliasHistory({ modelName: "bike-demand", alias: "production" });
      expect(changes.at(-1)).toMatchObject({ toVersion: next, actor: "test-admin", reason: "test: forced" });
      await expect
        .poll(async () => (await clientAs(PredictService).predict({ conditions })).modelVersion)
        .toBe(next);
    });

    it("cancels a running job between rounds and registers nothing", async () => {
      const trainer = clientAs(TrainService, t.tokens.trainer);
      const registry = clientAs(RegistryService, t.tokens.reader);
      const before = (await registry.listModelVersions({ modelName: "bike-demand" })).versions.length;
      const { job } = await trainer.startTraining({
        families: [ModelFamily.GBTREE],
        paramOverrides: { eta: "0.001" },
        reason: "test: to be cancelled",
      });
      const jobId = job?.id as string;
      let cancelled = false;
      const states: JobState[] = [];
      for await (const e of trainer.watchJob({ jobId })) {
        states.push(e.state);
        if (!cancelled && e.round >= 5) {
          cancelled = true;
          await trainer.cancelJob({ jobId, reason: "test" });
        }
      }
      expect(states.at(-1)).toBe(JobState.CANCELLED);
      const { job: done } = await trainer.getJob({ jobId });
      expect(done?.state).toBe(JobState.CANCELLED);
      expect((await registry.listModelVersions({ modelName: "bike-demand" })).versions.length).toBe(before);
      const { runs } = await registry.searchRuns({ filter: `tags.job_id = '${jobId}'` });
      expect(runs.length).toBeGreaterThan(0);
      expect(runs.every((r) => r.tags.role === "candidate")).toBe(true);
      expect(runs.some((r) => r.status === RunStatus.CANCELLED)).toBe(true);
      expect(runs.some((r) => r.status === RunStatus.RUNNING)).toBe(false);
      const again = await trainer.cancelJob({ jobId }).catch((e) => e);
      expect(again.code).toBe(Code.FailedPrecondition);
    });

    it("lists jobs newest first and filters by state", async () => {
      const trainer = clientAs(TrainService, t.tokens.trainer);
      // A job of this test's own, cancelled once it runs, before it could register anything. (Cancelling
      // it while still queued races the queue starting it: the job can end up running after all.)
      const { job } = await trainer.startTraining({
        families: [ModelFamily.GBTREE],
        paramOverrides: { eta: "0.001" },
        reason: "test: listed",
      });
      const jobId = job?.id as string;
      let asked = false;
      for await (const e of trainer.watchJob({ jobId })) {
        if (!asked && e.round >= 1) {
          asked = true;
          await trainer.cancelJob({ jobId, reason: "test: listed" });
        }
      }
      const { job: stopped } = await trainer.getJob({ jobId });
      expect([stopped?.state, stopped?.modelVersion]).toEqual([JobState.CANCELLED, ""]);
      const reader = clientAs(TrainService, t.tokens.reader);
      const { jobs } = await reader.listJobs({});
      const created = jobs.map((j) => Number(j.createdAt?.seconds));
      expect([...created].sort((a, b) => b - a)).toEqual(created);
      const ids = jobs.map((j) => j.id);
      const seed = jobs.find((j) => j.reason === "test seed 1")?.id as string;
      expect(ids).toContain(seed);
      expect(ids.indexOf(jobId)).toBeLessThan(ids.indexOf(seed));
      const { jobs: cancelled } = await reader.listJobs({ state: JobState.CANCELLED });
      expect(cancelled.map((j) => j.id)).toContain(jobId);
      expect(cancelled.every((j) => j.state === JobState.CANCELLED)).toBe(true);
      const { jobs: succeeded } = await reader.listJobs({ state: JobState.SUCCEEDED });
      expect(succeeded.map((j) => j.id)).toContain(seed);
      expect(succeeded.map((j) => j.id)).not.toContain(jobId);
      const page = await reader.listJobs({ pageSize: 1 });
      expect(page.jobs.map((j) => j.id)).toEqual([ids[0]]);
      const second = await reader.listJobs({ pageSize: 1, pageToken: page.nextPageToken });
      expect(second.jobs.map((j) => j.id)).toEqual([ids[1]]);
    });
  });
});
