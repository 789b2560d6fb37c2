import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../gen/bikeshare/v1/common_pb.js";
import {
  RegistryService,
  RunStatus,
  type UploadArtifactRequestSchema,
} from "../../gen/bikeshare/v1/registry_pb.js";
import { principalKey } from "../../services/auth/principal.js";
import { errorInterceptor } from "../../services/errors.js";
import { Registry } from "../../services/registry/registry.js";
import { createRegistryService } from "../../services/registry/registry-service.js";
import { Database } from "../../services/storage/database.js";

let dir: string;
let db: Database;
let server: http.Server;
let client: Client<typeof RegistryService>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-registry-service-"));
  db = await Database.open(join(dir, "bikeshare.duckdb"));
  const registry = await Registry.open(db, join(dir, "artifacts"));
  server = http.createServer(
    connectNodeAdapter({
      routes: (r) => r.service(RegistryService, createRegistryService(registry)),
      interceptors: [errorInterceptor()],
      // Stands in for the auth interceptor: the caller named in x-user becomes the principal.
      contextValues: (req) => {
        const user = req.headers["x-user"];
        const values = createContextValues();
        if (typeof user === "string") values.set(principalKey, { name: user, role: "admin" });
        return values;
      },
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  client = createClient(
    RegistryService,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }),
  );
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

async function failure(
  promise: Promise<unknown>,
  code: Code,
  message?: string | RegExp,
): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  const ce = error as ConnectError;
  expect(Code[ce.code]).toBe(Code[code]);
  if (message !== undefined) expect(ce.rawMessage).toMatch(message);
  return ce;
}

const as = (user: string) => ({ headers: { "x-user": user } });
const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

type UploadMessage = MessageInitShape<typeof UploadArtifactRequestSchema>;

async function* uploadStream(
  first: UploadMessage,
  bytes: Uint8Array,
  chunk: number,
): AsyncIterable<UploadMessage> {
  for (let i = 0; i < bytes.length; i += chunk) {
    yield { ...(i === 0 ? first : {}), chunk: bytes.subarray(i, i + chunk) };
  }
}

/** A finished run with a model artifact, made through the service. */
async function finishedRun(tags: Record<string, string> = {}, metrics: Record<string, number> = {}) {
  const { run } = await client.createRun({ experiment: "svc", tags });
  const runId = run?.id as string;
  await client.logRunData({
    runId,
    metrics: Object.entries(metrics).map(([key, value]) => ({ key, value })),
  });
  await client.uploadArtifact(uploadStream({ runId, path: "model.onnx" }, randomBytes(1000), 1000));
  await client.endRun({ runId, status: RunStatus.FINISHED });
  return runId;
}

