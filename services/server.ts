import { performance } from "node:perf_hooks";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MonitorService } from "../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../gen/bikeshare/v1/train_pb.js";
import { GRPCInferenceService } from "../gen/inference/grpc_predict_v2_pb.js";
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
import { loadOrCreateTokens, type TokenBook } from "./auth/tokens.js";
import type { ServerConfig } from "./config.js";
import {
  ALIAS_MOVES_CHANNEL,
  type DatabaseNotifications,
  listenOnDatabase,
} from "./control/alias-notifications.js";
import { AdvisoryJobOwnership, soleOwner } from "./control/job-ownership.js";
import { AdvisoryLockLeadership, type Leadership, notLeader, soleLeader } from "./control/leadership.js";
import { errorInterceptor } from "./errors.js";
import { createHealthService, Health } from "./health/health-service.js";
import { createReflectionService, ReflectionV1, ReflectionV1alpha } from "./health/reflection-service.js";
import { createConnectUnaryHandler } from "./http/connect-unary.js";
import { createFrontServer } from "./http/front.js";
import { createUiHandler } from "./http/ui-static.js";
import { CancelsAcrossProcesses, sharedJobEvents } from "./jobs/across-processes.js";
import { JobEvents } from "./jobs/events.js";
import { jobHandlers } from "./jobs/kinds.js";
import { jobRunner, resumeUnfinished, SHUTDOWN } from "./jobs/lifecycle.js";
import { startScoringHandler } from "./jobs/score-job.js";
import { type JobRecord, JobStore } from "./jobs/store.js";
import { clientAborted, createLegacyHandler } from "./legacy/routes.js";
import { createMlflowHandler } from "./mlflow/handler.js";
import { Actuals } from "./monitor/actuals.js";
import { AlertStore } from "./monitor/alerts.js";
import { DEFAULT_MONITOR_POLICY, type MonitorPolicy, runCheck } from "./monitor/checks.js";
import { DriftReports } from "./monitor/drift-reports.js";
import { createMonitorService } from "./monitor/monitor-service.js";
import { deploymentNotification, Notifier, smtpFromEnv, trainingNotification } from "./monitor/notifier.js";
import { PerformanceEstimates } from "./monitor/performance-estimates.js";
import { PredictionLog } from "./monitor/prediction-log.js";
import { renderDriftReport } from "./monitor/report-html.js";
import type { Logger } from "./observability/log.js";
import { Metrics } from "./observability/metrics.js";
import { codeName, protocolOf, tracingInterceptor } from "./observability/rpc-tracing.js";
import { initTracing, withSpan } from "./observability/tracing.js";
import { createOipGrpcService } from "./oip/grpc-service.js";
import { createOipRestHandler, isOipPath } from "./oip/rest.js";
import { LiveModel } from "./predict/live-model.js";
import { createPredictService, type OnServed, type StartScoring } from "./predict/predict-service.js";
import { ARTIFACT_CARD, type ModelCard } from "./registry/model-card.js";
import { Registry } from "./registry/registry.js";
import { createRegistryService } from "./registry/registry-service.js";
import { rpcReadMaxBytes } from "./request-limits.js";
import { type ServedService, served } from "./rpc/grpc-adapter.js";
import { createGrpcTransport } from "./rpc/grpc-transport.js";
import { guardRpcInput, rpcInputOptions } from "./rpc-input.js";
import type { SqlDatabase } from "./storage/database.js";
import { openDatabase } from "./storage/open.js";
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

/** How often a process on a shared database reads the `production` alias, in case a NOTIFY was missed. */
const ALIAS_POLL_MS = 1000;

/**
 * Serves every protocol on one port. Node's plaintext HTTP/2 server cannot also answer
 * HTTP/1.1, so each connection's first bytes decide: the HTTP/2 preface goes to the h2c
 * server (gRPC, Connect over h2c), anything else to the HTTP/1.1 server (Connect, gRPC-Web, REST).
 *
 * A process is made of up to three parts, by `config.role` (docs/deployment.md, "Roles"): the state
 * every role opens (`openState`), serving (`startServing`: the live model, the prediction log, Predict
 * and the REST routes) and the control plane (`startControlPlane`: jobs, schedulers, the bootstrap, the
 * Train, Registry and Monitor services), which a `predict` replica leaves out.
 *
 * On a first start (no production model) the leader queues a training job on the shipped data and
 * /readyz answers 503 until that model is served.
 */
