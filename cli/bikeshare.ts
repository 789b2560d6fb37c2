#!/usr/bin/env node
import { parseArgs } from "node:util";
import { runTrainingPipeline } from "../pipelines/training/pipeline.js";
import { configFromEnv } from "../services/config.js";
import { createLogger, type Logger } from "../services/observability/log.js";
import { ModelStore } from "../services/registry/model-store.js";
import { startServer } from "../services/server.js";

const USAGE = `bikeshare — hourly bike-sharing demand forecasting

Usage:
  bikeshare serve            Train a model if none is registered, then serve (PORT, default 8080)
  bikeshare train [--promote] Train on the shipped data and register a new version

Environment: PORT, HOST, BIKESHARE_MODELS_DIR, BIKESHARE_DATA, BIKESHARE_MAX_BATCH,
BIKESHARE_ORT_THREADS, LOG_LEVEL (see README.md).`;

async function train(log: Logger, promote: boolean): Promise<void> {
  const config = configFromEnv();
  const store = new ModelStore(config.modelsDir, config.modelName);
  const metadata = await runTrainingPipeline({
    dataPath: config.dataPath,
    store,
    onEvent: (e) =>
      log.info(e.message, { stage: e.stage, round: e.round, train_rmse: e.train, valid_rmse: e.valid }),
  });
  log.info("trained", {
    version: metadata.version,
    test_rmse: metadata.metrics.test_rmse,
    split_a_test_rmse: metadata.metrics.split_a_test_rmse,
    seconds: metadata.trainingSeconds,
  });
  const hasProduction = (await store.aliases()).production !== undefined;
  if (promote || !hasProduction) {
    await store.setAlias("production", metadata.version);
    log.info("promoted", { version: metadata.version, alias: "production" });
  }
}

async function serve(log: Logger): Promise<void> {
  const config = configFromEnv();
  const store = new ModelStore(config.modelsDir, config.modelName);
  if (!(await store.resolve("production"))) {
    log.info("no production model registered: training one on the shipped data first", {
      data: config.dataPath,
    });
    await train(log, true);
  }
  const server = await startServer(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    await server.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      promote: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const log = createLogger({ service: "bikeshare" });
  const [command] = positionals;
  if (values.help || command === undefined) {
    console.log(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  switch (command) {
    case "serve":
      await serve(log);
      return -1;
    case "train":
      await train(log, values.promote ?? false);
      return 0;
    default:
      console.error(`bikeshare: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    console.error(`bikeshare: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
