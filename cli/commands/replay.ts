import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { type ReplayClients, replayComparison } from "../../pipelines/replay/replay.js";
import { configFromEnv, type ServerConfig } from "../../services/config.js";
import { createLogger, type Logger } from "../../services/observability/log.js";
import { startServer } from "../../services/server.js";

/**
 * A server of its own for one replay, on a fresh database and artifact folder in a temp
 * directory, with the schedule off (the replay calls RunCheck on simulated time).
 */
export async function startReplayServer(log: Logger, overrides: Partial<ServerConfig> = {}) {
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-replay-"));
  const config: ServerConfig = {
    ...configFromEnv(),
    port: 0,
    host: "127.0.0.1",
    modelsDir: join(dir, "models"),
    dbPath: join(dir, "bikeshare.duckdb"),
    tokensPath: join(dir, "tokens.json"),
    adminTokenPath: join(dir, "admin-token"),
    checkIntervalSeconds: 0,
    ...overrides,
  };
  // An empty registry would start a bootstrap job on all the data; the replay trains its own first model.
  const server = await startServer(config, log, { bootstrap: false });
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
    async stop() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
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
    startServer: () => startReplayServer(log),
    log: (line) => console.error(line),
  });
  if (values.json) console.log(JSON.stringify(summary));
  else
    console.log(
      `${JSON.stringify(summary, null, 2)}\nreplay took ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
  return 0;
}
