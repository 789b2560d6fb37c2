import type { DriftThresholds } from "../../core/drift/index.js";
import type { JobStore } from "../jobs/store.js";
import type { Logger } from "../observability/log.js";
import type { Metrics } from "../observability/metrics.js";
import { ARTIFACT_CARD, type ModelCard } from "../registry/model-card.js";
import type { Registry } from "../registry/registry.js";
import type { Actuals } from "./actuals.js";
import type { AlertRecord, AlertRule, AlertStore } from "./alerts.js";
import { type DriftReport, type DriftReports, NotEnoughData } from "./drift-reports.js";
import type { Notifier } from "./notifier.js";

export interface MonitorPolicy {
  /** Length of the current window that checks look at, ending at the check's time. */
  windowHours: number;
  /** Live RMSE rule: alert when RMSE over the window > factor × the model's test RMSE … */
  rmseFactor: number;
  /** … and only with at least this many labelled hours in the window. */
  minLabelledHours: number;
  /** Fewest logged predictions a drift report needs. */
  minDriftRows: number;
  /** Rules whose violation starts a retraining. */
  retrainOn: AlertRule[];
  /**
   * A retraining starts only when the production model's data ends at least this long before
   * the check: the challenger then holds out the most recent `retrainTestDays` (which the champion
   * has not seen either) to be judged on, and has `retrainValidDays` more of new data to learn from.
   */
  retrainCooldownMs: number;
  retrainValidDays: number;
  retrainTestDays: number;
  /** Families and search trials of automatic retrainings (kept small: they run while serving). */
  retrainFamilies: string[];
  retrainTrials: number;
  thresholds: Partial<DriftThresholds>;
}

export const DEFAULT_MONITOR_POLICY: MonitorPolicy = {
  windowHours: 7 * 24,
  rmseFactor: 1.5,
  minLabelledHours: 72,
  minDriftRows: 48,
  retrainOn: ["live_rmse", "dataset_drift"],
  retrainCooldownMs: 28 * 24 * 3_600_000,
  retrainValidDays: 14,
  retrainTestDays: 14,
  retrainFamilies: ["gbtree"],
  retrainTrials: 0,
  thresholds: {},
};

export interface CheckResult {
  report?: DriftReport;
  alerts: AlertRecord[];
  retrainJobId?: string;
}

export interface CheckDeps {
  registry: Registry;
  modelName: string;
  experiment: string;
  actuals: Actuals;
  reports: DriftReports;
  alerts: AlertStore;
  jobs: JobStore;
  enqueue: (jobId: string) => Promise<void>;
  notifier?: Notifier;
  metrics: Metrics;
  log: Logger;
  policy: MonitorPolicy;
  /** Base URL for links in e-mails, e.g. http://bikeshare:8080. */
  publicUrl: string;
}

const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/**
 * One monitoring pass at time `now` (wall time, or simulated time in a replay): drift and
 * live accuracy over the window ending at `now`, alerts for violated rules (de-duplicated
 * within the alert cooldown), e-mail, Prometheus gauges, and — when allowed — a retraining on
 * all labelled data up to `now`, whose result reaches production only through the gate.
 */
