import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { inlineExecutor } from "../../pipelines/jobs/tasks.js";
import { hashToken } from "../../services/auth/tokens.js";
import { configFromEnv, type ServerConfig } from "../../services/config.js";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore, type TrainingRequest } from "../../services/jobs/store.js";
import { runTrainingJob } from "../../services/jobs/train-job.js";
import { createLogger } from "../../services/observability/log.js";
import { Registry } from "../../services/registry/registry.js";
import { type RunningServer, startServer } from "../../services/server.js";
import { openDatabase } from "../../services/storage/open.js";
import { HOUR_CSV } from "./hour-csv.js";

export interface Tokens {
  admin: string;
  trainer: string;
  reader: string;
}

export interface TestServer {
  server: RunningServer;
  config: ServerConfig;
  baseUrl: string;
  tokens: Tokens;
  /** Every log line the server wrote, to check what must never appear in logs. */
  logs: string[];
  stop(): Promise<void>;
}

/** The quickest real training job: one gradient-boosted candidate, no search. */
export const QUICK_REQUEST: TrainingRequest = {
  experiment: "tests",
  families: ["gbtree"],
  objectives: ["squared_error"],
  paramOverrides: {},
  trials: 0,
  reason: "test seed",
};

export async function testConfig(dir: string, overrides: Partial<ServerConfig> = {}): Promise<ServerConfig> {
  return {
    ...configFromEnv({}),
    modelsDir: join(dir, "models"),
    dbPath: join(dir, "bikeshare.duckdb"),
    tokensPath: join(dir, "tokens.json"),
    adminTokenPath: join(dir, "admin-token"),
    scoringDir: join(dir, "scoring"),
    dataPath: HOUR_CSV,
    port: 0,
    host: "127.0.0.1",
    trainThreads: 2,
    checkIntervalSeconds: 0,
    ...overrides,
  };
}

export async function writeTokens(config: ServerConfig): Promise<Tokens> {
  const tokens: Tokens = {
    admin: `adm_${randomBytes(12).toString("hex")}`,
    trainer: `trn_${randomBytes(12).toString("hex")}`,
    reader: `rdr_${randomBytes(12).toString("hex")}`,
  };
  const entries = Object.entries(tokens).map(([role, token]) => ({
    name: `test-${role}`,
    role,
    sha256: hashToken(token),
  }));
  await writeFile(config.tokensPath, JSON.stringify({ tokens: entries }));
  return tokens;
}

/** Registers `count` models by running real training jobs before the server starts. */
export async function seedModels(
  config: ServerConfig,
  count: number,
  request = QUICK_REQUEST,
): Promise<void> {
  const db = await openDatabase(config);
  try {
    const registry = await Registry.open(db, config.modelsDir);
    const jobs = await JobStore.open(db);
    const log = createLogger({}, "warn", () => {});
    for (let i = 0; i < count; i++) {
      const { job } = await jobs.create({ ...request, reason: `${request.reason} ${i + 1}` }, "test-seed");
      await runTrainingJob(
        {
          registry,
          jobs,
          events: new JobEvents(),
          log,
          executor: inlineExecutor,
          dataPath: config.dataPath,
          modelName: config.modelName,
          nthread: 2,
        },
        job.id,
        new AbortController().signal,
      );
      const done = await jobs.get(job.id);
      if (done?.state !== "succeeded") throw new Error(`seed job ${job.id} ${done?.state}: ${done?.error}`);
    }
  } finally {
    await db.close();
  }
}

/** A real server on a free loopback port, with its own database, artifacts and tokens. */
export async function startTestServer(
  overrides: Partial<ServerConfig> = {},
  options: { seedVersions?: number; seedRequest?: TrainingRequest } = {},
): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-test-"));
  const config = await testConfig(dir, overrides);
  const tokens = await writeTokens(config);
  await seedModels(config, options.seedVersions ?? 1, options.seedRequest);
  const logs: string[] = [];
  const server = await startServer(
    config,
    createLogger({}, "debug", (l) => logs.push(l)),
  );
  return {
    server,
    config,
    tokens,
    logs,
    baseUrl: `http://127.0.0.1:${server.port}`,
    async stop() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A Connect client (JSON over HTTP/1.1) of a test server, sending `token` as a bearer token when given. */
export function connectClient<S extends DescService>(baseUrl: string, service: S, token?: string): Client<S> {
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(service, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [auth] }));
}
