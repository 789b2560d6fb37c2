import { performance } from "node:perf_hooks";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MonitorService } from "../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../gen/bikeshare/v1/train_pb.js";
import {
  BullExecutor,
  QUEUE_NAME,
  rateLimitedQueueErrors,
  scheduleRepeating,
} from "../pipelines/jobs/bullmq.js";
import { ProcessExecutor } from "../pipelines/jobs/process-executor.js";
import { InProcessQueue } from "../pipelines/jobs/queue.js";
import type { JobExecutor } from "../pipelines/jobs/tasks.js";
import { rateLimited } from "../pipelines/rate-limited.js";
import { authInterceptor, defaultPolicy } from "./auth/interceptor.js";
import { loadOrCreateTokens } from "./auth/tokens.js";
import type { ServerConfig } from "./config.js";
import { errorInterceptor } from "./errors.js";
import { createFrontServer } from "./http/front.js";
import { JobEvents } from "./jobs/events.js";
import { jobRunner, resumeUnfinished, SHUTDOWN } from "./jobs/lifecycle.js";
import { scoringJobs, startScoringHandler } from "./jobs/score-job.js";
import { type JobRecord, JobStore } from "./jobs/store.js";
import { trainingJobs } from "./jobs/train-job.js";
import { clientAborted, createLegacyHandler } from "./legacy/routes.js";
import { Actuals } from "./monitor/actuals.js";
import { AlertStore } from "./monitor/alerts.js";
import { DEFAULT_MONITOR_POLICY, type MonitorPolicy, runCheck } from "./monitor/checks.js";
import { DriftReports } from "./monitor/drift-reports.js";
import { createMonitorService } from "./monitor/monitor-service.js";
import { deploymentNotification, Notifier, smtpFromEnv, trainingNotification } from "./monitor/notifier.js";
import { PredictionLog } from "./monitor/prediction-log.js";
import { renderDriftReport } from "./monitor/report-html.js";
import type { Logger } from "./observability/log.js";
import { Metrics } from "./observability/metrics.js";
import { codeName, protocolOf, tracingInterceptor } from "./observability/rpc-tracing.js";
import { initTracing, withSpan } from "./observability/tracing.js";
import { LiveModel } from "./predict/live-model.js";
import { createPredictService, type OnServed } from "./predict/predict-service.js";
import { Registry } from "./registry/registry.js";
import { createRegistryService } from "./registry/registry-service.js";
import { guardRpcInput, rpcInputOptions } from "./rpc-input.js";
import { Database } from "./storage/database.js";
import { createTrainService } from "./train/train-service.js";

function metricsInterceptor(metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const protocol = protocolOf(req.header.get("content-type"));
    const record = (code: string) =>
      metrics.observe(
        req.service.typeName,
        req.method.name,
        code,
        protocol,
        (performance.now() - started) / 1000,
      );
    try {
      const res = await next(req);
      record("ok");
      return res;
    } catch (error) {
      record(codeName(ConnectError.from(error).code));
      throw error;
    }
  };
}

export interface RunningServer {
  readonly port: number;
  readonly metrics: Metrics;
  readonly registry: Registry;
  readonly live: LiveModel;
  close(): Promise<void>;
}

/**
 * Serves every protocol on one port. Node's plaintext HTTP/2 server cannot also answer
 * HTTP/1.1, so each connection's first bytes decide: the HTTP/2 preface goes to the h2c
 * server (gRPC, Connect over h2c), anything else to the HTTP/1.1 server (Connect, gRPC-Web, REST).
 *
 * On a first start (no production model) it queues a training job on the shipped data and
 * answers /readyz with 503 until that model is served.
 */
