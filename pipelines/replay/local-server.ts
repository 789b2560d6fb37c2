import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { configFromEnv, type ServerConfig } from "../../services/config.js";
import type { Logger } from "../../services/observability/log.js";
import { startServer } from "../../services/server.js";
import type { ReplayClients } from "./replay.js";

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
