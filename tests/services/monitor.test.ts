import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { rmse } from "../../core/metrics/index.js";
import { AlertRule, MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import { BACKENDS, type Backend, testPostgres } from "../helpers/backends.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, QUICK_REQUEST, startTestServer, type TestServer } from "../helpers/server.js";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtp.js";

const rows = readHourCsvRecords();
const savedEnv = { ...process.env };

/** The same server-level checks on each storage backend: the embedded file and a PostgreSQL database. */
async function storage(backend: Backend): Promise<Partial<ServerConfig>> {
  return backend.name === "postgres" ? { databaseUrl: await (await testPostgres()).createDatabase() } : {};
}

const hourOf = (row: Record<string, number | string>) =>
  instantOfLocalHour(dayNumber(row.dteday as string), row.hr as number).getTime();
const day = (iso: string) => instantOfLocalHour(dayNumber(iso), 0).getTime();
const between = (from: string, until: string) =>
  rows.filter((r) => (r.dteday as string) >= from && (r.dteday as string) < until);
const conditionsOf = (r: Record<string, number | string>, overrides: Record<string, number> = {}) => ({
  ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
  ...overrides,
  hour: timestampFromMs(hourOf(r)),
});

describe.each(BACKENDS)("monitoring on $name", (backend) => {
  let t: TestServer;
  let smtp: TestSmtpServer;

  beforeAll(async () => {
    smtp = await startSmtpServer();
    Object.assign(process.env, {
      SMTP_HOST: smtp.host,
      SMTP_PORT: String(smtp.port),
      ALERT_EMAIL_TO: "fleet-ops@example.com",
    });
    // A model whose data ends 2012-06-01, so that checks in July and August see it as old enough to retrain.
    t = await startTestServer(await storage(backend), {
      seedRequest: { ...QUICK_REQUEST, dataUntil: "2012-06-01" },
    });
  });
  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
    process.env = { ...savedEnv };
  });

  function clients(token: string) {
    return {
      monitor: connectClient(t.baseUrl, MonitorService, token),
      predict: connectClient(t.baseUrl, PredictService, token),
      train: connectClient(t.baseUrl, TrainService, token),
    };
  }

  describe("prediction log, actuals and live accuracy", () => {
    it("joins actuals to logged predictions by hour and reports RMSE per version", async () => {
      const { monitor, predict } = clients(t.tokens.trainer);
      const week = between("2012-07-01", "2012-07-08");
      const res = await predict.predictBatch({ rows: week.map((r) => conditionsOf(r)) });
      const early = await monitor.reportActuals({
        actuals: between("2012-07-08", "2012-07-09").map((r) => ({
          hour: timestampFromMs(hourOf(r)),
          cnt: r.cnt as number,
        })),
      });
      expect(early).toMatchObject({ accepted: 24, unmatched: 24 });
      const report = await monitor.reportActuals({
        actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
      });
      expect(report).toMatchObject({ accepted: week.length, unmatched: 0 });

      await expect
        .poll(
          async () =>
            (
              await monitor.getPerformance({
                window: { from: timestampFromMs(day("2012-07-01")), to: timestampFromMs(day("2012-07-08")) },
              })
            ).versions[0]?.labelledHours,
        )
        .toBe(week.length);
      const { versions } = await monitor.getPerformance({
        window: { from: timestampFromMs(day("2012-07-01")), to: timestampFromMs(day("2012-07-08")) },
      });
      expect(versions).toHaveLength(1);
      expect(versions[0]?.modelVersion).toBe("1");
      expect(versions[0]?.rmse).toBeCloseTo(
        rmse(
          week.map((r) => r.cnt as number),
          res.predictions,
        ),
        6,
      );
    });

    it("rejects actuals that are not at the start of an hour, naming the entry", async () => {
      const { monitor } = clients(t.tokens.trainer);
      const error = await monitor
        .reportActuals({ actuals: [{ hour: timestampFromMs(day("2012-07-01") + 90_000), cnt: 3 }] })
        .catch((e) => e);
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.message).toContain("actuals[0].hour must be the start of an hour");
    });
  });

  describe("drift reports", () => {
    it("stores a report per request and serves it as a page with one chart per feature", async () => {
      const { monitor } = clients(t.tokens.reader);
      const { report } = await monitor.getDriftReport({
        window: { from: timestampFromMs(day("2012-07-01")), to: timestampFromMs(day("2012-07-08")) },
      });
      expect(report?.currentRows).toBe(168);
      expect(report?.features.length).toBeGreaterThan(10);
      const yr = report?.features.find((f) => f.feature === "yr");
      expect(yr?.drifted).toBe(true); // every July 2012 hour has yr = 1; most training hours have yr = 0
      const html = await (await fetch(`${t.baseUrl}${report?.htmlPath}`)).text();
      expect(html.match(/<svg class="chart"/g)?.length).toBe((report?.features.length ?? 0) + 1);
      const { reports } = await monitor.listReports({});
      expect(reports.map((r) => r.id)).toContain(report?.id);
      expect((await fetch(`${t.baseUrl}/reports/no-such-report`)).status).toBe(404);
    });
  });

  describe("rules, alerts, e-mail and retraining", () => {
    it("a drifted, inaccurate week raises de-duplicated alerts, sends e-mail and retrains through the gate", async () => {
      const { monitor, predict, train } = clients(t.tokens.trainer);
      // August hours under conditions far from any training hour: heavy rain, full humidity, storm wind,
      // and no working day all week (the traffic mix changes too). The dataset_drift rule weighs drifted
      // features by the model's importance, so weather alone (about a quarter of it) would not page;
      // with workingday_hr, which the model leans on, it does.
      const week = between("2012-08-01", "2012-08-08");
      await predict.predictBatch({
        rows: week.map((r) =>
          conditionsOf(r, { weathersit: 4, hum: 1, windspeed: 0.85, temp: 0.98, atemp: 1, workingday: 0 }),
        ),
      });
      await monitor.reportActuals({
        actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
      });

      const window = { from: timestampFromMs(day("2012-08-01")), to: timestampFromMs(day("2012-08-08")) };
      const first = await monitor.runCheck({ window, allowRetrain: true });
      const rules = first.alerts.map((a) => a.rule);
      expect(rules).toContain(AlertRule.DATASET_DRIFT);
      expect(rules).toContain(AlertRule.LIVE_RMSE);
      expect(first.retrainJobId).not.toBe("");

      const again = await monitor.runCheck({ window, allowRetrain: true });
      expect(again.alerts).toEqual([]);
      expect(again.retrainJobId).toBe("");

      for await (const _ of train.watchJob({ jobId: first.retrainJobId })) {
        // until the retraining ends
      }
      const { job } = await train.getJob({ jobId: first.retrainJobId });
      expect(job?.state).toBe(JobState.SUCCEEDED);
      expect(job?.reason).toMatch(/^auto: (performance|drift)/);
      expect(job?.modelVersion).toBe("2");

      const { alerts } = await monitor.listAlerts({});
      expect(alerts.length).toBe(first.alerts.length);
      expect(alerts.some((a) => a.jobId === first.retrainJobId)).toBe(true);

      const mails = await smtp.waitForMessages(first.alerts.length + 1);
      const subjects = mails.map((m) => m.subject);
      expect(subjects.some((s) => s.includes("dataset drift on model version 1"))).toBe(true);
      expect(subjects.some((s) => s.includes("live rmse on model version 1"))).toBe(true);
      await expect
        .poll(() => smtp.messages.some((m) => m.subject.includes("training job succeeded")))
        .toBe(true);
      const drift = mails.find((m) => m.subject.includes("dataset drift"));
      expect(drift?.html).toContain("/reports/");
      expect(drift?.envelope.to).toEqual(["fleet-ops@example.com"]);

      const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
      expect(metrics).toMatch(/bikeshare_dataset_drift 1/);
      expect(metrics).toMatch(/bikeshare_live_rmse\{model_version="1"\} \d/);
      expect(metrics).toMatch(/bikeshare_alerts_total\{rule="dataset_drift"\} 1/);
      expect(metrics).toMatch(/bikeshare_prediction_log_written_total [1-9]/);
    });
  });
});
