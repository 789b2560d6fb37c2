import cluster, { type Worker } from "node:cluster";
import { availableParallelism } from "node:os";
import { AggregatorRegistry } from "prom-client";
import { configFromEnv, roleFrom, type ServerConfig } from "../../services/config.js";
import { createLogger, type Logger } from "../../services/observability/log.js";
import { startServer } from "../../services/server.js";

/** The worker's slot (0..N-1) survives its restarts, so a restarted worker replays its own spool. */
const SLOT_ENV = "BIKESHARE_WORKER_SLOT";
const METRICS_REQUEST = "bikeshare:metrics-request";
const METRICS_REPLY = "bikeshare:metrics-reply";
/** A worker that dies sooner than this after its start counts as a crash loop: its restart waits longer. */
const HEALTHY_AFTER_MS = 10_000;
const MAX_BACKOFF_MS = 30_000;
/** How long the primary waits, beyond the workers' own drain period, before it kills them. */
const STOP_GRACE_MS = 30_000;

interface MetricsMessage {
  type: string;
  id: number;
  text?: string;
  error?: string;
}

/**
 * `bikeshare serve [--role all|control|predict] [--workers N]`: one process, or a node:cluster primary
 * that forks N serving processes sharing one port (the primary accepts connections and hands them out
 * in turn), restarts a worker that dies (waiting longer after each quick death), forwards SIGTERM and
 * SIGINT so that each drains its connections, and adds up the workers' metrics for /metrics.
 */
export async function serveCommand(
  values: Record<string, string | boolean | undefined>,
  usage: (message: string) => Error,
): Promise<number> {
  const config = configFromEnv();
  if (values.role !== undefined) {
    try {
      config.role = roleFrom(String(values.role), "--role");
    } catch (error) {
      throw usage((error as Error).message);
    }
  }
  if (values.workers !== undefined) {
    const workers = Number(values.workers);
    if (!(Number.isInteger(workers) && workers >= 0 && workers <= 256))
      throw usage(`--workers must be an integer in 0..256 (0 = one per core), got ${String(values.workers)}`);
    config.workers = workers;
  }
  const workers = config.workers === 0 ? availableParallelism() : config.workers;
  if (cluster.isWorker) return serveWorker(config, Number(process.env[SLOT_ENV] ?? 0));
  if (workers > 1 && config.databaseUrl === undefined) {
    throw usage(
      `--workers ${workers} needs BIKESHARE_DATABASE_URL: the embedded DuckDB file (BIKESHARE_DB) can be opened by one process only; use --workers 1, or PostgreSQL`,
    );
  }
  const log = createLogger({ service: "bikeshare" });
  if (workers === 1) return serveOne(config, log);
  runPrimary(workers, config.drainMs, log);
  return -1;
}

/** One serving process: stops gracefully on SIGTERM or SIGINT. */
async function serveOne(config: ServerConfig, log: Logger, worker?: number): Promise<number> {
  const server = await startServer(config, log, worker === undefined ? {} : { worker });
  if (worker === undefined || worker === 0) {
    console.error(
      `bikeshare: serving on http://${config.host}:${server.port} — the local admin token is in ${config.adminTokenPath}` +
        ` (export BIKESHARE_TOKEN=$(cat ${config.adminTokenPath}))`,
    );
  }
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
  if (worker !== undefined) {
    // A primary that died cannot restart or stop this worker any more: stop with it.
    process.on("disconnect", () => void stop("primary gone"));
    server.metrics.setRender(metricsFromPrimary);
    AggregatorRegistry.setRegistries(server.metrics.registry);
  }
  return -1;
}

