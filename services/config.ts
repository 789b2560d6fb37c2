import { existsSync, readFileSync } from "node:fs";
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

/** What one process serves (docs/deployment.md, "Roles"). */
export const SERVER_ROLES = ["all", "control", "predict"] as const;
export type ServerRole = (typeof SERVER_ROLES)[number];

export interface ServerConfig {
  /**
   * `all`: everything in one process (the default). `control`: Registry, Train, Monitor, Predict, jobs and
   * the schedulers. `predict`: Predict and the REST routes only, over a shared PostgreSQL database.
   */
  role: ServerRole;
  /** Serving processes `bikeshare serve` forks on one port; 0 = one per core. */
  workers: number;
  /** BIKESHARE_CONTROL_URL: where a predict replica tells callers of Train, Registry and Monitor to go. */
  controlUrl?: string;
  port: number;
  host: string;
  /** Artifact store of the registry (content-addressed files). */
  modelsDir: string;
  /** The embedded DuckDB file: registry, jobs. */
  dbPath: string;
  /**
   * BIKESHARE_DATABASE_URL: a postgres:// URL puts all shared state in PostgreSQL instead of `dbPath`
   * (docs/deployment.md, "Storage backends").
   */
  databaseUrl?: string;
  /**
   * Folder of the prediction log's spool (what makes an acknowledged prediction survive a crash); unset:
   * `<dbPath>.prediction-spool`. `false` (BIKESHARE_SPOOL_DIR=off) keeps entries in memory until written.
   */
  spoolDir?: string | false;
  /** Whether the spool `fdatasync`s (BIKESHARE_SPOOL_SYNC=fdatasync, the default) or only writes (`none`: a process crash loses nothing, a power loss may). */
  spoolSync?: boolean;
  /** Hashes of bearer tokens and their roles (see services/auth/tokens.ts). */
  tokensPath: string;
  /** Where the first start writes the local admin token (mode 0600). */
  adminTokenPath: string;
  /** Whether Predict needs a token (reader role); open by default like the old API. */
  predictNeedsToken: boolean;
  /** XGBoost threads for training jobs in this process; 0 = every core. */
  trainThreads: number;
  dataPath: string;
  modelName: string;
  experiment: string;
  /** Seconds between scheduled monitoring checks; 0 turns the schedule off (RunCheck still works). */
  checkIntervalSeconds: number;
  /** Whether scheduled checks may start a retraining. */
  autoRetrain: boolean;
  /** Live RMSE alert: window RMSE above this × the model's test RMSE. */
  rmseFactor: number;
  /** Shortest time between two automatic retrainings, in days. */
  retrainCooldownDays: number;
  retrainMaxAgeDays: number;
  /** Base URL used in links sent by e-mail. */
  publicUrl: string;
  maxBatchSize: number;
  /** onnxruntime intra-op threads; 1 is fastest here for single rows (docs/benchmarks.md). */
  ortThreads: number;
  /** Files that StartScoring may read and write (paths in requests are relative to it). */
  scoringDir: string;
  /** When set, jobs go to BullMQ on this Redis and `bikeshare worker` processes run them. */
  redisUrl?: string;
  /** A connection that has not sent a complete request head (or HTTP/2 preface and SETTINGS) within this is closed. */
  headersTimeoutMs: number;
  /** An HTTP/1.1 request whose head and body have not fully arrived within this is answered 408 and closed. */
  requestTimeoutMs: number;
  /** An HTTP/1.1 keep-alive connection, or an HTTP/2 session with no open stream, idle this long is closed. */
  idleTimeoutMs: number;
  /** Open connections beyond this are closed as soon as they are accepted. */
  maxConnections: number;
  /** Concurrent streams one HTTP/2 session may open (SETTINGS_MAX_CONCURRENT_STREAMS). */
  http2MaxStreams: number;
  /**
   * On SIGTERM, how long /readyz answers 503 while everything is still served, before connections are
   * closed: the time a load balancer or Kubernetes needs to stop sending new requests here.
   */
  drainMs: number;
}