export async function startServer(
  config: ServerConfig,
  log: Logger,
  options: {
    bootstrap?: boolean;
    /** The worker slot under `serve --workers N`, sent as x-bikeshare-worker so that load spreading shows. */
    worker?: number;
  } = {},
): Promise<RunningServer> {
  if (config.role !== "all" && config.databaseUrl === undefined) {
    throw new Error(
      `--role ${config.role} needs BIKESHARE_DATABASE_URL: the roles split one deployment over several processes that share the registry, and an embedded DuckDB file (BIKESHARE_DB) can be opened by one process only; run --role all for a single process`,
    );
  }
  const stopTracing = initTracing(log);
  const metrics = new Metrics();
  const state = await openState(config, log, metrics);
  // A start that fails closes what it opened: an open connection would keep the process from exiting.
  const { serving, control } = await startParts(config, log, metrics, state, options).catch(
    async (error: unknown) => {
      await state.close().catch(() => undefined);
      throw error;
    },
  );

  // A client that goes away mid-upload is its own business, and hundreds of them must not flood the log.
  const logAborted = rateLimited(10_000, (count) =>
    log.info("clients aborted their uploads: connection closed before the request body arrived", {
      requests: count,
    }),
  );
  const legacy = createLegacyHandler({
    slot: serving.live,
    metrics,
    onServed: serving.onServed,
    maxBatchSize: config.maxBatchSize,
    reload: () => serving.live.reloadNow(),
    tokens: state.tokens,
    predictNeedsToken: config.predictNeedsToken,
    modelName: config.modelName,
    alias: "production",
    report: async (id) => {
      const report = await control?.reports.get(id);
      return report ? renderDriftReport(report) : undefined;
    },
  });
  // The Open Inference Protocol v2 (KServe, Triton, MLServer clients) on the same serving path.
  const oip = { slot: serving.live, onServed: serving.onServed, maxBatchSize: config.maxBatchSize };
  const oipRest = createOipRestHandler({
    ...oip,
    metrics,
    tokens: state.tokens,
    predictNeedsToken: config.predictNeedsToken,
  });
  // MLflow's REST API (docs/mlflow-api.md), routed before the legacy routes; it lives with the control plane.
  const mlflow = createMlflowHandler({
    registry: state.registry,
    tokens: state.tokens,
    servedModel: config.modelName,
    ...(control
      ? {}
      : {
          unavailable: `this process runs --role ${config.role}; the MLflow API is served by the control plane`,
        }),
    onError: (error) => log.error("MLflow API request failed", { error }),
  });
  const health = createHealthService(serving.live, control ? CONTROL_SERVICES : []);
  const reflection = createReflectionService([
    PredictService,
    ...(control ? CONTROL_SERVICES : []),
    GRPCInferenceService,
    Health,
    ReflectionV1,
    ReflectionV1alpha,
  ]);
  // One implementation of each service and one interceptor list for both transports: connect-node
  // (Connect, gRPC-Web, gRPC with JSON, REST) and grpc-js (gRPC proper over HTTP/2).
  const services: ServedService[] = [
    served(
      PredictService,
      createPredictService(
        serving.live,
        serving.onServed,
        config,
        control?.startScoring ?? refuse(PredictService.method.startScoring, config),
      ),
    ),
    ...(control?.services ?? CONTROL_SERVICES.map((service) => served(service, refuseAll(service, config)))),
    served(GRPCInferenceService, createOipGrpcService(oip)),
    served(Health, health.impl),
    served(ReflectionV1, reflection.v1),
    served(ReflectionV1alpha, reflection.v1alpha),
  ];
  const interceptors = [
    tracingInterceptor(),
    metricsInterceptor(metrics),
    errorInterceptor(log),
    authInterceptor(state.tokens, defaultPolicy({ openPredict: !config.predictNeedsToken })),
  ];
  const observe = (...labels: Parameters<Metrics["observe"]>) => metrics.observe(...labels);
  const connectNode = connectNodeAdapter({
    routes: (router) => {
      for (const { service, impl } of services) router.service(service, impl);
      guardRpcInput(router, observe);
    },
    interceptors,
    ...rpcInputOptions(config.maxBatchSize),
    fallback: (req, res) => {
      (mlflow.matches(req.url) ? mlflow.handle : isOipPath(req.url) ? oipRest : legacy)(req, res).catch(
        (error: unknown) => {
          if (clientAborted(req)) logAborted();
          else log.error("request failed", { path: req.url, error });
        },
      );
    },
  });
  // Unary Connect calls take the lean path (same services, interceptors and limits); connect-node the rest.
  const connectUnary = createConnectUnaryHandler({
    services,
    interceptors,
    observe,
    ...rpcInputOptions(config.maxBatchSize),
  });
  // The web console's static files (docs/ui.md); the console itself calls the services above via Connect.
  const ui = createUiHandler();
  const handler = (...[req, res]: Parameters<typeof connectUnary>): void => {
    if (ui.matches(req.url)) {
      ui.handle(req, res).catch((error: unknown) =>
        log.error("console file failed", { path: req.url, error }),
      );
      return;
    }
    if (!connectUnary(req, res)) connectNode(req, res);
  };

  const worker = options.worker === undefined ? undefined : String(options.worker);
  const grpcTransport = createGrpcTransport({
    services,
    interceptors,
    observe,
    maxReceiveMessageBytes: rpcReadMaxBytes(config.maxBatchSize),
    maxConcurrentStreams: config.http2MaxStreams,
    responseHeaders: {
      "x-content-type-options": "nosniff",
      ...(worker === undefined ? {} : { "x-bikeshare-worker": worker }),
    },
  });
  const front = createFrontServer(
    worker === undefined
      ? handler
      : (req, res) => {
          res.setHeader("x-bikeshare-worker", worker);
          handler(req, res);
        },
    config,
    log,
    () => metrics.connectionsRejected.inc(),
    (serve) => grpcTransport.http2Target(serve),
  );
  const port = await front.listen(config.port, config.host);
  log.info("serving", {
    host: config.host,
    port,
    role: config.role,
    protocols: ["connect", "grpc", "grpc-web", "rest"],
  });

  return {
    port,
    metrics,
    registry: state.registry,
    live: serving.live,
    async close() {
      // NOT_SERVING while draining (as /readyz answers 503), and Watch streams end now instead of holding
      // the close until its grace period cuts them.
      health.close();
      await front.close(config.drainMs);
      await control?.close();
      await serving.close();
      await state.close();
      await stopTracing();
    },
  };
}

