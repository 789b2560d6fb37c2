/**
 * Performance estimated before the actuals arrive, over Connect: GetPerformance lists a version
 * whose served hours are not labelled yet with its estimated RMSE (direct loss estimation fitted on
 * the model's test window), the threshold of the RMSE rules, and — once the actuals arrive — the
 * realised RMSE beside it; a check exports the estimate as a Prometheus gauge.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, QUICK_REQUEST, startTestServer, type TestServer } from "../helpers/server.js";

const rows = readHourCsvRecords();
const hourOf = (row: Record<string, number | string>) =>
  instantOfLocalHour(dayNumber(row.dteday as string), row.hr as number).getTime();
const day = (iso: string) => instantOfLocalHour(dayNumber(iso), 0).getTime();
const between = (from: string, until: string) =>
  rows.filter((r) => (r.dteday as string) >= from && (r.dteday as string) < until);

describe("estimated performance over Connect", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({}, { seedRequest: { ...QUICK_REQUEST, dataUntil: "2012-06-01" } });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("estimates a week's RMSE before its actuals, then shows the realised RMSE beside it", async () => {
    const monitor = connectClient(t.baseUrl, MonitorService, t.tokens.trainer);
    const predict = connectClient(t.baseUrl, PredictService, t.tokens.trainer);
    const week = between("2012-07-01", "2012-07-08");
    const served = await predict.predictBatch({
      rows: week.map((r) => ({
        ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
        hour: timestampFromMs(hourOf(r)),
      })),
    });
    const window = { from: timestampFromMs(day("2012-07-01")), to: timestampFromMs(day("2012-07-08")) };

    const before = await monitor.getPerformance({ window });
    const v = before.versions.find((x) => x.modelVersion === served.modelVersion);
    expect(v?.labelledHours).toBe(0);
    expect(v?.estimatedHours).toBe(week.length);
    expect(v?.estimatedRmse).toBeGreaterThan(5);
    expect(v?.estimatedMae).toBeGreaterThan(0);
    expect(v?.estimatedMae).toBeLessThanOrEqual(v?.estimatedRmse as number);
    expect(v?.rmseThreshold).toBeGreaterThan(0);

    await monitor.reportActuals({
      actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
    });
    const after = await monitor.getPerformance({ window });
    const w = after.versions.find((x) => x.modelVersion === served.modelVersion);
    expect(w?.labelledHours).toBe(week.length);
    expect(w?.estimatedRmse).toBe(v?.estimatedRmse);
    // Same order of magnitude as what happened: a July week like those the model was tested on.
    expect(w?.estimatedRmse).toBeGreaterThan((w?.rmse as number) / 3);
    expect(w?.estimatedRmse).toBeLessThan((w?.rmse as number) * 3);

    const check = await monitor.runCheck({ window, allowRetrain: false });
    expect(check.estimatedRmse).toBeCloseTo(v?.estimatedRmse as number, 6);
    // The estimated_rmse rule's own threshold (1.25 × the estimator's estimate over the test window),
    // exported beside the estimate for BikeshareEstimatedRmseHigh.
    expect(check.estimatedRmseThreshold).toBeGreaterThan(1);
    expect(check.report?.seasonalReferenceMonths).toContain(7);
    const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(`bikeshare_estimated_rmse\\{model_version="${served.modelVersion}"\\} \\d`),
    );
    expect(metrics).toMatch(/bikeshare_seasonal_drift_share \d/);
    const gauge = new RegExp(
      `bikeshare_estimated_rmse_threshold\\{model_version="${served.modelVersion}"\\} ([\\d.e+-]+)`,
    ).exec(metrics);
    expect(Number(gauge?.[1])).toBeCloseTo(check.estimatedRmseThreshold, 6);
  });
});