export async function startServer(
  config: ServerConfig,
  log: Logger,
  options: { bootstrap?: boolean } = {},
): Promise<RunningServer> {
  const stopTracing = initTracing(log);
  const metrics = new Metrics();
  const db = await Database.open(config.dbPath, {
    setting: "BIKESHARE_DB",
    // Serving goes on without writes; training and the prediction log wait for space.
    onWritable: (writable, error) => {
      metrics.storeWritable.set(writable ? 1 : 0);
      if (writable) log.info("the database takes writes again", { path: config.dbPath });
      else
        log.error("the database cannot be written: free space on its disk", { path: config.dbPath, error });
    },
  });
  metrics.storeWritable.set(1);
  const registry = await Registry.open(db, config.modelsDir);
  const jobs = await JobStore.open(db);
  const events = new JobEvents();
  const actuals = await Actuals.open(db);
  const predictionLog = await PredictionLog.open(db, {
    ...(config.spoolDir !== false
      ? {
          spoolDir: config.spoolDir ?? `${config.dbPath}.prediction-spool`,
          spoolSync: config.spoolSync ?? true,
        }
      : {}),
    onDropped: (n) => metrics.predictionLogDropped.inc(n),
    onWritten: (n) => metrics.predictionLogWritten.inc(n),
    onUnspooled: (n) => metrics.predictionLogUnspooled.inc(n),
    onError: (error) => log.error("prediction log write failed", { error }),
    // A torn last record after a kill is expected: its write never finished, so it was never acknowledged.
    onReplayed: (replay) => log.info("replayed the prediction spool of the last run", { ...replay }),
  });
  metrics.trackQueueDepth("prediction_log", () => predictionLog.depth);
  const reports = await DriftReports.open(db, registry);
  // Drift and accuracy problems persist for days: one alert per rule and version a day is enough.
  const alerts = await AlertStore.open(db, { cooldownMs: 24 * 3_600_000 });
  const smtp = smtpFromEnv();
  const notifier = smtp ? new Notifier(smtp, log) : undefined;
  if (!notifier) log.info("e-mail notifications are off: SMTP_HOST is not set");
  const onServed: OnServed = ({ requestId, model, records, hourStarts, predictions }) => {
    metrics.predictions.inc({ model_version: model.version }, records.length);
    const servedAt = Date.now();
    // Resolves once the entries are in the spool: the handlers answer after that.
    return predictionLog.log(
      records.map((record, row) => {
        const hourStart = hourStarts[row];
        return {
          requestId,
          row,
          modelVersion: model.version,
          record,
          prediction: predictions[row] as number,
          servedAt,
          ...(hourStart !== undefined ? { hourStart } : {}),
        };
      }),
    );
  };
  const { book, createdAdminToken } = await loadOrCreateTokens(config.tokensPath, config.adminTokenPath);
  if (createdAdminToken) log.info("created a local admin token", { file: config.adminTokenPath });

  const onQueueError = rateLimitedQueueErrors(
    (component) => metrics.queueErrors.inc({ component }),
    (component, error, suppressed) => log.warn("job queue trouble", { component, error, suppressed }),
  );
  const executor: JobExecutor = config.redisUrl
    ? new BullExecutor(config.redisUrl, { onError: onQueueError })
    : new ProcessExecutor();
  if (config.redisUrl) log.info("jobs go to BullMQ workers", { queue: QUEUE_NAME });
  const onFinished = (job: JobRecord, seconds: number) => {
    metrics.jobs.observe({ kind: job.kind, outcome: job.state }, seconds);
    if (job.kind === "train") void notifyJob(job, seconds);
  };
  const queue = new InProcessQueue(
    jobRunner({ jobs, events, log, onFinished }, [
      trainingJobs({
        registry,
        executor,
        modelName: config.modelName,
        dataPath: config.dataPath,
        nthread: config.trainThreads,
      }),
      scoringJobs({ registry, executor, modelName: config.modelName, scoringDir: config.scoringDir }),
    ]),
    // In a child process, one job at a time (training uses every core); with workers, as many as they take.
    config.redisUrl ? 64 : 1,
    (jobId, error) => log.error("job crashed", { job_id: jobId, error }),
  );
  metrics.trackQueueDepth("jobs", () => queue.depth);

  async function notifyJob(job: JobRecord, seconds: number): Promise<void> {
    if (!notifier) return;
    try {
      await notifier.send(
        trainingNotification({
          jobId: job.id,
          state: job.state,
          seconds,
          reason: job.reason,
          ...(job.modelVersion ? { modelVersion: job.modelVersion } : {}),
          ...(job.error ? { error: job.error } : {}),
        }),
      );
      if (job.promoted && job.modelVersion) {
        await notifier.send(
          deploymentNotification({
            modelName: config.modelName,
            version: job.modelVersion,
            alias: "production",
            reason: `it beat the production model on the most recent labelled window (job ${job.id})`,
          }),
        );
      }
    } catch (error) {
      log.error("job e-mail failed", { job_id: job.id, error });
    }
  }

  const live = new LiveModel(registry, config.modelName, "production", config.ortThreads, log, metrics);
  await live.start();

  // Jobs accepted before a crash or restart run again; a retried job never registers twice.
  const unfinished = await resumeUnfinished(jobs, queue, log);
  if (!live.current && unfinished.length === 0 && options.bootstrap !== false) {
    log.info("no production model registered: training one on the shipped data first", {
      data: config.dataPath,
    });
    const { job } = await jobs.create(
      {
        experiment: config.experiment,
        families: [],
        objectives: [],
        paramOverrides: {},
        reason: "bootstrap: no production model",
      },
      "system",
      "bootstrap",
    );
    await queue.enqueue(job.id);
  }

  const policy: MonitorPolicy = {
    ...DEFAULT_MONITOR_POLICY,
    rmseFactor: config.rmseFactor,
    retrainCooldownMs: config.retrainCooldownDays * 86_400_000,
  };
  const check = (now: number, allowRetrain: boolean) =>
    withSpan("monitoring check", { "check.retrain_allowed": allowRetrain }, async () => {
      await predictionLog.flush(); // a check sees every prediction served before it
      return runCheck(
        {
          registry,
          modelName: config.modelName,
          experiment: config.experiment,
          actuals,
          reports,
          alerts,
          jobs,
          enqueue: (jobId) => queue.enqueue(jobId),
          ...(notifier ? { notifier } : {}),
          metrics,
          log,
          policy,
          publicUrl: config.publicUrl,
        },
        now,
        allowRetrain,
      );
    });
  const scheduledCheck = () =>
    check(Date.now(), config.autoRetrain).then(
      () => {},
      (error: unknown) => log.error("scheduled check failed", { error }),
    );
  const interval = config.checkIntervalSeconds * 1000;
  const schedule =
    interval > 0 && !config.redisUrl ? setInterval(() => void scheduledCheck(), interval).unref() : undefined;
  const bullSchedule =
    interval > 0 && config.redisUrl
      ? await scheduleRepeating(config.redisUrl, "monitoring-check", interval, scheduledCheck, onQueueError)
      : undefined;

  // A client that goes away mid-upload is its own business, and hundreds of them must not flood the log.
  const logAborted = rateLimited(10_000, (count) =>
    log.info("clients aborted their uploads: connection closed before the request body arrived", {
      requests: count,
    }),
  );
  const legacy = createLegacyHandler({
    slot: live,
    metrics,
    onServed,
    maxBatchSize: config.maxBatchSize,
    report: async (id) => {
      const report = await reports.get(id);
      return report ? renderDriftReport(report) : undefined;
    },
  });
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(
        PredictService,
        createPredictService(
          live,
          onServed,
          config,
          startScoringHandler({ jobs, queue, scoringDir: config.scoringDir }),
        ),
      );
      router.service(
        TrainService,
        createTrainService({ jobs, queue, events, defaultExperiment: config.experiment }),
      );
      router.service(RegistryService, createRegistryService(registry));
      router.service(
        MonitorService,
        createMonitorService({
          actuals,
          reports,
          alerts,
          check,
          production: () => registry.getModelVersion(config.modelName, "production"),
          policy,
          flushLog: () => predictionLog.flush(),
        }),
      );
      guardRpcInput(router, (...labels) => metrics.observe(...labels));
    },
    interceptors: [
      tracingInterceptor(),
      metricsInterceptor(metrics),
      errorInterceptor(log),
      authInterceptor(book, defaultPolicy({ openPredict: !config.predictNeedsToken })),
    ],
    ...rpcInputOptions(config.maxBatchSize),
    fallback: (req, res) => {
      legacy(req, res).catch((error: unknown) => {
        if (clientAborted(req)) logAborted();
        else log.error("request failed", { path: req.url, error });
      });
    },
  });

  const front = createFrontServer(handler, config, log, () => metrics.connectionsRejected.inc());
  const port = await front.listen(config.port, config.host);
  log.info("serving", { host: config.host, port, protocols: ["connect", "grpc", "grpc-web", "rest"] });

  return {
    port,
    metrics,
    registry,
    live,
    async close() {
      if (schedule) clearInterval(schedule);
      await bullSchedule?.close();
      await front.close();
      // A job interrupted by shutdown is queued again for the next start, not marked cancelled.
      await queue.close(SHUTDOWN);
      await executor.close();
      await live.stop();
      await predictionLog.close();
      notifier?.close();
      await db.close();
      await stopTracing();
    },
  };
}
