import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export const JOB_KINDS = ["train", "score"] as const;
export const JOB_OUTCOMES = ["succeeded", "failed", "cancelled"] as const;
/**
 * The `rule` label values of bikeshare_alerts_total, which are the rules the monitor raises:
 * services/monitor/alerts.ts takes its rule type from here, so metrics depend on no feature module.
 */
export const ALERT_RULES = ["dataset_drift", "live_rmse", "prediction_drift", "estimated_rmse"] as const;

/**
 * Every metric a bikeshare process (server or worker) exports, on one registry served at /metrics.
 *
 * Under `serve --workers N` the primary adds up the workers' registries (prom-client's
 * AggregatorRegistry): counters and histograms are summed; a gauge that states something rather than
 * counting it (which model is served, drift figures) takes `aggregator: "max"`, and writability "min".
 */
export class Metrics {
  readonly registry = new Registry();

  private renderText: () => Promise<string> = () => this.registry.metrics();

  /** The text GET /metrics answers: this process's registry, unless `setRender` replaced it. */
  render(): Promise<string> {
    return this.renderText();
  }

  /** A worker of `serve --workers N` answers /metrics with the sum over every worker, which its primary holds. */
  setRender(render: () => Promise<string>): void {
    this.renderText = render;
  }

  readonly servingProcesses = new Gauge({
    name: "bikeshare_serving_processes",
    help: "Serving processes behind this port: 1 in each, summed over the workers of serve --workers N.",
    registers: [this.registry],
  });

  readonly stateStale = new Gauge({
    name: "bikeshare_state_stale",
    aggregator: "max",
    help: "1 while the registry cannot be read (or the version an alias names cannot be loaded): the process keeps serving the model it has, which may no longer be the one the alias names.",
    registers: [this.registry],
  });

  readonly controlLeader = new Gauge({
    name: "bikeshare_control_leader",
    aggregator: "max",
    help: "1 in the control process that runs scheduled checks, retraining decisions, job resumption and the bootstrap (one per deployment, elected through the database).",
    registers: [this.registry],
  });