export async function runCheck(deps: CheckDeps, now: number, allowRetrain: boolean): Promise<CheckResult> {
  const { policy, metrics } = deps;
  const production = await deps.registry.getModelVersion(deps.modelName, "production");
  if (!production) return { alerts: [] };
  const card = JSON.parse(
    (await deps.registry.readArtifact(production.runId, ARTIFACT_CARD)).toString("utf8"),
  ) as ModelCard;
  const window = { from: now - policy.windowHours * 3_600_000, until: now };
  const violations: { rule: AlertRule; message: string; value: number; threshold: number }[] = [];

  let report: DriftReport | undefined;
  try {
    report = await deps.reports.compute({
      version: production,
      window,
      minRows: policy.minDriftRows,
      thresholds: policy.thresholds,
    });
  } catch (error) {
    if (!(error instanceof NotEnoughData)) throw error;
    deps.log.debug("drift check skipped", { reason: error.message });
  }
  if (report) {
    metrics.driftCheckTime.set(Date.now() / 1000);
    metrics.driftShare.set(report.dataset.driftedShare);
    metrics.datasetDrift.set(report.dataset.datasetDrift ? 1 : 0);
    metrics.predictionDrift.set(report.prediction.drifted ? 1 : 0);
    metrics.featureDrift.reset(); // a feature whose test changed must not keep its old series
    for (const f of report.dataset.features) {
      metrics.featureDrift.set({ feature: f.feature, test: f.test }, f.statistic);
      metrics.featureDrifted.set({ feature: f.feature }, f.drifted ? 1 : 0);
    }
    if (report.dataset.datasetDrift) {
      const drifted = report.dataset.features.filter((f) => f.drifted).map((f) => f.feature);
      violations.push({
        rule: "dataset_drift",
        message: `${drifted.length} of ${report.dataset.features.length} features drifted (${drifted.join(", ")})`,
        value: report.dataset.driftedShare,
        threshold: policy.thresholds.datasetShare ?? 0.5,
      });
    }
    if (report.prediction.drifted) {
      violations.push({
        rule: "prediction_drift",
        message: `the distribution of predictions drifted (${report.prediction.test} ${report.prediction.statistic.toPrecision(3)})`,
        value: report.prediction.statistic,
        threshold: report.prediction.threshold,
      });
    }
  }

  const live = (await deps.actuals.performance(window)).find((v) => v.modelVersion === production.version);
  const testRmse = card.metrics.test_rmse;
  const limit = testRmse === undefined ? undefined : policy.rmseFactor * testRmse;
  if (live) metrics.setLiveAccuracy(production.version, live.rmse, live.labelledHours, limit);
  metrics.setLiveIntervalCoverage(production.version, live?.intervals ?? []);
  if (
    live &&
    testRmse !== undefined &&
    limit !== undefined &&
    live.labelledHours >= policy.minLabelledHours
  ) {
    if (live.rmse > limit) {
      violations.push({
        rule: "live_rmse",
        message: `live RMSE ${live.rmse.toFixed(1)} over ${live.labelledHours} labelled hours is above ${policy.rmseFactor} × test RMSE ${testRmse.toFixed(1)}`,
        value: live.rmse,
        threshold: limit,
      });
    }
  }

  const raised: AlertRecord[] = [];
  for (const v of violations) {
    const alert = await deps.alerts.raise({ ...v, modelVersion: production.version, now: new Date(now) });
    if (!alert) continue;
    raised.push(alert);
    metrics.alerts.inc({ rule: v.rule });
    deps.log.warn("monitoring rule violated", {
      rule: v.rule,
      message: v.message,
      model_version: production.version,
    });
    if (deps.notifier) {
      try {
        await deps.notifier.send({
          kind:
            v.rule === "live_rmse"
              ? "performance"
              : v.rule === "dataset_drift"
                ? "drift"
                : "prediction_drift",
          subject: `${v.rule.replace("_", " ")} on model version ${production.version}`,
          summary: v.message,
          facts: {
            model_version: production.version,
            value: v.value,
            threshold: v.threshold,
            window_end: new Date(now).toISOString(),
          },
          ...(report ? { link: `${deps.publicUrl}/reports/${report.id}` } : {}),
        });
        await deps.alerts.markNotified(alert.id);
      } catch (error) {
        deps.log.error("alert e-mail failed", { rule: v.rule, error });
      }
    }
  }

  let retrainJobId: string | undefined;
  const trigger = raised.find((a) => policy.retrainOn.includes(a.rule));
  if (allowRetrain && trigger) {
    const recent = (await deps.jobs.list({ limit: 20, offset: 0 })).flatMap((j) =>
      j.kind === "train" ? [j] : [],
    );
    const busy = recent.some((j) => j.state === "queued" || j.state === "running");
    const lastAuto = recent.find((j) => j.request.reason.startsWith("auto:"));
    const lastAutoUntil = lastAuto?.request.dataUntil
      ? Date.parse(lastAuto.request.dataUntil)
      : Number.NEGATIVE_INFINITY;
    if (!busy && now - lastAutoUntil >= policy.retrainCooldownMs) {
      const { job } = await deps.jobs.create(
        {
          experiment: deps.experiment,
          families: policy.retrainFamilies,
          objectives: [],
          paramOverrides: {},
          trials: policy.retrainTrials,
          dataUntil: isoDay(now),
          validDays: policy.retrainValidDays,
          testDays: policy.retrainTestDays,
          reason: `auto: ${trigger.rule === "live_rmse" ? "performance" : "drift"} — ${trigger.message}`,
        },
        "monitor",
      );
      await deps.enqueue(job.id);
      await deps.alerts.attachJob(trigger.id, job.id);
      retrainJobId = job.id;
      deps.log.info("retraining started by a monitoring rule", { job_id: job.id, rule: trigger.rule });
    }
  }
  return { ...(report ? { report } : {}), alerts: raised, ...(retrainJobId ? { retrainJobId } : {}) };
}