interface State {
  db: SqlDatabase;
  registry: Registry;
  tokens: TokenBook;
  /** Who runs the once-per-deployment work; always this process on the embedded database. */
  leadership: Leadership;
  close(): Promise<void>;
}

/** The database, the registry on it, the tokens and the leader election: what every role opens first. */
async function openState(config: ServerConfig, log: Logger, metrics: Metrics): Promise<State> {
  const where = config.databaseUrl === undefined ? { path: config.dbPath } : {};
  const db = await openDatabase(config, {
    // A replica of an older or newer build must not change the schema under the control plane.
    schemaChanges: config.role !== "predict",
    // Serving goes on without writes; training and the prediction log wait for space.
    onWritable: (writable, error) => {
      metrics.storeWritable.set(writable ? 1 : 0);
      if (writable) log.info("the database takes writes again", where);
      else log.error("the database cannot be written: free space on its disk", { ...where, error });
    },
  });
  metrics.storeWritable.set(1);
  let registry: Registry;
  let book: TokenBook;
  let leadership: Leadership;
  try {
    registry = await Registry.open(db, config.modelsDir);
    const tokens = await loadOrCreateTokens(config.tokensPath, config.adminTokenPath);
    book = tokens.book;
    if (tokens.createdAdminToken) log.info("created a local admin token", { file: config.adminTokenPath });
    // A predict replica never leads; control processes on a shared database elect one of them.
    leadership =
      config.databaseUrl === undefined
        ? soleLeader()
        : config.role === "predict"
          ? notLeader()
          : await AdvisoryLockLeadership.start(config.databaseUrl, log);
  } catch (error) {
    await db.close().catch(() => undefined);
    throw error;
  }
  metrics.controlLeader.set(leadership.isLeader ? 1 : 0);
  leadership.onChange((leader) => metrics.controlLeader.set(leader ? 1 : 0));
  return {
    db,
    registry,
    tokens: book,
    leadership,
    async close() {
      await leadership.close();
      await db.close();
    },
  };
}

async function startParts(
  config: ServerConfig,
  log: Logger,
  metrics: Metrics,
  state: State,
  options: { bootstrap?: boolean },
): Promise<{ serving: Serving; control: ControlPlane | undefined }> {
  const serving = await startServing(config, log, metrics, state);
  try {
    const control =
      config.role === "predict"
        ? undefined
        : await startControlPlane(config, log, metrics, state, serving, options);
    return { serving, control };
  } catch (error) {
    await serving.close().catch(() => undefined);
    throw error;
  }
}

