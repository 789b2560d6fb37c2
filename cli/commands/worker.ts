import http from "node:http";
import { rateLimitedQueueErrors, startWorker } from "../../pipelines/jobs/bullmq.js";
import { redisUrlFromEnv } from "../../services/config.js";
import { createLogger } from "../../services/observability/log.js";
import { Metrics } from "../../services/observability/metrics.js";
import { initTracing, withSpan } from "../../services/observability/tracing.js";

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/**
 * `bikeshare worker`: runs queued jobs (training, scoring) taken from BullMQ on REDIS_URL until
 * SIGTERM, and serves its own /metrics for Prometheus (job durations and outcomes).
 */
export async function workerCommand(): Promise<number> {
  const raw = process.env.REDIS_URL;
  if (!raw) throw new Error("REDIS_URL is required: workers take their jobs from BullMQ on Redis");
  const url = redisUrlFromEnv(raw);
  const concurrency = intFromEnv("WORKER_CONCURRENCY", 1, 1, 64);
  const metricsPort = intFromEnv("WORKER_METRICS_PORT", 9465, 0, 65535);
  const lockDurationMs = intFromEnv("WORKER_LOCK_MS", 30_000, 1000, 600_000);
  const log = createLogger({ service: "bikeshare-worker", pid: process.pid });
  const metrics = new Metrics();

  const stopTracing = initTracing(log);
  const worker = await startWorker(url, {
    concurrency,
    lockDurationMs,
    around: (kind, jobId, task) => withSpan(`${kind} task`, { "job.id": jobId }, task),
    onStarted: (kind, jobId, attempt) => log.info("job started", { kind, job_id: jobId, attempt }),
    onReused: (kind, jobId, attempt) =>
      log.info("job already computed by an earlier attempt: returning its kept outcome", {
        kind,
        job_id: jobId,
        attempt,
      }),
    onFinished: (kind, jobId, outcome, seconds, error) => {
      metrics.jobs.observe({ kind, outcome }, seconds);
      const fields = { kind, job_id: jobId, outcome, seconds: Math.round(seconds * 10) / 10 };
      if (outcome === "failed") log.error("job finished", { ...fields, error });
      else log.info("job finished", fields);
    },
    onError: rateLimitedQueueErrors(
      (component) => metrics.queueErrors.inc({ component }),
      (component, error, suppressed) => log.warn("job queue trouble", { component, error, suppressed }),
    ),
  });
  const server =
    metricsPort > 0
      ? http.createServer((req, res) => {
          if (req.url !== "/metrics") {
            res.writeHead(404).end();
            return;
          }
          metrics.registry.metrics().then(
            (body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
            () => res.writeHead(500).end(),
          );
        })
      : undefined;
  await new Promise<void>((resolve) => (server ? server.listen(metricsPort, "0.0.0.0", resolve) : resolve()));
  log.info("worker ready", { concurrency, metrics_port: metricsPort });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("worker stopping: finishing the jobs it holds", { signal });
    server?.close();
    await worker.close();
    await stopTracing();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  return -1;
}
