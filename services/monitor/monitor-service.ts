import { type Timestamp, timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { FeatureDriftResult } from "../../core/drift/index.js";
import { BikeshareError } from "../../core/errors.js";
import type { FieldViolation } from "../../core/features/index.js";
import {
  AlertRule,
  DriftTest,
  type MonitorService,
  type TimeWindow,
} from "../../gen/bikeshare/v1/monitor_pb.js";
import { invalidArgument } from "../errors.js";
import { pageOf, pageResult } from "../paging.js";
import type { ModelVersion } from "../registry/registry.js";
import { timestampField } from "../timestamp.js";
import type { Actuals, Window } from "./actuals.js";
import type { AlertRecord, AlertStore } from "./alerts.js";
import type { CheckResult, MonitorPolicy } from "./checks.js";
import type { DriftReport, DriftReports } from "./drift-reports.js";
import type { PerformanceEstimates } from "./performance-estimates.js";

const HOUR_MS = 3_600_000;
const MAX_ACTUALS_PER_CALL = 100_000;

export function windowFromProto(window: TimeWindow | undefined, field = "window"): Window {
  const violations: FieldViolation[] = [];
  const from = timestampField(window?.from, `${field}.from`, violations);
  const until = timestampField(window?.to, `${field}.to`, violations);
  if (from !== undefined && until !== undefined && from >= until) {
    violations.push({ field: `${field}.to`, type: "range", description: "must be after window.from" });
  }
  if (violations.length > 0) throw invalidArgument(violations);
  return { ...(from !== undefined ? { from } : {}), ...(until !== undefined ? { until } : {}) };
}

export interface MonitorDeps {
  actuals: Actuals;
  reports: DriftReports;
  alerts: AlertStore;
  check: (now: number, allowRetrain: boolean) => Promise<CheckResult>;
  /** The production version and the policy's window length, for reports computed on request. */
  production: () => Promise<ModelVersion | undefined>;
  policy: MonitorPolicy;
  /** Writes buffered predictions, so that a read sees every prediction served before it. */
  flushLog: () => Promise<void>;
  /** Label-free RMSE estimates per version (absent: GetPerformance reports none). */
  estimates?: PerformanceEstimates;
  /** The RMSE above which a version's live_rmse / estimated_rmse rules alert, if known. */
  rmseThreshold?: (modelVersion: string) => Promise<number | undefined>;
}

const TEST: Record<string, DriftTest> = {
  ks: DriftTest.KOLMOGOROV_SMIRNOV,
  chisquare: DriftTest.CHI_SQUARE,
  z: DriftTest.Z,
  wasserstein: DriftTest.WASSERSTEIN,
  jensenshannon: DriftTest.JENSEN_SHANNON,
};
const RULE: Record<string, AlertRule> = {
  dataset_drift: AlertRule.DATASET_DRIFT,
  live_rmse: AlertRule.LIVE_RMSE,
  prediction_drift: AlertRule.PREDICTION_DRIFT,
  estimated_rmse: AlertRule.ESTIMATED_RMSE,
};

function featureToProto(f: FeatureDriftResult) {
  return {
    feature: f.feature,
    test: TEST[f.test] ?? DriftTest.UNSPECIFIED,
    statistic: f.statistic,
    threshold: f.threshold,
    drifted: f.drifted,
    psi: f.psi,
  };
}

export function reportToProto(r: DriftReport) {
  return {
    id: r.id,
    modelVersion: r.modelVersion,
    window: {
      ...(r.window.from !== undefined ? { from: timestampFromMs(r.window.from) } : {}),
      ...(r.window.until !== undefined ? { to: timestampFromMs(r.window.until) } : {}),
    },
    referenceRows: r.referenceRows,
    currentRows: r.currentRows,
    features: r.dataset.features.map(featureToProto),
    driftedShare: r.dataset.driftedShare,
    datasetDrift: r.dataset.datasetDrift,
    predictionDrift: featureToProto(r.prediction),
    createdAt: timestampFromDate(r.createdAt),
    htmlPath: `/reports/${r.id}`,
    ...(r.seasonal
      ? {
          seasonalDriftedShare: r.seasonal.driftedShare,
          seasonalDatasetDrift: r.seasonal.datasetDrift,
          unseenCalendarFeatures: r.seasonal.unseenCalendar,
          seasonalReferenceMonths: r.seasonal.referenceMonths,
          seasonalFeatures: r.seasonal.features.map(featureToProto),
        }
      : {}),
  };
}

function alertToProto(a: AlertRecord) {
  return {
    id: a.id,
    rule: RULE[a.rule] ?? AlertRule.UNSPECIFIED,
    message: a.message,
    value: a.value,
    threshold: a.threshold,
    time: timestampFromDate(a.time),
    jobId: a.jobId ?? "",
  };
}

export function createMonitorService(deps: MonitorDeps): ServiceImpl<typeof MonitorService> {
  return {
    async reportActuals(req) {
      if (req.actuals.length > MAX_ACTUALS_PER_CALL) {
        throw invalidArgument([
          {
            field: "actuals",
            type: "range",
            description: `has ${req.actuals.length} entries; the limit per call is ${MAX_ACTUALS_PER_CALL}`,
          },
        ]);
      }
      const violations: FieldViolation[] = [];
      const parsed = req.actuals.map((a, i) => {
        const hour: Timestamp | undefined = a.hour;
        if (!hour) {
          violations.push({
            field: `actuals[${i}].hour`,
            type: "missing",
            description: "is required: the start of the hour",
          });
          return { hourStart: 0, cnt: a.cnt };
        }
        const ms = timestampField(hour, `actuals[${i}].hour`, violations);
        if (ms === undefined) return { hourStart: 0, cnt: a.cnt };
        if (ms % HOUR_MS !== 0) {
          violations.push({
            field: `actuals[${i}].hour`,
            type: "range",
            description: `must be the start of an hour (minutes, seconds and nanos 0), got ${new Date(ms).toISOString()}`,
          });
        }
        return { hourStart: ms, cnt: a.cnt };
      });
      if (violations.length > 0) throw invalidArgument(violations);
      await deps.flushLog();
      return deps.actuals.report(parsed);
    },

    async getDriftReport(req) {
      if (req.reportId !== "") {
        const report = await deps.reports.get(req.reportId);
        if (!report) throw new BikeshareError("not_found", `no drift report ${req.reportId}`);
        return { report: reportToProto(report) };
      }
      await deps.flushLog();
      const version = await deps.production();
      if (!version) throw new BikeshareError("failed_precondition", "no model has the production alias yet");
      const window = windowFromProto(req.window);
      const until = window.until ?? Date.now();
      const from = window.from ?? until - deps.policy.windowHours * 3_600_000;
      // Too few logged predictions in the window rejects with NotEnoughData: failed_precondition.
      const report = await deps.reports.compute({
        version,
        window: { from, until },
        minRows: deps.policy.minDriftRows,
        thresholds: deps.policy.thresholds,
      });
      return { report: reportToProto(report) };
    },

    async listReports(req) {
      const page = pageOf(req.pageSize, req.pageToken, 1000, { list: "reports" });
      const { items, nextPageToken } = pageResult(await deps.reports.list(page.limit + 1, page.offset), page);
      return { reports: items.map(reportToProto), nextPageToken };
    },

    async listAlerts(req) {
      const window = windowFromProto(req.window);
      const page = pageOf(req.pageSize, req.pageToken, 1000, { list: "alerts", window });
      const alerts = await deps.alerts.list({
        ...(window.from !== undefined ? { from: new Date(window.from) } : {}),
        ...(window.until !== undefined ? { until: new Date(window.until) } : {}),
        limit: page.limit + 1,
        offset: page.offset,
      });
      const { items, nextPageToken } = pageResult(alerts, page);
      return { alerts: items.map(alertToProto), nextPageToken };
    },

    async runCheck(req) {
      const window = windowFromProto(req.window);
      const result = await deps.check(window.until ?? Date.now(), req.allowRetrain);
      return {
        ...(result.report ? { report: reportToProto(result.report) } : {}),
        alerts: result.alerts.map(alertToProto),
        retrainJobId: result.retrainJobId ?? "",
        estimatedRmse: result.estimate?.rmse ?? 0,
        estimatedRmseThreshold: result.estimate?.threshold ?? 0,
      };
    },

    async getPerformance(req) {
      await deps.flushLog();
      const window = windowFromProto(req.window);
      const versions = await deps.actuals.performance(window);
      const estimates = deps.estimates ? await deps.estimates.forWindow(window) : new Map();
      // A version whose hours are served but not yet labelled is listed with its estimate alone:
      // that is when the estimate matters.
      const names = [...new Set([...versions.map((v) => v.modelVersion), ...estimates.keys()])].sort(
        (a, b) => Number(a) - Number(b),
      );
      return {
        versions: await Promise.all(
          names.map(async (name) => {
            const v = versions.find((x) => x.modelVersion === name);
            const e = estimates.get(name);
            return {
              modelVersion: name,
              labelledHours: v?.labelledHours ?? 0,
              rmse: v?.rmse ?? 0,
              mae: v?.mae ?? 0,
              within20pct: v?.within20 ?? 0,
              intervals: v?.intervals ?? [],
              estimatedRmse: e?.rmse ?? 0,
              estimatedMae: e?.mae ?? 0,
              estimatedHours: e?.rows ?? 0,
              rmseThreshold: (await deps.rmseThreshold?.(name)) ?? 0,
            };
          }),
        ),
      };
    },
  };
}