interface Serving {
  live: LiveModel;
  predictionLog: PredictionLog;
  onServed: OnServed;
  /** The shared database's notification session, which the control plane's jobs use too. */
  notifications?: DatabaseNotifications;
  close(): Promise<void>;
}

/** The model behind `production` and the prediction log: what Predict and the REST routes serve from. */
async function startServing(
  config: ServerConfig,
  log: Logger,
  metrics: Metrics,
  state: State,
): Promise<Serving> {
  const predictionLog = await PredictionLog.open(state.db, {
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
  const onServed: OnServed = ({ requestId, model, records, hourStarts, predictions, interval }) => {
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
          ...(interval
            ? {
                lower: interval.lower[row] as number,
                upper: interval.upper[row] as number,
                intervalLevel: interval.level,
              }
            : {}),
        };
      }),
    );
  };

  const live = new LiveModel(state.registry, config.modelName, "production", config.ortThreads, log, metrics);
  await live.start();
  // Other processes move the alias on a shared database: a NOTIFY makes the swap quick, the poll sure.
  const notifications = config.databaseUrl === undefined ? undefined : listenOnDatabase(config.databaseUrl);
  if (notifications) {
    const reload = () => void live.reload();
    notifications.listen(ALIAS_MOVES_CHANNEL, reload, reload);
    live.follow(ALIAS_POLL_MS);
  }
  return {
    live,
    predictionLog,
    onServed,
    ...(notifications ? { notifications } : {}),
    async close() {
      await notifications?.close();
      await live.stop();
      await predictionLog.close();
    },
  };
}

interface ControlPlane {
  reports: DriftReports;
  startScoring: StartScoring;
  services: ServedService[];
  close(): Promise<void>;
}

/**
 * Jobs and their queue, the monitoring schedule, the bootstrap and the Train, Registry and Monitor
 * services. Every control process serves the RPCs and runs the jobs it accepts; only the leader
 * resumes unfinished jobs, bootstraps and runs the scheduled checks (and the retraining they decide).
 */