describe("RegistryService over Connect (HTTP/1.1)", () => {
  it("CreateExperiment, GetExperiment, ListExperiments", async () => {
    const { experiment } = await client.createExperiment({ name: "demand", tags: { team: "ml" } });
    expect(experiment).toMatchObject({ name: "demand", tags: { team: "ml" } });
    expect(experiment?.createdAt?.seconds).toBeGreaterThan(0n);
    await failure(
      client.createExperiment({ name: "demand" }),
      Code.AlreadyExists,
      /experiment "demand" already exists/,
    );
    const empty = await failure(
      client.createExperiment({ name: "" }),
      Code.InvalidArgument,
      "name is required",
    );
    expect(empty.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("name");
    expect((await client.getExperiment({ experiment: experiment?.id as string })).experiment?.name).toBe(
      "demand",
    );
    expect((await client.getExperiment({ experiment: "demand" })).experiment?.id).toBe(experiment?.id);
    await failure(client.getExperiment({ experiment: "nope" }), Code.NotFound, /experiment "nope"/);
    await failure(client.getExperiment({}), Code.InvalidArgument, "experiment is required");
    expect((await client.listExperiments({})).experiments.map((e) => e.name)).toContain("demand");
  });

  it("CreateRun, LogRunData, GetRun, EndRun, SearchRuns", async () => {
    await failure(client.createRun({}), Code.InvalidArgument, "experiment is required");
    const { run } = await client.createRun({
      experiment: "demand",
      name: "xgb",
      tags: { family: "gbtree" },
      sourceCommit: "abc",
      dataFingerprint: "fp",
    });
    const runId = run?.id as string;
    expect(run).toMatchObject({
      name: "xgb",
      status: RunStatus.RUNNING,
      sourceCommit: "abc",
      dataFingerprint: "fp",
    });
    await client.logRunData({
      runId,
      params: { max_depth: "6" },
      metrics: [
        { key: "valid_rmse", value: 80, step: 1n },
        {
          key: "valid_rmse",
          value: 62.5,
          step: 2n,
          time: timestampFromDate(new Date("2024-01-01T00:00:00Z")),
        },
      ],
      tags: { stage: "tuning" },
    });
    const got = (await client.getRun({ runId })).run;
    expect(got).toMatchObject({
      params: { max_depth: "6" },
      metrics: { valid_rmse: 62.5 },
      tags: { family: "gbtree", stage: "tuning" },
    });
    const changed = await failure(
      client.logRunData({ runId, params: { max_depth: "7" } }),
      Code.InvalidArgument,
      /param max_depth is already "6" on run .*params cannot change/,
    );
    expect(changed.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("params.max_depth");
    await failure(client.logRunData({ runId: "" }), Code.InvalidArgument, "run_id is required");
    await failure(client.logRunData({ runId: "nope" }), Code.NotFound, /run nope does not exist/);
    await failure(client.endRun({ runId }), Code.InvalidArgument, /status must be/);
    await failure(
      client.endRun({ runId, status: RunStatus.RUNNING }),
      Code.InvalidArgument,
      /status must be/,
    );
    const ended = (await client.endRun({ runId, status: RunStatus.FINISHED })).run;
    expect(ended?.status).toBe(RunStatus.FINISHED);
    expect(ended?.endTime).toBeDefined();
    await failure(client.logRunData({ runId, tags: { a: "b" } }), Code.FailedPrecondition, /is finished/);
    await failure(client.getRun({ runId: "nope" }), Code.NotFound, /run nope does not exist/);

    const found = await client.searchRuns({
      experiments: ["demand"],
      filter: "metrics.valid_rmse < 70 and params.max_depth = '6' and tags.family = 'gbtree'",
      orderBy: ["metrics.valid_rmse ASC", "start_time DESC"],
      pageSize: 10,
    });
    expect(found.runs.map((r) => r.id)).toEqual([runId]);
    expect(found.nextPageToken).toBe("");
    expect((await client.searchRuns({ filter: "metrics.valid_rmse > 70" })).runs).toEqual([]);
    await failure(
      client.searchRuns({ filter: "metrics.valid_rmse lt 70" }),
      Code.InvalidArgument,
      'filter: expected a comparison operator at position 20, found "lt"',
    );
    await failure(
      client.searchRuns({ orderBy: Array.from({ length: 11 }, () => "metrics.valid_rmse") }),
      Code.InvalidArgument,
      "order_by: has 11 entries; the limit is 10",
    );
    await failure(
      client.searchRuns({ experiments: Array.from({ length: 101 }, () => "svc") }),
      Code.InvalidArgument,
      "experiment_ids names 101 experiments; the limit is 100",
    );
    await failure(
      client.logRunData({
        runId: found.runs[0]?.id ?? "",
        tags: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`t${i}`, "v"])),
      }),
      Code.InvalidArgument,
      "a batch can hold at most 100 tags, got 101",
    );
    await failure(
      client.createRun({ experiment: "svc", name: "bell\u0007" }),
      Code.InvalidArgument,
      /must not have control characters/,
    );
    await failure(client.searchRuns({ experiments: ["nope"] }), Code.NotFound);
  });

  it("UploadArtifact streams ~300 KB in; DownloadArtifact streams it back in ≤ 64 KiB chunks", async () => {
    const { run } = await client.createRun({ experiment: "svc" });
    const runId = run?.id as string;
    const bytes = randomBytes(300 * 1024 + 123);
    const { artifact } = await client.uploadArtifact(
      uploadStream({ runId, path: "models/model.onnx", contentType: "application/onnx" }, bytes, 50_000),
    );
    expect(artifact).toMatchObject({
      path: "models/model.onnx",
      sha256: sha(bytes),
      sizeBytes: BigInt(bytes.length),
      contentType: "application/onnx",
    });
    expect((await client.listArtifacts({ runId })).artifacts).toEqual([artifact]);

    const parts: Uint8Array[] = [];
    let messages = 0;
    for await (const res of client.downloadArtifact({ runId, path: "models/model.onnx" })) {
      if (messages === 0) expect(res.artifact).toEqual(artifact);
      else expect(res.artifact).toBeUndefined();
      expect(res.chunk.byteLength).toBeLessThanOrEqual(64 * 1024);
      parts.push(res.chunk);
      messages++;
    }
    const back = Buffer.concat(parts);
    expect(messages).toBe(Math.ceil(bytes.length / (64 * 1024)));
    expect(back.equals(bytes)).toBe(true);
    expect(sha(back)).toBe(artifact?.sha256);

    // An empty artifact still answers with its metadata.
    await client.uploadArtifact(
      (async function* () {
        yield { runId, path: "empty.txt" };
      })(),
    );
    const empty = [];
    for await (const res of client.downloadArtifact({ runId, path: "empty.txt" })) empty.push(res);
    expect(empty.length).toBe(1);
    expect(empty[0]?.artifact?.sizeBytes).toBe(0n);

    await failure(
      client.uploadArtifact(uploadStream({ path: "x" }, bytes.subarray(0, 10), 10)),
      Code.InvalidArgument,
      "run_id is required",
    );
    await failure(
      client.uploadArtifact(uploadStream({ runId }, bytes.subarray(0, 10), 10)),
      Code.InvalidArgument,
      "path is required",
    );
    await failure(
      client.uploadArtifact(uploadStream({ runId, path: "../escape" }, bytes.subarray(0, 10), 10)),
      Code.InvalidArgument,
      /must be relative/,
    );
    await failure(
      client.uploadArtifact(uploadStream({ runId: "nope", path: "a" }, bytes.subarray(0, 10), 10)),
      Code.NotFound,
    );
    await failure(
      client.uploadArtifact((async function* () {})()),
      Code.InvalidArgument,
      /run_id is required/,
    );
    // A content type is later a response header (the MLflow artifact proxy): CR LF in it split the answer.
    await failure(
      client.uploadArtifact(
        uploadStream(
          { runId, path: "a.txt", contentType: "text/plain\r\nSet-Cookie: x" },
          bytes.subarray(0, 10),
          10,
        ),
      ),
      Code.InvalidArgument,
      /content_type "text\/plain\\r\\nSet-Cookie: x" is not a MIME type/,
    );
    const typed = await client.uploadArtifact(
      uploadStream(
        { runId, path: "a.txt", contentType: 'text/plain; charset="utf-8"' },
        bytes.subarray(0, 10),
        10,
      ),
    );
    expect(typed.artifact?.contentType).toBe('text/plain; charset="utf-8"');
    await failure(client.listArtifacts({ runId: "nope" }), Code.NotFound);
    const download = async (path: string) => {
      for await (const _ of client.downloadArtifact({ runId, path })) {
        // drain
      }
    };
    await failure(download("missing.bin"), Code.NotFound, /has no artifact "missing.bin"/);
    await failure(download(""), Code.InvalidArgument, "path is required");
  });

  it("CreateRegisteredModel, GetRegisteredModel, ListRegisteredModels, CreateModelVersion, GetModelVersion, ListModelVersions", async () => {
    const { model } = await client.createRegisteredModel({ name: "svc-model", description: "d" });
    expect(model).toMatchObject({ name: "svc-model", description: "d", latestVersion: "" });
    await failure(client.createRegisteredModel({ name: "svc-model" }), Code.AlreadyExists);
    await failure(client.createRegisteredModel({ name: "" }), Code.InvalidArgument, "name is required");

    const { run } = await client.createRun({ experiment: "svc" });
    await failure(
      client.createModelVersion({ modelName: "svc-model", runId: run?.id as string }),
      Code.FailedPrecondition,
      /only a finished run/,
    );
    await failure(
      client.createModelVersion({ modelName: "svc-model" }),
      Code.InvalidArgument,
      "run_id is required",
    );
    await failure(client.createModelVersion({ modelName: "svc-model", runId: "nope" }), Code.NotFound);

    const runId = await finishedRun({}, { test_rmse: 55 });
    const { version } = await client.createModelVersion({
      modelName: "svc-model",
      runId,
      description: "first",
    });
    expect(version).toMatchObject({
      modelName: "svc-model",
      version: "1",
      runId,
      metrics: { test_rmse: 55 },
      description: "first",
    });
    expect(version?.artifacts.map((a) => a.path)).toEqual(["model.onnx"]);
    expect((await client.getModelVersion({ modelName: "svc-model", versionOrAlias: "1" })).version).toEqual(
      version,
    );
    await failure(
      client.getModelVersion({ modelName: "svc-model", versionOrAlias: "7" }),
      Code.NotFound,
      'model "svc-model" has no version 7',
    );
    await failure(
      client.getModelVersion({ modelName: "svc-model", versionOrAlias: "production" }),
      Code.NotFound,
      /no version with alias "production"/,
    );
    await failure(
      client.getModelVersion({ modelName: "nope", versionOrAlias: "1" }),
      Code.NotFound,
      'model "nope" does not exist',
    );
    await failure(
      client.getModelVersion({ modelName: "svc-model" }),
      Code.InvalidArgument,
      "version_or_alias is required",
    );
    expect(
      (await client.listModelVersions({ modelName: "svc-model" })).versions.map((v) => v.version),
    ).toEqual(["1"]);
    await failure(client.listModelVersions({ modelName: "nope" }), Code.NotFound);
    expect((await client.getRegisteredModel({ name: "svc-model" })).model?.latestVersion).toBe("1");
    await failure(client.getRegisteredModel({ name: "nope" }), Code.NotFound);
    expect((await client.listRegisteredModels({})).models.map((m) => m.name)).toContain("svc-model");
  });

  it("SetAlias (gated), DeleteAlias, TransitionStage, ListAliasHistory record the calling principal", async () => {
    const model = "gated";
    const v1 = (await client.createModelVersion({ modelName: model, runId: await finishedRun() })).version
      ?.version;
    const first = await client.setAlias(
      { modelName: model, alias: "production", version: "1", reason: "first" },
      as("alice"),
    );
    expect(first.change).toMatchObject({
      fromVersion: "",
      toVersion: "1",
      actor: "alice",
      forced: false,
      reason: "first",
    });
    expect(v1).toBe("1");

    const loser = await finishedRun(
      { "gate.champion_version": "1" },
      { "gate.challenger_rmse": 70, "gate.champion_rmse": 60 },
    );
    await client.createModelVersion({ modelName: model, runId: loser });
    await failure(
      client.setAlias({ modelName: model, alias: "production", version: "2", reason: "try" }, as("bob")),
      Code.FailedPrecondition,
      "version 2 does not beat production version 1 on the gate window (RMSE 70 vs 60); pass force with a reason to override",
    );
    await failure(
      client.setAlias({ modelName: model, alias: "production", version: "2", force: true }, as("bob")),
      Code.InvalidArgument,
      "reason is required",
    );
    await failure(
      client.setAlias({ modelName: model, alias: "production", reason: "x" }),
      Code.InvalidArgument,
      "version is required",
    );
    await failure(
      client.setAlias({ modelName: model, alias: "staging", version: "9", reason: "x" }),
      Code.NotFound,
      `model "${model}" has no version 9`,
    );
    const forced = await client.setAlias(
      { modelName: model, alias: "production", version: "2", reason: "incident rollback", force: true },
      as("bob"),
    );
    expect(forced.change).toMatchObject({ fromVersion: "1", toVersion: "2", actor: "bob", forced: true });

    const anonymous = await client.setAlias({
      modelName: model,
      alias: "canary",
      version: "1",
      reason: "try",
    });
    expect(anonymous.change?.actor).toBe("anonymous");
    const deleted = await client.deleteAlias(
      { modelName: model, alias: "canary", reason: "done" },
      as("carol"),
    );
    expect(deleted.change).toMatchObject({ fromVersion: "1", toVersion: "", actor: "carol" });
    await failure(client.deleteAlias({ modelName: model, alias: "canary", reason: "again" }), Code.NotFound);
    await failure(
      client.deleteAlias({ modelName: model, alias: "canary" }),
      Code.InvalidArgument,
      "reason is required",
    );

    const staged = await client.transitionStage(
      { modelName: model, version: "1", stage: "Staging", reason: "qa" },
      as("dave"),
    );
    expect(staged.version?.aliases).toEqual(["staging"]);
    const archived = await client.transitionStage(
      { modelName: model, version: "2", stage: "Archived", reason: "superseded" },
      as("dave"),
    );
    expect(archived.version?.aliases).toEqual([]);
    await failure(
      client.transitionStage({ modelName: model, version: "1", stage: "Gold", reason: "x" }),
      Code.InvalidArgument,
      /Staging, Production or Archived/,
    );
    await failure(
      client.transitionStage({ modelName: model, version: "1", reason: "x" }),
      Code.InvalidArgument,
      "stage is required",
    );
    // Archiving version 2 removed `production`, so the gate lets version 1 back in.
    const promoted = await client.transitionStage({
      modelName: model,
      version: "1",
      stage: "Production",
      reason: "x",
    });
    expect(promoted.version?.aliases).toEqual(["production", "staging"]);

    const history = (await client.listAliasHistory({ modelName: model })).changes;
    expect(history.map((c) => [c.alias, c.fromVersion, c.toVersion, c.actor, c.forced])).toEqual([
      ["production", "", "1", "alice", false],
      ["production", "1", "2", "bob", true],
      ["canary", "", "1", "anonymous", false],
      ["canary", "1", "", "carol", false],
      ["staging", "", "1", "dave", false],
      ["production", "2", "", "dave", false],
      ["production", "", "1", "anonymous", false],
    ]);
    expect((await client.listAliasHistory({ modelName: model, alias: "canary" })).changes.length).toBe(2);
    await failure(client.listAliasHistory({ modelName: "nope" }), Code.NotFound);
    await failure(client.listAliasHistory({}), Code.InvalidArgument, "model_name is required");
  });
});
