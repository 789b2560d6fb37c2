import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Every metric the server exports, on one registry served at /metrics. */
export class Metrics {
  readonly registry = new Registry();

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
    name: "bikeshare_model_info",
    help: "1 for the model version being served.",
    labelNames: ["model", "version", "alias"] as const,
    registers: [this.registry],
  });

  readonly jobs = new Histogram({
    name: "bikeshare_job_duration_seconds",
    help: "Wall time of jobs, by kind and outcome (succeeded, failed, cancelled).",
    labelNames: ["kind", "outcome"] as const,
    buckets: [1, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });

  readonly predictionLogDropped = new Counter({
    name: "bikeshare_prediction_log_dropped_total",
    help: "Predictions that could not be logged (buffer full or write refused).",
    registers: [this.registry],
  });

  readonly predictionLogWritten = new Counter({
    name: "bikeshare_prediction_log_written_total",
    help: "Predictions written to the prediction log.",
    registers: [this.registry],
  });

  readonly driftShare = new Gauge({
    name: "bikeshare_drift_share",
    help: "Share of features drifted in the last drift check (0 to 1).",
    registers: [this.registry],
  });

  readonly datasetDrift = new Gauge({
    name: "bikeshare_dataset_drift",
    help: "1 when the last drift check found dataset drift.",
    registers: [this.registry],
  });

  readonly predictionDrift = new Gauge({
    name: "bikeshare_prediction_drift",
    help: "1 when the last drift check found drift in the predictions.",
    registers: [this.registry],
  });

  readonly featureDrift = new Gauge({
    name: "bikeshare_feature_drift_statistic",
    help: "Drift statistic of each feature in the last check: p-value (ks, chisquare, z) or distance (wasserstein, jensenshannon).",
    labelNames: ["feature", "test"] as const,
    registers: [this.registry],
  });

  readonly liveRmse = new Gauge({
    name: "bikeshare_live_rmse",
    help: "RMSE over labelled hours of the monitoring window, by model version.",
    labelNames: ["model_version"] as const,
    registers: [this.registry],
  });

  readonly alerts = new Counter({
    name: "bikeshare_alerts_total",
    help: "Alerts raised (after de-duplication), by rule.",
    labelNames: ["rule"] as const,
    registers: [this.registry],
  });

  private readonly queueDepthSources = new Map<string, () => number>();

  readonly queueDepth = new Gauge({
    name: "bikeshare_queue_depth",
    help: "Jobs waiting or running, by queue.",
    labelNames: ["queue"] as const,
    registers: [this.registry],
    // Read at scrape time, so the figure is never stale.
    collect: () => {
      for (const [queue, depth] of this.queueDepthSources) this.queueDepth.set({ queue }, depth());
    },
  });

  trackQueueDepth(queue: string, depth: () => number): void {
    this.queueDepthSources.set(queue, depth);
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "bikeshare_" });
  }

  observe(service: string, method: string, code: string, protocol: string, seconds: number): void {
    const labels = { service, method, code, protocol };
    this.requestDuration.observe(labels, seconds);
    this.requests.inc(labels);
  }
}
