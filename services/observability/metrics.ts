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

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "bikeshare_" });
  }

  observe(service: string, method: string, code: string, protocol: string, seconds: number): void {
    const labels = { service, method, code, protocol };
    this.requestDuration.observe(labels, seconds);
    this.requests.inc(labels);
  }
}
