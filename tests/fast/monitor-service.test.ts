import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlertRule, MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { errorInterceptor } from "../../services/errors.js";
import { JobStore } from "../../services/jobs/store.js";
import { Actuals } from "../../services/monitor/actuals.js";
import { AlertStore } from "../../services/monitor/alerts.js";
import { DEFAULT_MONITOR_POLICY, runCheck } from "../../services/monitor/checks.js";
import { DriftReports } from "../../services/monitor/drift-reports.js";
import { createMonitorService } from "../../services/monitor/monitor-service.js";
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { createLogger } from "../../services/observability/log.js";
import { Metrics } from "../../services/observability/metrics.js";
import { createPredictService } from "../../services/predict/predict-service.js";
import type { ServingModel } from "../../services/predict/serving-model.js";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { violationsOf } from "../helpers/rpc-errors.js";
import { conditionsAt, loadTinyModel, TINY_AFTERNOON, TINY_MORNING } from "../helpers/tiny-model.js";

// MonitorService (with PredictService feeding its prediction log) over connect's in-memory transport
// and an in-memory DuckDB: the monitoring path from a served prediction to live accuracy, without a server.

const MODEL = "tiny";
let dir: string;
let db: Database;
let model: ServingModel;
let log: PredictionLog;
let alerts: AlertStore;
let monitor: ReturnType<typeof createClient<typeof MonitorService>>;
let predict: ReturnType<typeof createClient<typeof PredictService>>;

const hourOf = (hr: number) => timestampFromDate(new Date(Date.UTC(2012, 6, 11, hr + 4)));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-fast-monitor-"));
  db = await Database.open(":memory:");
  const registry = await Registry.open(db, join(dir, "models"));
  const jobs = await JobStore.open(db);
  const actuals = await Actuals.open(db);
  const reports = await DriftReports.open(db, registry);
  alerts = await AlertStore.open(db);
  log = await PredictionLog.open(db);
  model = await loadTinyModel(registry, MODEL);
  const policy = DEFAULT_MONITOR_POLICY;
  const check = (now: number, allowRetrain: boolean) =>
    runCheck(
      {
        registry,
        modelName: MODEL,
        experiment: "fast-tests",
        actuals,
        reports,
        alerts,
        jobs,
        enqueue: async () => {},
        metrics: new Metrics(),
        log: createLogger({}, "warn", () => {}),
        policy,
        publicUrl: "http://127.0.0.1:1",
      },
      now,
      allowRetrain,
    );
  const transport = createRouterTransport(
    (router) => {
      router.service(
        PredictService,
        createPredictService(
          { current: model },
          ({ requestId, model: m, records, hourStarts, predictions }) =>
            log.log(
              records.map((record, row) => ({
                requestId,
                row,
                modelVersion: m.version,
                record,
                prediction: predictions[row] as number,
                servedAt: Date.now(),
                ...(hourStarts[row] !== undefined ? { hourStart: hourStarts[row] } : {}),
              })),
            ),
          { maxBatchSize: 100 },
          async () => {
            throw new ConnectError("not used here", Code.Unimplemented);
          },
        ),
      );
      router.service(
        MonitorService,
        createMonitorService({
          actuals,
          reports,
          alerts,
          check,
          production: () => registry.getModelVersion(MODEL, "production"),
          policy,
          flushLog: () => log.flush(),
        }),
      );
    },
    { router: { interceptors: [errorInterceptor()] } },
  );
  monitor = createClient(MonitorService, transport);
  predict = createClient(PredictService, transport);
});

afterAll(async () => {
  await log?.close();
  await model?.retire();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("MonitorService (in-memory transport)", () => {
  it("refuses actuals without an hour or off the start of an hour, naming each, and stores none of them", async () => {
    const bad = violationsOf(
      await monitor
        .reportActuals({
          actuals: [
            { hour: hourOf(8), cnt: 5 },
            { cnt: 7 },
            { hour: timestampFromDate(new Date(Date.UTC(2012, 6, 11, 12, 30))), cnt: 9 },
          ],
        })
        .catch((e: unknown) => e),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(["actuals[1].hour", "actuals[2].hour"]);
    expect(bad.descriptions[1]).toBe(
      "must be the start of an hour (minutes, seconds and nanos 0), got 2012-07-11T12:30:00.000Z",
    );
    // Nothing of the refused call was kept: the same hour reported now is accepted as new and unmatched.
    expect(await monitor.reportActuals({ actuals: [{ hour: hourOf(8), cnt: 5 }] })).toMatchObject({
      accepted: 1,
      unmatched: 1,
    });
  });

  it("joins served predictions with the actuals reported later into live accuracy per version", async () => {
    const res = await predict.predictBatch({ rows: [conditionsAt(9, true), conditionsAt(17, true)] });
    expect(res.predictions).toEqual([TINY_MORNING, TINY_AFTERNOON]);
    // No flush in between: the service flushes the log so that this read sees what was served.
    const reported = await monitor.reportActuals({
      actuals: [
        { hour: hourOf(9), cnt: TINY_MORNING + 30 },
        { hour: hourOf(17), cnt: TINY_AFTERNOON - 30 },
        { hour: hourOf(20), cnt: 1 },
      ],
    });
    expect(reported).toMatchObject({ accepted: 3, unmatched: 1 });
    const { versions } = await monitor.getPerformance({
      window: { from: hourOf(9), to: hourOf(18) },
    });
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ modelVersion: model.version, labelledHours: 2, rmse: 30, mae: 30 });
    expect(versions[0]?.within20pct).toBe(0.5);
  });

  it("answers not_found for an unknown report, failed_precondition with no production model, and names a reversed window", async () => {
    const missing = await monitor.getDriftReport({ reportId: "no-such-report" }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConnectError);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
    expect((missing as ConnectError).rawMessage).toContain("no-such-report");

    const noProduction = await monitor.getDriftReport({}).catch((e: unknown) => e);
    expect((noProduction as ConnectError).code).toBe(Code.FailedPrecondition);

    const reversed = { from: hourOf(12), to: hourOf(10) };
    for (const call of [
      () => monitor.getPerformance({ window: reversed }),
      () => monitor.listAlerts({ window: reversed }),
      () => monitor.runCheck({ window: reversed }),
    ]) {
      const error = violationsOf(await call().catch((e: unknown) => e));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.fields).toEqual(["window.to"]);
    }
  });

  it("lists alerts newest first with their rule, page by page", async () => {
    for (const [i, rule] of (["live_rmse", "dataset_drift", "prediction_drift"] as const).entries()) {
      await alerts.raise({
        rule,
        message: `${rule} fired`,
        value: i + 1,
        threshold: 1,
        modelVersion: model.version,
        now: new Date(Date.UTC(2012, 6, 12, i)),
      });
    }
    const first = await monitor.listAlerts({ pageSize: 2 });
    expect(first.alerts.map((a) => a.rule)).toEqual([AlertRule.PREDICTION_DRIFT, AlertRule.DATASET_DRIFT]);
    expect(first.nextPageToken).not.toBe("");
    const second = await monitor.listAlerts({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.alerts.map((a) => [a.rule, a.message])).toEqual([[AlertRule.LIVE_RMSE, "live_rmse fired"]]);
    expect(second.nextPageToken).toBe("");
  });

  it("runs a check that finds nothing to judge while no version has the production alias", async () => {
    const result = await monitor.runCheck({ allowRetrain: true });
    expect(result.report).toBeUndefined();
    expect(result.alerts).toEqual([]);
    expect(result.retrainJobId).toBe("");
  });
});
