import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runTrainingPipeline } from "../../pipelines/training/pipeline.js";
import { configFromEnv, type ServerConfig } from "../../services/config.js";
import { createLogger } from "../../services/observability/log.js";
import type { ModelMetadata } from "../../services/registry/model-store.js";
import { ModelStore } from "../../services/registry/model-store.js";
import { type RunningServer, startServer } from "../../services/server.js";
import { HOUR_CSV } from "./hour-csv.js";

export interface TestServer {
  server: RunningServer;
  config: ServerConfig;
  model: ModelMetadata;
  baseUrl: string;
  stop(): Promise<void>;
}

/**
 * A real server on a free loopback port, serving a real model trained on hour.csv
 * (few rounds, so that suites stay quick; accuracy is the pipeline test's job).
 */
export async function startTestServer(overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const modelsDir = await mkdtemp(join(tmpdir(), "bikeshare-models-"));
  const store = new ModelStore(modelsDir);
  const model = await runTrainingPipeline({
    dataPath: HOUR_CSV,
    store,
    maxRounds: 60,
    earlyStoppingRounds: 20,
  });
  await store.setAlias("production", model.version);
  const config: ServerConfig = { ...configFromEnv({}), modelsDir, port: 0, host: "127.0.0.1", ...overrides };
  const lines: string[] = [];
  const server = await startServer(
    config,
    createLogger({}, "warn", (l) => lines.push(l)),
  );
  return {
    server,
    config,
    model,
    baseUrl: `http://127.0.0.1:${server.port}`,
    async stop() {
      await server.close();
      await rm(modelsDir, { recursive: true, force: true });
    },
  };
}
