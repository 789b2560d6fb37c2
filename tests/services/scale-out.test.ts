import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import type { LoadSummary } from "../helpers/fixed-rate-load.js";
import { startHaproxy } from "../helpers/haproxy.js";
import { SUMMER_EVENING } from "../helpers/hour-csv.js";
import { startPostgres, type TestPostgres } from "../helpers/postgres.js";
import {
  freePort,
  type ServeProcess,
  seedTinyVersions,
  serveEnv,
  startServe,
} from "../helpers/serve-process.js";
import { connectClient, type Tokens, writeTokens } from "../helpers/server.js";

/**
 * The scale-out deployment of docs/deployment.md on loopback: one control process and two predict
 * replicas on a real PostgreSQL server, behind the shipped HAProxy configuration (ops/haproxy), under
 * a fixed-rate load from its own process. Each case checks what a client sees (failed requests,
 * versions answered) and what the shared prediction log holds (every acknowledged request id).
 */

const ROOT = join(import.meta.dirname, "../..");
const LOAD = join(ROOT, "tests/helpers/fixed-rate-load.ts");
const RATE = 300;

let dir: string;
let tokens: Tokens;
let postgres: TestPostgres;
let url: string;
let db: pg.Pool;
let control: ServeProcess;
const predicts: ServeProcess[] = [];
const predictPorts: number[] = [];
let haproxy: ChildProcess;
let lbUrl: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

const ready = (baseUrl: string) => async () => (await fetch(`${baseUrl}/readyz`)).status === 200;

function startPredict(slot: number): Promise<ServeProcess> {
  // The same port and files as the replica it replaces: its prediction-log spool is replayed at start.
  const port = predictPorts[slot] as number;
  return startServe(["--role", "predict"], serveEnv(join(dir, `predict-${slot}`), url, port, sharedFiles()));
}

/** Token hashes and artifacts are shared; each replica keeps its own spool under its own folder. */
function sharedFiles(): Record<string, string> {
  return {
    BIKESHARE_TOKENS_FILE: join(dir, "tokens.json"),
    BIKESHARE_MODELS_DIR: join(dir, "models"),
    // As in docker-compose.yml: HAProxy checks every second and takes a replica out after one failure.
    BIKESHARE_DRAIN_SECONDS: "2",
  };
}