  /** Latency of every call, whatever the protocol: connect, grpc, grpc-web or rest (legacy routes). */
  readonly requestDuration = new Histogram({
    name: "bikeshare_request_duration_seconds",
    help: "Time to answer a request, by service, method, result code and protocol.",
    labelNames: ["service", "method", "code", "protocol"] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly requests = new Counter({
    name: "bikeshare_requests_total",
    help: "Requests answered, by service, method, result code and protocol.",
    labelNames: ["service", "method", "code", "protocol"] as const,
    registers: [this.registry],
  });

  readonly predictions = new Counter({
    name: "bikeshare_predictions_total",
    help: "Rows predicted, by model version.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly modelInfo = new Gauge({
    aggregator: "max",
    name: "bikeshare_model_info",
    help: "1 for the model version being served.",
    labelNames: ["model", "version", "alias"] as const,
    registers: [this.registry],
  });

  readonly modelTestRmse = new Gauge({
    aggregator: "max",
    name: "bikeshare_model_test_rmse",
    help: "Test RMSE recorded in the model card of the version being served.",
    labelNames: ["model", "version", "alias"] as const,
    registers: [this.registry],
  });

  /** Its _count by outcome is the count of job outcomes: no separate counter is needed. */
  readonly jobs = new Histogram({
    name: "bikeshare_job_duration_seconds",
    help: "Wall time of jobs, by kind (train, score) and outcome (succeeded, failed, cancelled).",
    labelNames: ["kind", "outcome"] as const,
    buckets: [1, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });

  readonly predictionLogDropped = new Counter({
    name: "bikeshare_prediction_log_dropped_total",
    help: "Predictions that could not be logged (buffer full or write refused).",
    registers: [this.registry],
  });

  readonly predictionLogUnspooled = new Counter({
    name: "bikeshare_prediction_log_unspooled_total",
    help: "Predictions answered while the prediction-log spool could not be written: a crash before their database write loses them.",
    registers: [this.registry],
  });

  readonly connectionsRejected = new Counter({
    name: "bikeshare_connections_rejected_total",
    help: "New connections closed on accept because BIKESHARE_MAX_CONNECTIONS connections were open.",
    registers: [this.registry],
  });

  readonly queueErrors = new Counter({
    name: "bikeshare_queue_errors_total",
    help: "Errors reported by the job queue's Redis clients (BullMQ), by component; a Redis outage shows here.",
    labelNames: ["component"] as const,
    registers: [this.registry],
  });

  readonly storeWritable = new Gauge({
    aggregator: "min",
    name: "bikeshare_store_writable",
    help: "1 while the database file takes writes; 0 after a write failed because its disk is full or read-only, until writes succeed with space free again.",
    registers: [this.registry],
  });

  readonly predictionLogWritten = new Counter({
    name: "bikeshare_prediction_log_written_total",
    help: "Predictions written to the prediction log.",
    registers: [this.registry],
  });

  readonly driftShare = new Gauge({
    aggregator: "max",
    name: "bikeshare_drift_share",
    help: "Share of features drifted in the last drift check (0 to 1).",
    registers: [this.registry],
  });

  readonly datasetDrift = new Gauge({
    aggregator: "max",
    name: "bikeshare_dataset_drift",
    help: "1 when the last drift check found dataset drift.",
    registers: [this.registry],
  });

  readonly predictionDrift = new Gauge({
    aggregator: "max",
    name: "bikeshare_prediction_drift",
    help: "1 when the last drift check found drift in the predictions.",
    registers: [this.registry],
  });

  readonly featureDrift = new Gauge({
    aggregator: "max",
    name: "bikeshare_feature_drift_statistic",
    help: "Drift statistic of each feature in the last check: p-value (ks, chisquare, z) or distance (wasserstein, jensenshannon).",
    labelNames: ["feature", "test"] as const,
    registers: [this.registry],
  });

  readonly featureDrifted = new Gauge({
    aggregator: "max",
    name: "bikeshare_feature_drifted",
    help: "1 when the feature drifted in the last check (its test's threshold was crossed).",
    labelNames: ["feature"] as const,
    registers: [this.registry],
  });

  readonly driftCheckTime = new Gauge({
    aggregator: "max",
    name: "bikeshare_drift_check_timestamp_seconds",
    help: "Unix time at which the last drift report was computed.",
    registers: [this.registry],
  });

  readonly liveRmse = new Gauge({
    aggregator: "max",
    name: "bikeshare_live_rmse",
    help: "RMSE of the production version over the labelled hours of the last check's window.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly liveRmseThreshold = new Gauge({
    aggregator: "max",
    name: "bikeshare_live_rmse_threshold",
    help: "Live RMSE above which the server raises a live_rmse alert: BIKESHARE_RMSE_FACTOR x the version's test RMSE.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly liveLabelledHours = new Gauge({
    aggregator: "max",
    name: "bikeshare_live_labelled_hours",
    help: "Hours of the last check's window that have both a prediction and an actual count.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly alerts = new Counter({
    name: "bikeshare_alerts_total",
    help: "Alerts raised (after de-duplication), by rule.",
    labelNames: ["rule"] as const,
    registers: [this.registry],
  });

  private readonly queueDepthSources = new Map<string, () => number | Promise<number>>();

  readonly queueDepth = new Gauge({
    name: "bikeshare_queue_depth",
    help: "Jobs waiting or running, by queue; for prediction_log, entries not yet written.",
    labelNames: ["queue"] as const,
    registers: [this.registry],
    // Read at scrape time, so the figure is never stale. A depth that cannot be read (Redis down)
    // is left out rather than failing the whole scrape or showing an old figure.
    collect: async () => {
      await Promise.all(
        [...this.queueDepthSources].map(async ([queue, depth]) => {
          try {
            this.queueDepth.set({ queue }, await depth());
          } catch {
            this.queueDepth.remove({ queue });
          }
        }),
      );
    },
  });

  /** `depth` may be async, e.g. a count of BullMQ jobs in Redis. */
  trackQueueDepth(queue: string, depth: () => number | Promise<number>): void {
    this.queueDepthSources.set(queue, depth);
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "bikeshare_" });
    this.servingProcesses.set(1);
    // A series that first appears at 1 hides that first event from rate() and increase(), so the
    // job-failure alert would miss the first failure: every known label set starts at zero.
    for (const kind of JOB_KINDS) for (const outcome of JOB_OUTCOMES) this.jobs.zero({ kind, outcome });
    for (const rule of ALERT_RULES) this.alerts.inc({ rule }, 0);
  }

  readonly estimatedRmse = new Gauge({
    aggregator: "max",
    name: "bikeshare_estimated_rmse",
    help: "RMSE of the production version over the last check's window estimated from its inputs before the actual counts arrive (direct loss estimation).",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly seasonalDriftShare = new Gauge({
    aggregator: "max",
    name: "bikeshare_seasonal_drift_share",
    help: "Share of non-calendar features drifted against the seasonal reference in the last drift check (what the dataset_drift rule judges).",
    registers: [this.registry],
  });

  readonly unseenCalendarFeatures = new Gauge({
    aggregator: "max",
    name: "bikeshare_unseen_calendar_features",
    help: "Calendar features (e.g. yr) whose values in the last check's window the production version never saw in training.",
    registers: [this.registry],
  });

  readonly estimatedRmseThreshold = new Gauge({
    aggregator: "max",
    name: "bikeshare_estimated_rmse_threshold",
    help: "Threshold of the estimated_rmse rule for the production version: MonitorPolicy.estimatedRmseFactor (1.25) x the estimator's own estimate over the version's test window.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  /** Replaces the estimate (and its threshold) of any version served before. */
  setEstimatedRmse(modelVersion: string, rmse: number, threshold?: number): void {
    this.estimatedRmse.reset();
    this.estimatedRmse.set({ model_version: modelVersion }, rmse);
    this.estimatedRmseThreshold.reset();
    if (threshold !== undefined) this.estimatedRmseThreshold.set({ model_version: modelVersion }, threshold);
  }

  /** Live accuracy of the production version, replacing the figures of any version served before. */
  readonly liveIntervalCoverage = new Gauge({
    aggregator: "max",
    name: "bikeshare_live_interval_coverage",
    help: "Share of the labelled hours of the last check's window whose count fell inside the interval the production version served at `level` (interval_level).",
    labelNames: ["model_version", "level"] as const,
    registers: [this.registry],
  });

  readonly liveIntervalHours = new Gauge({
    aggregator: "max",
    name: "bikeshare_live_interval_labelled_hours",
    help: "Labelled hours behind bikeshare_live_interval_coverage.",
    labelNames: ["model_version", "level"] as const,
    registers: [this.registry],
  });

  /** Replaces the interval coverage series: a level no longer asked for must not keep its old value. */
  setLiveIntervalCoverage(
    modelVersion: string,
    levels: readonly { level: number; coverage: number; labelledHours: number }[],
  ): void {
    this.liveIntervalCoverage.reset();
    this.liveIntervalHours.reset();
    for (const l of levels) {
      const labels = { model_version: modelVersion, level: String(l.level) };
      this.liveIntervalCoverage.set(labels, l.coverage);
      this.liveIntervalHours.set(labels, l.labelledHours);
    }
  }

  setLiveAccuracy(modelVersion: string, rmse: number, labelledHours: number, threshold?: number): void {
    for (const gauge of [this.liveRmse, this.liveRmseThreshold, this.liveLabelledHours]) gauge.reset();
    const labels = { model_version: modelVersion };
    this.liveRmse.set(labels, rmse);
    this.liveLabelledHours.set(labels, labelledHours);
    if (threshold !== undefined) this.liveRmseThreshold.set(labels, threshold);
  }

  observe(service: string, method: string, code: string, protocol: string, seconds: number): void {
    const labels = { service, method, code, protocol };
    this.requestDuration.observe(labels, seconds);
    this.requests.inc(labels);
  }
}
