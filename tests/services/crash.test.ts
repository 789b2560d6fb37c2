import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
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
/** The running child's log lines (JSON, one a line) and who waits for which. */
let logLines: string[] = [];
let logWaiters: { match: (entry: Record<string, unknown>) => boolean; resolve: () => void }[] = [];

function onLogLine(line: string): void {
  logLines.push(line);
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return; // a line that is not a log entry (the CLI's banner goes to stderr, but be tolerant)
  }
  for (const w of logWaiters.filter((w) => w.match(entry))) {
    logWaiters.splice(logWaiters.indexOf(w), 1);
    w.resolve();
  }
}

/** Resolves when the running child logs an entry `match` accepts; fails if it exits first or after 60 s. */
function waitForLog(what: string, match: (entry: Record<string, unknown>) => boolean): Promise<void> {
  const c = child;
  if (!c) throw new Error(`no server running to wait for "${what}"`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server never logged ${what} within 60 s`)), 60_000);
    const exited = () => reject(new Error(`the server exited before logging ${what}`));
    c.once("exit", exited);
    logWaiters.push({
      match,
      resolve: () => {
        clearTimeout(timer);
        c.off("exit", exited);
        resolve();
      },
    });
  });
}

/** The real CLI, as its own process, on the test's database and artifacts. */
async function startChild(): Promise<void> {
  if (child && running(child)) throw new Error("a server is already running");
  logLines = [];
  logWaiters = [];
  child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "cli/bikeshare.ts"), "serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      BIKESHARE_DB: config.dbPath,
      BIKESHARE_MODELS_DIR: config.modelsDir,
      BIKESHARE_TOKENS_FILE: config.tokensPath,
      BIKESHARE_ADMIN_TOKEN_FILE: config.adminTokenPath,
      BIKESHARE_TRAIN_THREADS: "2",
      LOG_LEVEL: "info",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", onLogLine);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (!running(child)) throw new Error(`server exited with ${child.exitCode ?? child.signalCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // fetch reports a refused connection as a TypeError
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server not ready within 60 s");
}

/** Until it exited by itself or by a signal (a killed child's exitCode stays null). */
const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

async function kill(): Promise<void> {
  const c = child;
  if (!c || !running(c)) return;
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
    expect(paths).toEqual([
      "calibration.json",
      "metadata.json",
      "model.json",
      "model.onnx",
      "reference.json",
    ]);
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

async function productionVersion(): Promise<string> {
  const { version } = await clients(tokens.reader).registry.getModelVersion({
    modelName: "bike-demand",
    versionOrAlias: "production",
  });
  if (!version) throw new Error("no production version");
  return version.version;
}

/** The production version and another registered version to move it to. */
async function moveTargets(): Promise<{ current: string; target: string }> {
  const current = await productionVersion();
  const { versions } = await clients(tokens.reader).registry.listModelVersions({ modelName: "bike-demand" });
  const target = versions.find((v) => v.version !== current)?.version;
  if (!target) throw new Error(`only version ${current} is registered: the test needs two`);
  return { current, target };
}

/** After a restart: the registry is consistent, production is `expected`, and the server serves it. */
async function assertServes(expected: string): Promise<void> {
  await assertConsistent();
  expect(await productionVersion()).toBe(expected);
  expect((await clients(tokens.reader).predict.predict({ conditions })).modelVersion).toBe(expected);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-crash-"));
  config = await testConfig(dir);
  tokens = await writeTokens(config);
  // Two versions, so that each test can move the alias without training one itself.
  await seedModels(config, 2);
  port = await freePort();
});
afterEach(async () => {
  await kill();
});
afterAll(async () => {
  await kill();
  await rm(dir, { recursive: true, force: true });
});

describe("crash safety of the server process", () => {
  it("SIGKILL during training: after restart the old production still serves and the job runs again, registering exactly one version", async () => {
    await startChild();
    const production = await productionVersion();
    const { train } = clients(tokens.trainer);
    const { job } = await train.startTraining({
      families: [ModelFamily.GBTREE],
      reason: "test: killed mid-training",
    });
    const jobId = job?.id as string;
    let round = 0;
    for await (const e of train.watchJob({ jobId })) {
      round = Math.max(round, e.round);
      if (round >= 20) break;
    }
    expect(round, "the job reached boosting round 20 before the kill").toBeGreaterThanOrEqual(20);
    await kill();

    await startChild();
    expect((await clients(tokens.reader).predict.predict({ conditions })).modelVersion).toBe(production);
    for await (const _ of train.watchJob({ jobId })) {
      // follow the resumed job to its end
    }
    const { job: done } = await train.getJob({ jobId });
    expect([done?.state, done?.error]).toEqual([JobState.SUCCEEDED, ""]);
    const { registry } = clients(tokens.reader);
    const { runs } = await registry.searchRuns({
      filter: `tags.job_id = '${jobId}' and tags.role = 'final'`,
    });
    expect(runs).toHaveLength(1);
    await assertConsistent();
  });

  it("SIGKILL while a SetAlias body is still arriving: nothing moves", async () => {
    await startChild();
    const { current, target } = await moveTargets();
    const body = JSON.stringify({
      modelName: "bike-demand",
      alias: "production",
      version: target,
      reason: "test: killed mid-request",
      force: true,
    });
    const socket = net.connect(port, "127.0.0.1");
    // The kill resets this connection; that is the one error expected of it.
    const socketErrors: string[] = [];
    socket.on("error", (error: NodeJS.ErrnoException) => socketErrors.push(error.code ?? error.message));
    await once(socket, "connect");
    const head =
      "POST /bikeshare.v1.RegistryService/SetAlias HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
      `Authorization: Bearer ${tokens.admin}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    await new Promise<void>((resolve, reject) =>
      socket.write(head + body.slice(0, body.length >> 1), (error) => (error ? reject(error) : resolve())),
    );
    await kill();
    socket.destroy();
    expect(socketErrors.filter((code) => code !== "ECONNRESET")).toEqual([]);
    await startChild();
    await assertServes(current);
  });

  it("SIGKILL once the server serves the new version, before or after its reply: the move is kept", async () => {
    await startChild();
    const { target } = await moveTargets();
    const served = waitForLog(`"serving model version" ${target}`, (e) => {
      return e.msg === "serving model version" && e.version === target;
    });
    const move = clients(tokens.admin).registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: target,
      reason: "test: killed after the swap",
      force: true,
    });
    // The reply races the kill: either is fine, anything else is a failure of the move itself.
    const outcome = move.then(
      (res) => res.change?.toVersion,
      (error: unknown) => ConnectError.from(error),
    );
    await served;
    await kill();
    const settled = await outcome;
    if (settled instanceof ConnectError) expect(settled.code, settled.message).toBe(Code.Unavailable);
    else expect(settled).toBe(target);
    await startChild();
    await assertServes(target);
  });

  it("SIGKILL right after SetAlias answered: the acknowledged move is kept", async () => {
    await startChild();
    const { target } = await moveTargets();
    const { change } = await clients(tokens.admin).registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: target,
      reason: "test: killed after the reply",
      force: true,
    });
    expect(change?.toVersion).toBe(target);
    await kill();
    await startChild();
    await assertServes(target);
  });
});