async function serveWorker(config: ServerConfig, slot: number): Promise<number> {
  // Answers the primary's requests for this worker's registry (see AggregatorRegistry.setRegistries).
  new AggregatorRegistry();
  // Each worker keeps its own spool: two processes appending to one would interleave their records.
  const spoolDir =
    config.spoolDir === false
      ? false
      : `${config.spoolDir ?? `${config.dbPath}.prediction-spool`}.worker-${slot}`;
  const log = createLogger({ service: "bikeshare", worker: slot, pid: process.pid });
  try {
    return await serveOne({ ...config, spoolDir }, log, slot);
  } catch (error) {
    // The channel to the primary would keep this process alive, and cluster exits 0 when it is closed:
    // exit 1 here, so that the primary sees a failed worker and starts it again.
    log.error("the worker could not start", { error });
    process.exit(1);
  }
}

let nextMetricsRequest = 0;
const pendingMetrics = new Map<number, { resolve: (text: string) => void; reject: (error: Error) => void }>();

/** The sum over every worker, which only the primary can ask for. */
function metricsFromPrimary(): Promise<string> {
  const id = nextMetricsRequest++;
  if (pendingMetrics.size === 0) process.on("message", onMetricsReply);
  return new Promise<string>((resolve, reject) => {
    pendingMetrics.set(id, { resolve, reject });
    process.send?.({ type: METRICS_REQUEST, id } satisfies MetricsMessage);
  }).finally(() => {
    pendingMetrics.delete(id);
    if (pendingMetrics.size === 0) process.off("message", onMetricsReply);
  });
}

function onMetricsReply(message: MetricsMessage): void {
  if (message?.type !== METRICS_REPLY) return;
  const pending = pendingMetrics.get(message.id);
  if (message.error !== undefined)
    pending?.reject(new Error(`metrics of the other workers: ${message.error}`));
  else pending?.resolve(message.text ?? "");
}

function runPrimary(count: number, drainMs: number, log: Logger): void {
  const aggregator = new AggregatorRegistry();
  const slots = new Map<number, { slot: number; started: number }>();
  const quickDeaths = new Map<number, number>();
  let stopping = false;
  let announced = false;

  const fork = (slot: number) => {
    const worker = cluster.fork({ [SLOT_ENV]: String(slot) });
    slots.set(worker.id, { slot, started: Date.now() });
    worker.on("message", (message: MetricsMessage) => {
      if (message?.type === METRICS_REQUEST) answerMetrics(worker, message.id);
    });
  };
  const answerMetrics = (worker: Worker, id: number) => {
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: METRICS_REPLY, id, text } satisfies MetricsMessage),
      (error: Error) =>
        worker.send({ type: METRICS_REPLY, id, error: error.message } satisfies MetricsMessage),
    );
  };

  cluster.on("listening", (_worker, address) => {
    if (announced) return;
    announced = true;
    log.info("serving workers share one port", {
      workers: count,
      port: address.port,
      primary_pid: process.pid,
    });
  });
  cluster.on("exit", (worker, code, signal) => {
    const entry = slots.get(worker.id);
    slots.delete(worker.id);
    if (stopping) {
      if (slots.size === 0) process.exit(0);
      return;
    }
    if (!entry) return;
    const quick = Date.now() - entry.started < HEALTHY_AFTER_MS;
    const deaths = quick ? (quickDeaths.get(entry.slot) ?? 0) + 1 : 0;
    quickDeaths.set(entry.slot, deaths);
    const delay = deaths === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 500 * 2 ** (deaths - 1));
    log.error("a serving worker died: starting it again", {
      worker: entry.slot,
      pid: worker.process.pid,
      code,
      signal,
      restart_in_ms: delay,
    });
    setTimeout(() => {
      if (!stopping) fork(entry.slot);
    }, delay);
  });

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down: draining the workers", { signal, workers: slots.size });
    if (slots.size === 0) process.exit(0);
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
    setTimeout(() => {
      log.error("workers still running after the drain period: killing them", { workers: slots.size });
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGKILL");
      process.exit(1);
    }, drainMs + STOP_GRACE_MS).unref();
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  for (let slot = 0; slot < count; slot++) fork(slot);
}
