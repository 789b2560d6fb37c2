import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { type ReplayClients, replayComparison } from "../../pipelines/replay/replay.js";
import { configFromEnv, type ServerConfig } from "../../services/config.js";
import { createLogger, type Logger } from "../../services/observability/log.js";
import { startServer } from "../../services/server.js";
import { redactUrl } from "../../services/storage/postgres.js";

/** Prefix of the databases the replay creates on PostgreSQL: what to look for if a killed replay left one. */
export const REPLAY_DATABASE_PREFIX = "bikeshare_replay_";

async function onCluster<T>(url: string, doing: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 10_000,
    application_name: "bikeshare replay",
  });
  // A connection dropped while idle: the query that needs it fails and is reported below.
  client.on("error", () => {});
  try {
    await client.connect();
    return await run(client);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`BIKESHARE_DATABASE_URL=${redactUrl(url)}: ${doing}: ${message}`, { cause: error });
  } finally {
    // Closing a maintenance connection after its statement's outcome is known (or already thrown).
    await client.end().catch(() => undefined);
  }
}

/**
 * A new, empty database beside the one `url` names, on the same PostgreSQL server and as the same user
 * (who needs CREATEDB): each replay server must start from nothing, and the database the URL names may
 * hold a real registry that a replay must never write to. C collation, as docs/deployment.md asks of
 * any bikeshare database. Dropped when the server stops.
 */
async function createReplayDatabase(url: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `${REPLAY_DATABASE_PREFIX}${randomUUID().replaceAll("-", "")}`;
  await onCluster(url, `cannot create the replay's database ${name} (the user needs CREATEDB)`, (c) =>
    c.query(`CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`),
  );
  const own = new URL(url);
  own.pathname = `/${name}`;
  return {
    url: own.toString(),
    // FORCE: a connection the server failed to close must not leave the database behind.
    drop: async () => {
      await onCluster(url, `cannot drop the replay's database ${name}`, (c) =>
        c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
      );
    },
  };
}

/**
 * A server of its own for one replay, with the schedule off (the replay calls RunCheck on simulated
 * time), on fresh state: an artifact folder, spool and tokens in a temp directory, and a DuckDB file
 * there too or, when BIKESHARE_DATABASE_URL is set, a new database on that PostgreSQL server.
 */
export async function startReplayServer(log: Logger, overrides: Partial<ServerConfig> = {}) {
  const fromEnv = configFromEnv();
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-replay-"));
  let database: Awaited<ReturnType<typeof createReplayDatabase>> | undefined;
  const cleanUp = async () => {
    try {
      await database?.drop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  let server: Awaited<ReturnType<typeof startServer>>;
  let config: ServerConfig;
  try {
    if (fromEnv.databaseUrl !== undefined) database = await createReplayDatabase(fromEnv.databaseUrl);
    config = {
      ...fromEnv,
      // One whole server per replay, whatever BIKESHARE_ROLE says for `serve`.
      role: "all",
      port: 0,
      host: "127.0.0.1",
      modelsDir: join(dir, "models"),
      dbPath: join(dir, "bikeshare.duckdb"),
      databaseUrl: database?.url,
      // A BIKESHARE_SPOOL_DIR of a real server holds its unwritten predictions: not the replay's.
      spoolDir: join(dir, "prediction-spool"),
      tokensPath: join(dir, "tokens.json"),
      adminTokenPath: join(dir, "admin-token"),
      checkIntervalSeconds: 0,
      ...overrides,
    };
    // An empty registry would start a bootstrap job on all the data; the replay trains its own first model.
    server = await startServer(config, log, { bootstrap: false });
  } catch (error) {
    await cleanUp();
    throw error;
  }
  const token = (await readFile(config.adminTokenPath, "utf8")).trim();
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({
    baseUrl: `http://127.0.0.1:${server.port}`,
    httpVersion: "2",
    interceptors: [auth],
  });
  const clients: ReplayClients = {
    predict: createClient(PredictService, transport),
    train: createClient(TrainService, transport),
    registry: createClient(RegistryService, transport),
    monitor: createClient(MonitorService, transport),
  };
  return {
    clients,
    modelName: config.modelName,
    /** Where the server keeps its state (a password hidden). */
    database: config.databaseUrl === undefined ? config.dbPath : redactUrl(config.databaseUrl),
    async stop() {
      try {
        await server.close();
      } finally {
        await cleanUp();
      }
    },
  };
}

/**
 * `bikeshare replay`: the replay pipeline (pipelines/replay/) is a client of the servers it is given;
 * they are started here because a pipeline may not import services/ (biome.json enforces the layers).
 */
export async function replayCommand(values: Record<string, string | boolean | undefined>): Promise<number> {
  const config = configFromEnv();
  // The replay prints its own progress; the servers it runs only report errors.
  const log = createLogger({ service: "bikeshare-replay" }, "error");
  const started = performance.now();
  const summary = await replayComparison({
    dataPath: config.dataPath,
    trainUntil: (values["train-until"] as string | undefined) ?? "2011-12-31",
    from: (values.from as string | undefined) ?? "2012-01-01",
    to: (values.to as string | undefined) ?? "2012-12-31",
    outDir: (values.out as string | undefined) ?? "docs/replay",
    startServer: async () => {
      const server = await startReplayServer(log);
      // Named so that a database left by a killed replay can be found and dropped.
      if (config.databaseUrl !== undefined) console.error(`server on a new database: ${server.database}`);
      return server;
    },
    log: (line) => console.error(line),
  });
  if (values.json) console.log(JSON.stringify(summary));
  else
    console.log(
      `${JSON.stringify(summary, null, 2)}\nreplay took ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
  return 0;
}