/** Runs the load generator for `seconds` while `during` acts on the deployment. */
async function underLoad(
  seconds: number,
  during: (load: ChildProcess) => Promise<void>,
): Promise<LoadSummary & { snapshots: { inFlight: number; at: number }[] }> {
  const out = join(dir, `load-${Date.now()}.json`);
  const load = spawn(
    process.execPath,
    ["--import", "tsx", LOAD, `${lbUrl}/predict`, String(RATE), String(seconds), out],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const snapshots: { inFlight: number; at: number }[] = [];
  load.stdout?.on("data", (d: Buffer) => {
    for (const line of d.toString().split("\n").filter(Boolean)) snapshots.push(JSON.parse(line));
  });
  const exited = new Promise<number | null>((resolve) => load.on("exit", (code) => resolve(code)));
  await during(load);
  expect(await exited).toBe(0);
  return { ...(JSON.parse(await readFile(out, "utf8")) as LoadSummary), snapshots };
}

/** Waits until every acknowledged request is in the shared prediction log, with the version that answered it. */
async function expectAllLogged(summary: LoadSummary, timeoutMs = 30_000): Promise<void> {
  const want = new Map(summary.acknowledged.map((a) => [a.id, a.version]));
  let missing: string[] = [];
  const deadline = Date.now() + timeoutMs;
  do {
    const { rows } = await db.query<{ request_id: string; model_version: string }>(
      "SELECT request_id, model_version FROM predictions WHERE request_id = ANY($1)",
      [[...want.keys()]],
    );
    const logged = new Map(rows.map((r) => [r.request_id, r.model_version]));
    missing = [...want.keys()].filter((id) => !logged.has(id));
    if (missing.length === 0) {
      for (const [id, version] of want) expect(logged.get(id), id).toBe(version);
      return;
    }
    await sleep(250);
  } while (Date.now() < deadline);
  throw new Error(
    `${missing.length} of ${want.size} acknowledged predictions are not in the log, e.g. ${missing[0]}`,
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-scale-out-"));
  await mkdir(join(dir, "models"), { recursive: true });
  tokens = await writeTokens({ tokensPath: join(dir, "tokens.json") } as ServerConfig);
  // Its own cluster: one case stops it.
  postgres = await startPostgres();
  url = await postgres.createDatabase();
  db = new pg.Pool({ connectionString: url, max: 2 });
  db.on("error", () => {}); // the outage case breaks idle connections on purpose
  await seedTinyVersions(url, join(dir, "models"), 3);
  control = await startServe(["--role", "control"], serveEnv(dir, url, await freePort(), sharedFiles()));
  for (const slot of [0, 1]) {
    predictPorts[slot] = await freePort();
    predicts[slot] = await startPredict(slot);
    await waitFor(`predict replica ${slot} ready`, ready((predicts[slot] as ServeProcess).baseUrl));
  }
  const balancer = await startHaproxy({
    dir,
    name: "haproxy",
    predictPorts,
    controlPort: control.port,
    log: join(dir, "haproxy.log"),
  });
  haproxy = balancer.child;
  lbUrl = balancer.url;
}, 180_000);

afterAll(async () => {
  haproxy?.kill("SIGKILL");
  await Promise.all([control, ...predicts].filter(Boolean).map((p) => p.stop()));
  await db?.end();
  await postgres?.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("two predict replicas and a control process on PostgreSQL behind HAProxy", () => {
  it("passes every protocol through one port: gRPC and Connect predictions to the replicas, the rest to control", async () => {
    const conditions = { ...SUMMER_EVENING };
    for (const transport of [
      createGrpcTransport({ baseUrl: lbUrl }),
      createConnectTransport({ baseUrl: lbUrl, httpVersion: "1.1" }),
      createConnectTransport({ baseUrl: lbUrl, httpVersion: "2" }),
      createGrpcWebTransport({ baseUrl: lbUrl, httpVersion: "1.1" }),
    ]) {
      const answer = await createClient(PredictService, transport).predict({ conditions });
      expect(answer.modelVersion).toBe("1");
      // A replica would answer unimplemented: the balancer sent this to the control plane.
      const models = await createClient(RegistryService, transport).listModelVersions(
        { modelName: "bike-demand" },
        { headers: { authorization: `Bearer ${tokens.reader}` } },
      );
      expect(models.versions.length).toBe(3);
    }
  });

  it("a promotion reaches both replicas within 2 s, with no failed request and every prediction logged", async () => {
    const registry = connectClient(control.baseUrl, RegistryService, tokens.admin);
    let promotedAt = 0;
    const summary = await underLoad(8, async () => {
      await sleep(2500);
      promotedAt = Date.now();
      await registry.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: "2",
        reason: "scale-out test",
        force: true,
      });
    });
    expect(summary.failures).toEqual([]);
    expect(summary.acknowledged.length).toBeGreaterThan(RATE * 6);
    // Not a benchmark (docs/benchmarks.md has the figures): a guard against a balancer setting that
    // holds every answer back, as HAProxy's h2 backends did by ~200 ms without `option http-no-delay`.
    const latencies = summary.acknowledged.map((a) => a.ms).sort((a, b) => a - b);
    expect(latencies[Math.floor(latencies.length / 2)]).toBeLessThan(100);
    const before = summary.acknowledged.filter((a) => a.at < promotedAt);
    const after = summary.acknowledged.filter((a) => a.at > promotedAt + 2000);
    expect(new Set(before.map((a) => a.version))).toEqual(new Set(["1"]));
    expect(after.length).toBeGreaterThan(RATE * 2);
    expect(new Set(after.map((a) => a.version))).toEqual(new Set(["2"]));
    await expectAllLogged(summary);
  });

  it("restarting both replicas one after the other fails no request", async () => {
    const summary = await underLoad(24, async () => {
      for (const slot of [0, 1]) {
        await sleep(2000);
        await (predicts[slot] as ServeProcess).stop();
        predicts[slot] = await startPredict(slot);
        await waitFor(`restarted replica ${slot} ready`, ready((predicts[slot] as ServeProcess).baseUrl));
        await sleep(2500); // back in HAProxy's rotation before the next one goes
      }
    });
    expect(summary.failures).toEqual([]);
    expect(summary.unanswered).toBe(0);
    await expectAllLogged(summary);
  });

  it("SIGKILL of a replica fails at most the requests in flight then, and loses nothing acknowledged", async () => {
    let killedAt = 0;
    const summary = await underLoad(10, async (load) => {
      await sleep(3000);
      load.kill("SIGUSR2");
      (predicts[1] as ServeProcess).child.kill("SIGKILL");
      killedAt = Date.now();
      await (predicts[1] as ServeProcess).exited;
      await sleep(2000);
      // The replacement replays the killed process's spool: what it acknowledged reaches the log.
      predicts[1] = await startPredict(1);
      await waitFor("replacement replica ready", ready((predicts[1] as ServeProcess).baseUrl));
    });
    const inFlight = summary.snapshots[0]?.inFlight;
    expect(inFlight).toBeDefined();
    expect(summary.failures.length).toBeLessThanOrEqual(inFlight as number);
    for (const f of summary.failures) expect(f.at).toBeGreaterThanOrEqual(killedAt - 50);
    await expectAllLogged(summary);
  });

  it("a 30 s database outage: predictions go on, alias moves and jobs fail as unavailable, the log catches up", async () => {
    const registry = connectClient(control.baseUrl, RegistryService, tokens.admin);
    const train = connectClient(control.baseUrl, TrainService, tokens.admin);
    const refusals: ConnectError[] = [];
    const summary = await underLoad(42, async () => {
      await sleep(3000);
      await postgres.stop();
      await sleep(2000);
      for (const call of [
        () =>
          registry.setAlias({
            modelName: "bike-demand",
            alias: "production",
            version: "3",
            reason: "during the outage",
            force: true,
          }),
        () => train.startTraining({ reason: "during the outage" }),
      ]) {
        refusals.push(
          await call().then(() => new ConnectError("accepted during the outage"), ConnectError.from),
        );
      }
      await sleep(28_000);
      await postgres.start();
    });
    for (const refusal of refusals) {
      expect(refusal.code, refusal.message).toBe(Code.Unavailable);
      expect(refusal.rawMessage).toMatch(/database/i);
    }
    expect(summary.failures).toEqual([]);
    expect(summary.unanswered).toBe(0);
    // Every prediction acknowledged during the outage is logged once the database is back, or counted
    // as dropped: this deployment's spool keeps them all, so none may be dropped.
    await expectAllLogged(summary, 60_000);
    for (const p of predicts) {
      const metrics = await (await fetch(`${p.baseUrl}/metrics`)).text();
      expect(metrics).toMatch(/^bikeshare_prediction_log_dropped_total 0$/m);
      expect(metrics).toMatch(/^bikeshare_state_stale 0$/m);
    }
  });
});
