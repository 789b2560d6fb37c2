import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The folder holding package.json, found from this file so that it works from src and from dist. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("bikeshare: package.json not found above the running code");
    dir = parent;
  }
  return dir;
}

export interface ServerConfig {
  port: number;
  host: string;
  modelsDir: string;
  dataPath: string;
  modelName: string;
  maxBatchSize: number;
  /** onnxruntime intra-op threads; 1 is fastest here for single rows (docs/benchmarks.md). */
  ortThreads: number;
}

function intFromEnv(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** Settings from the environment, each with a default that works from a fresh clone. */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const root = projectRoot();
  return {
    port: intFromEnv(env, "PORT", 8080, 0, 65535),
    host: env.HOST || "127.0.0.1",
    modelsDir: resolve(root, env.BIKESHARE_MODELS_DIR || "models"),
    dataPath: resolve(root, env.BIKESHARE_DATA || "data/raw/hour.csv"),
    modelName: env.BIKESHARE_MODEL_NAME || "bike-demand",
    maxBatchSize: intFromEnv(env, "BIKESHARE_MAX_BATCH", 10_000, 1, 1_000_000),
    ortThreads: intFromEnv(env, "BIKESHARE_ORT_THREADS", 1, 1, 64),
  };
}