async function startControlPlane(
  config: ServerConfig,
  log: Logger,
  metrics: Metrics,
  state: State,
  serving: Serving,
  options: { bootstrap?: boolean },
): Promise<ControlPlane> {
  const { db, registry, leadership } = state;
  const { live, predictionLog } = serving;
  const jobs = await JobStore.open(db);
  // On a shared database a job's events and cancels reach every control process, whichever runs it.
  const { notifications } = serving;
  const events = notifications ? sharedJobEvents(notifications, jobs) : new JobEvents();
  const across = notifications ? new CancelsAcrossProcesses(notifications, jobs) : undefined;
  const actuals = await Actuals.open(db);
  const reports = await DriftReports.open(db, registry);
  const estimates = new PerformanceEstimates(registry, reports, config.modelName, log);
  // Drift and accuracy problems persist for days: one alert per rule and version a day is enough.
  const alerts = await AlertStore.open(db, { cooldownMs: 24 * 3_600_000 });
  const smtp = smtpFromEnv();
  const notifier = smtp ? new Notifier(smtp, log) : undefined;
  if (!notifier) log.info("e-mail notifications are off: SMTP_HOST is not set");

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
  const runJob = jobRunner(
    { jobs, events, log, onFinished },
    jobHandlers({
      registry,
      executor,
      modelName: config.modelName,
      dataPath: config.dataPath,
      nthread: config.trainThreads,
      scoringDir: config.scoringDir,
    }),
  );
  // On a shared database a job another live process runs is skipped here (a new leader resumes every
  // unfinished job, including those).
  const ownership =
    config.databaseUrl === undefined
      ? soleOwner()
      : new AdvisoryJobOwnership(config.databaseUrl, (error) =>
          log.error("lost the job-lock session: another process may start this one's running jobs again", {
            error,
          }),
        );
  const queue = new InProcessQueue(
    async (jobId, signal) => {
      const run = () => runJob(jobId, signal);
      const cancellable = across ? () => across.follow(jobId, () => queue.cancel(jobId), run) : run;
      if (!(await ownership.run(jobId, cancellable)))
        log.info("job skipped: another process runs it", { job_id: jobId });
    },
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

  // Jobs accepted before a crash or restart run again; a retried job never registers twice. The
  // queue ignores a job it already holds, so gaining the leadership again resumes nothing twice here.
  const takeOver = async () => {
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
  };
  if (leadership.isLeader) await takeOver();
  const stopFollowing = leadership.onChange((leader) => {
    if (leader)
      takeOver().catch((error: unknown) => log.error("taking over the control plane failed", { error }));
  });

  const policy: MonitorPolicy = {
    ...DEFAULT_MONITOR_POLICY,
    rmseFactor: config.rmseFactor,
    retrainCooldownMs: config.retrainCooldownDays * 86_400_000,
    retrainMaxAgeMs: config.retrainMaxAgeDays * 86_400_000,
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
          estimates,
          publicUrl: config.publicUrl,
        },
        now,
        allowRetrain,
      );
    });
  const scheduledCheck = async () => {
    log.info("scheduled monitoring check", { pid: process.pid });
    await check(Date.now(), config.autoRetrain).then(
      () => {},
      (error: unknown) => log.error("scheduled check failed", { error }),
    );
  };
  const interval = config.checkIntervalSeconds * 1000;
  // Every control process keeps the timer and only the leader acts on a tick, so a new leader needs
  // no setup. A BullMQ job scheduler already runs each period once among all the processes sharing
  // its Redis, in whichever one takes the job: there the leader must not be required.
  const schedule =
    interval > 0 && !config.redisUrl
      ? setInterval(async () => {
          if (leadership.isLeader && (await leadership.confirm())) await scheduledCheck();
        }, interval).unref()
      : undefined;
  const bullSchedule =
    interval > 0 && config.redisUrl
      ? await scheduleRepeating(config.redisUrl, "monitoring-check", interval, scheduledCheck, onQueueError)
      : undefined;

  return {
    reports,
    startScoring: startScoringHandler({ jobs, queue, scoringDir: config.scoringDir }),
    services: [
      served(
        TrainService,
        createTrainService({
          jobs,
          queue,
          events,
          ...(across ? { across } : {}),
          defaultExperiment: config.experiment,
        }),
      ),
      served(RegistryService, createRegistryService(registry)),
      served(
        MonitorService,
        createMonitorService({
          actuals,
          reports,
          alerts,
          check,
          production: () => registry.getModelVersion(config.modelName, "production"),
          policy,
          flushLog: () => predictionLog.flush(),
          estimates,
          rmseThreshold: async (modelVersion) => {
            const version = await registry.getModelVersion(config.modelName, modelVersion);
            if (!version) return undefined;
            const card = JSON.parse(
              (await registry.readArtifact(version.runId, ARTIFACT_CARD)).toString("utf8"),
            ) as ModelCard;
            const test = card.metrics.test_rmse;
            return test === undefined ? undefined : policy.rmseFactor * test;
          },
        }),
      ),
    ],
    async close() {
      stopFollowing();
      if (schedule) clearInterval(schedule);
      await bullSchedule?.close();
      // A job interrupted by shutdown is queued again for the next start, not marked cancelled.
      await queue.close(SHUTDOWN);
      await ownership.close();
      await executor.close();
      notifier?.close();
    },
  };
}

/** The services a predict replica leaves to the control plane. */
const CONTROL_SERVICES = [TrainService, RegistryService, MonitorService] as const;

/**
 * A predict replica answers the control plane's RPCs itself, with `unimplemented` and where to go,
 * instead of forwarding them: no hidden hop that fails in ways the caller cannot see, and a load
 * balancer already routes by path (docs/deployment.md, "Roles").
 */
function notHere(name: string, config: ServerConfig): ConnectError {
  const where = config.controlUrl
    ? ` at ${config.controlUrl}`
    : " (a process started with --role control or all)";
  return new ConnectError(
    `${name} is not served by this predict replica (bikeshare serve --role predict): the control plane serves it${where}`,
    Code.Unimplemented,
  );
}

function refuse(method: DescMethod, config: ServerConfig): StartScoring {
  return async () => {
    throw notHere(`${method.parent.typeName}/${method.name}`, config);
  };
}

function refuseAll(service: DescService, config: ServerConfig): ServiceImpl<DescService> {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const error = () => notHere(`${service.typeName}/${method.name}`, config);
    impl[method.localName] =
      method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming"
        ? // biome-ignore lint/correctness/useYield: it refuses before its first message
          async function* () {
            throw error();
          }
        : async () => {
            throw error();
          };
  }
  return impl as ServiceImpl<DescService>;
}