/** A number from the environment, or `fallback` when unset; anything else is an error naming the variable. */
function numberFromEnv(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
  integer = false,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  const ok = integer ? Number.isInteger(value) : Number.isFinite(value);
  if (!ok || value < min || value > max) {
    const allowed = integer ? `an integer in ${min}..${max}` : `a number in [${min}, ${max}]`;
    throw new Error(`${name} must be ${allowed}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

const intFromEnv = (env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number) =>
  numberFromEnv(env, name, fallback, min, max, true);

/**
 * The soft limit on open files minus room for the database, artifacts and logs, so that clients alone can
 * never exhaust the descriptors; 1000 where /proc/self/limits cannot be read.
 */
export function defaultMaxConnections(limits = "/proc/self/limits"): number {
  let text: string;
  try {
    text = readFileSync(limits, "utf8");
  } catch {
    return 1000;
  }
  const soft = /^Max open files\s+(\d+|unlimited)/m.exec(text)?.[1];
  if (soft === undefined) return 1000;
  const files = soft === "unlimited" ? Number.POSITIVE_INFINITY : Number(soft);
  return Math.max(64, Math.min(10_000, files - 256));
}

function spoolSyncFromEnv(raw: string | undefined): boolean {
  if (raw === undefined || raw === "" || raw === "fdatasync") return true;
  if (raw === "none") return false;
  throw new Error(`BIKESHARE_SPOOL_SYNC must be fdatasync or none, got ${JSON.stringify(raw)}`);
}

/** A role name, or an error naming `setting` (BIKESHARE_ROLE or --role) and the allowed values. */
export function roleFrom(raw: string, setting: string): ServerRole {
  const role = SERVER_ROLES.find((r) => r === raw);
  if (role === undefined) {
    throw new Error(`${setting} must be one of ${SERVER_ROLES.join(", ")}, got ${JSON.stringify(raw)}`);
  }
  return role;
}

export function redisUrlFromEnv(raw: string): string {
  if (!/^rediss?:\/\/[^\s]+$/.test(raw)) {
    throw new Error("REDIS_URL must be a URL like redis://host:6379 (or rediss:// for TLS)");
  }
  return raw;
}

/** A PostgreSQL URL, or an error that names the setting and never shows the password. */
export function databaseUrlFromEnv(raw: string): string {
  if (!/^postgres(ql)?:\/\/[^\s]+$/.test(raw)) {
    throw new Error(
      "BIKESHARE_DATABASE_URL must be a URL like postgres://user:password@host:5432/bikeshare (unset: the embedded DuckDB file BIKESHARE_DB)",
    );
  }
  return raw;
}

/** Settings from the environment, each with a default that works from a fresh clone. */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const root = projectRoot();
  return {
    role: env.BIKESHARE_ROLE ? roleFrom(env.BIKESHARE_ROLE, "BIKESHARE_ROLE") : "all",
    workers: intFromEnv(env, "BIKESHARE_WORKERS", 1, 0, 256),
    ...(env.BIKESHARE_CONTROL_URL ? { controlUrl: env.BIKESHARE_CONTROL_URL } : {}),
    port: intFromEnv(env, "PORT", 8080, 0, 65535),
    host: env.HOST || "127.0.0.1",
    modelsDir: resolve(root, env.BIKESHARE_MODELS_DIR || "models"),
    dbPath: resolve(root, env.BIKESHARE_DB || "data/runtime/bikeshare.duckdb"),
    // Set but empty is an error, not the embedded default: an empty secret must not quietly give each
    // replica a private database of its own.
    ...(env.BIKESHARE_DATABASE_URL !== undefined
      ? { databaseUrl: databaseUrlFromEnv(env.BIKESHARE_DATABASE_URL) }
      : {}),
    ...(env.BIKESHARE_SPOOL_DIR
      ? { spoolDir: env.BIKESHARE_SPOOL_DIR === "off" ? false : resolve(root, env.BIKESHARE_SPOOL_DIR) }
      : {}),
    spoolSync: spoolSyncFromEnv(env.BIKESHARE_SPOOL_SYNC),
    tokensPath: resolve(root, env.BIKESHARE_TOKENS_FILE || "data/runtime/tokens.json"),
    adminTokenPath: resolve(root, env.BIKESHARE_ADMIN_TOKEN_FILE || "data/runtime/admin-token"),
    predictNeedsToken: env.BIKESHARE_PREDICT_AUTH === "required",
    trainThreads: intFromEnv(env, "BIKESHARE_TRAIN_THREADS", 0, 0, 256),
    experiment: env.BIKESHARE_EXPERIMENT || "bike-demand",
    checkIntervalSeconds: intFromEnv(env, "BIKESHARE_CHECK_INTERVAL_SECONDS", 3600, 0, 86_400 * 7),
    autoRetrain: env.BIKESHARE_AUTO_RETRAIN !== "false",
    rmseFactor: numberFromEnv(env, "BIKESHARE_RMSE_FACTOR", 1.5, 1, 100),
    retrainCooldownDays: numberFromEnv(env, "BIKESHARE_RETRAIN_COOLDOWN_DAYS", 28, 0, 3650),
    retrainMaxAgeDays: numberFromEnv(env, "BIKESHARE_RETRAIN_MAX_AGE_DAYS", 84, 0, 3650),
    publicUrl: env.BIKESHARE_PUBLIC_URL || `http://127.0.0.1:${env.PORT || 8080}`,
    dataPath: resolve(root, env.BIKESHARE_DATA || "data/raw/hour.csv"),
    modelName: env.BIKESHARE_MODEL_NAME || "bike-demand",
    maxBatchSize: intFromEnv(env, "BIKESHARE_MAX_BATCH", 10_000, 1, 1_000_000),
    ortThreads: intFromEnv(env, "BIKESHARE_ORT_THREADS", 1, 1, 64),
    scoringDir: resolve(root, env.SCORING_DIR || "data/scoring"),
    ...(env.REDIS_URL ? { redisUrl: redisUrlFromEnv(env.REDIS_URL) } : {}),
    ...connectionLimitsFromEnv(env),
  };
}

function connectionLimitsFromEnv(env: NodeJS.ProcessEnv) {
  const headersTimeoutMs = intFromEnv(env, "BIKESHARE_HEADERS_TIMEOUT_MS", 10_000, 50, 3_600_000);
  const requestTimeoutMs = intFromEnv(env, "BIKESHARE_REQUEST_TIMEOUT_MS", 60_000, 50, 3_600_000);
  // Node's HTTP server refuses a head deadline later than the whole request's.
  if (requestTimeoutMs < headersTimeoutMs) {
    throw new Error(
      `BIKESHARE_REQUEST_TIMEOUT_MS (${requestTimeoutMs}) must be at least BIKESHARE_HEADERS_TIMEOUT_MS (${headersTimeoutMs})`,
    );
  }
  return {
    headersTimeoutMs,
    requestTimeoutMs,
    idleTimeoutMs: intFromEnv(env, "BIKESHARE_IDLE_TIMEOUT_MS", 65_000, 50, 3_600_000),
    maxConnections: intFromEnv(env, "BIKESHARE_MAX_CONNECTIONS", defaultMaxConnections(), 1, 1_000_000),
    http2MaxStreams: intFromEnv(env, "BIKESHARE_HTTP2_MAX_STREAMS", 100, 1, 10_000),
    drainMs: intFromEnv(env, "BIKESHARE_DRAIN_SECONDS", 0, 0, 300) * 1000,
  };
}
