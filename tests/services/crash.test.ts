import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import { modelInput, readHourCsvRecords } from "../helpers/hour-csv.js";
import { freePort } from "../helpers/ports.js";
import { seedModels, type Tokens, testConfig, writeTokens } from "../helpers/server.js";

const ROOT = join(import.meta.dirname, "../..");
const conditions = modelInput(readHourCsvRecords()[9000] as Record<string, number>);

let dir: string;
let config: ServerConfig;
let tokens: Tokens;
let port: number;
let child: ChildProcess | undefined;

/** The real CLI, as its own process, on the test's database and artifacts. */
async function startChild(): Promise<void> {
  child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "cli/bikeshare.ts"), "serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      BIKESHARE_DB: config.dbPath,
      BIKESHARE_MODELS_DIR: config.modelsDir,
      BIKESHARE_TOKENS_FILE: config.tokensPath,
      BIKESHARE_TRAIN_THREADS: "2",
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server not ready within 60 s");
}

async function kill(): Promise<void> {
  const c = child;
  if (!c || c.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    c.once("exit", () => resolve());
    c.kill("SIGKILL");
  });
}

function clients(token: string) {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({
    baseUrl: `http://127.0.0.1:${port}`,
    httpVersion: "1.1",
    interceptors: [auth],
  });
  return {
    train: createClient(TrainService, transport),
    registry: createClient(RegistryService, transport),
    predict: createClient(PredictService, transport),
  };
}

/** Every version has all of its artifacts with matching sha256, and each alias points at a version its audit log agrees with. */
async function assertConsistent(): Promise<void> {
  const { registry } = clients(tokens.reader);
  const { versions } = await registry.listModelVersions({ modelName: "bike-demand" });
  expect(versions.map((v) => Number(v.version))).toEqual(versions.map((_, i) => i + 1));
  for (const v of versions) {
    const paths = v.artifacts.map((a) => a.path).sort();
    expect(paths).toEqual(["metadata.json", "model.json", "model.onnx", "reference.json"]);
    for (const artifact of v.artifacts) {
      const hash = createHash("sha256");
      for await (const chunk of registry.downloadArtifact({ runId: v.runId, path: artifact.path }))
        hash.update(chunk.chunk);
      expect(hash.digest("hex")).toBe(artifact.sha256);
    }
  }
  const { changes } = await registry.listAliasHistory({ modelName: "bike-demand" });
  const { model } = await registry.getRegisteredModel({ name: "bike-demand" });
  for (const [alias, version] of Object.entries(model?.aliases ?? {})) {
    expect(versions.some((v) => v.version === version)).toBe(true);
    expect(changes.filter((c) => c.alias === alias).at(-1)?.toVersion).toBe(version);
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-crash-"));
  config = await testConfig(dir);
  tokens = await writeTokens(config);
  await seedModels(config, 1);
  port = await freePort();
});
afterAll(async () => {
  await kill();
  await rm(dir, { recursive: true, force: true });
});

describe("crash safety of the server process", () => {
  it("SIGKILL during training: after restart the old production still serves and the job runs again, registering exactly one version", async () => {
    await startChild();
    const { train } = clients(tokens.trainer);
    const { job } = await train.startTraining({
      families: [ModelFamily.GBTREE],
      reason: "test: killed mid-training",
    });
    const jobId = job?.id as string;
    for await (const e of train.watchJob({ jobId })) {
      if (e.round >= 20) break;
    }
    await kill();

    await startChild();
    const { predict } = clients(tokens.reader);
    expect((await predict.predict({ conditions })).modelVersion).toBe("1");
    for await (const _ of train.watchJob({ jobId })) {
      // follow the resumed job to its end
    }
    const { job: done } = await train.getJob({ jobId });
    expect(done?.state).toBe(JobState.SUCCEEDED);
    const { registry } = clients(tokens.reader);
    const { runs } = await registry.searchRuns({
      filter: `tags.job_id = '${jobId}' and tags.role = 'final'`,
    });
    expect(runs).toHaveLength(1);
    await assertConsistent();
  });

  it("SIGKILL during alias moves: the registry stays consistent and a version still serves", async () => {
    const { registry } = clients(tokens.admin);
    for (let attempt = 0; attempt < 3; attempt++) {
      const { versions } = await registry.listModelVersions({ modelName: "bike-demand" });
      const current = (
        await registry.getModelVersion({ modelName: "bike-demand", versionOrAlias: "production" })
      ).version?.version;
      const target = versions.find((v) => v.version !== current)?.version as string;
      const move = registry
        .setAlias({
          modelName: "bike-demand",
          alias: "production",
          version: target,
          reason: `test: killed ${attempt}`,
          force: true,
        })
        .catch(() => undefined);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 15)));
      await kill();
      await move;
      await startChild();
      await assertConsistent();
      const production = (
        await registry.getModelVersion({ modelName: "bike-demand", versionOrAlias: "production" })
      ).version?.version;
      expect([current, target]).toContain(production);
      expect((await clients(tokens.reader).predict.predict({ conditions })).modelVersion).toBe(production);
    }
  });
});
