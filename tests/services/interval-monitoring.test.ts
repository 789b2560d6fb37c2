/**
 * Intervals after they are served: stored in the prediction log (both storage backends, the schema
 * migrated to hold them), joined to actuals for GetPerformance's live coverage, and exported as the
 * Prometheus gauge the BikeshareIntervalCoverageLow rule reads.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import type { ServerConfig } from "../../services/config.js";
import { Actuals } from "../../services/monitor/actuals.js";
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { Database } from "../../services/storage/database.js";
import { BACKENDS, type Backend, testPostgres } from "../helpers/backends.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

const rows = readHourCsvRecords();
const hourOf = (row: Record<string, number | string>) =>
  instantOfLocalHour(dayNumber(row.dteday as string), row.hr as number).getTime();
const day = (iso: string) => instantOfLocalHour(dayNumber(iso), 0).getTime();
const week = rows.filter((r) => (r.dteday as string) >= "2012-07-01" && (r.dteday as string) < "2012-07-08");
const inputOf = (r: Record<string, number | string>) =>
  Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number]));

async function storage(backend: Backend): Promise<Partial<ServerConfig>> {
  return backend.name === "postgres" ? { databaseUrl: await (await testPostgres()).createDatabase() } : {};
}

describe.each(BACKENDS)("interval coverage on $name", (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(await storage(backend));
  }, 240_000);
  afterAll(async () => {
    await t?.stop();
  });

  it("POST /model/reload needs no token when tokens are not required (the old API's behaviour)", async () => {
    const res = await fetch(`${t.baseUrl}/model/reload`, { method: "POST" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["message", "model_name", "model_stage", "timestamp"]);
    expect(body.model_name).toBe("bike-demand");
  });

  it("logs each interval, reports its live coverage per level in GetPerformance and as a gauge", async () => {
    const predict = connectClient(t.baseUrl, PredictService, t.tokens.trainer);
    const monitor = connectClient(t.baseUrl, MonitorService, t.tokens.trainer);
    const res = await predict.predictBatch({
      rows: week.map((r) => ({ ...inputOf(r), hour: timestampFromMs(hourOf(r)) })),
      intervalLevel: 0.9,
    });
    expect(res.lower).toHaveLength(week.length);
    // One hour through the legacy route at its default 95%, and the same hour without an interval.
    const first = week[0] as Record<string, number | string>;
    const legacy = await fetch(`${t.baseUrl}/predict/confidence`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...inputOf(first), timestamp: new Date(hourOf(first)).toISOString() }),
    });
    expect(legacy.status).toBe(200);
    const confidence = (await legacy.json()) as {
      confidence_intervals: { lower: number[]; upper: number[] };
    };
    await predict.predict({ conditions: { ...inputOf(first), hour: timestampFromMs(hourOf(first)) } });

    await monitor.reportActuals({
      actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
    });
    const window = { from: timestampFromMs(day("2012-07-01")), to: timestampFromMs(day("2012-07-08")) };
    const { versions } = await monitor.getPerformance({ window });
    expect(versions).toHaveLength(1);
    const intervals = versions[0]?.intervals ?? [];
    expect(intervals.map((i) => i.level)).toEqual([0.9, 0.95]);
    // The same answer over gRPC.
    const grpcMonitor = createClient(MonitorService, createGrpcTransport({ baseUrl: t.baseUrl }));
    const viaGrpc = await grpcMonitor.getPerformance(
      { window },
      { headers: { authorization: `Bearer ${t.tokens.trainer}` } },
    );
    expect(viaGrpc.versions[0]?.intervals).toEqual(intervals);

    // Computed here from the bounds the client received and the counts it reported.
    let covered = 0;
    let width = 0;
    week.forEach((r, i) => {
      const y = r.cnt as number;
      if (y >= (res.lower[i] as number) && y <= (res.upper[i] as number)) covered++;
      width += (res.upper[i] as number) - (res.lower[i] as number);
    });
    const at90 = intervals[0];
    expect(at90?.labelledHours).toBe(week.length);
    expect(at90?.coverage).toBeCloseTo(covered / week.length, 9);
    expect(at90?.meanWidth).toBeCloseTo(width / week.length, 6);
    const at95 = intervals[1];
    expect(at95?.labelledHours).toBe(1);
    const y = first.cnt as number;
    const inside =
      y >= (confidence.confidence_intervals.lower[0] as number) &&
      y <= (confidence.confidence_intervals.upper[0] as number);
    expect(at95?.coverage).toBe(inside ? 1 : 0);

    await monitor.runCheck({ window, allowRetrain: false });
    const metrics = await (await fetch(`${t.baseUrl}/metrics`)).text();
    const line = metrics
      .split("\n")
      .find((l) => l.startsWith('bikeshare_live_interval_coverage{model_version="1",level="0.9"}'));
    expect(line, metrics.slice(0, 2000)).toBeDefined();
    expect(Number(line?.split(" ").at(-1))).toBeCloseTo(covered / week.length, 9);
    expect(metrics).toContain(
      `bikeshare_live_interval_labelled_hours{model_version="1",level="0.9"} ${week.length}`,
    );
  }, 120_000);
});

describe.each(BACKENDS)("the prediction log's interval columns on $name", (backend) => {
  it("stores lower, upper and level, NULL when no interval was asked for", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bikeshare-ilog-"));
    const db = await backend.open(await backend.create(dir));
    try {
      const log = await PredictionLog.open(db, { spoolDir: join(dir, "spool") });
      const record = inputOf(week[0] as Record<string, number | string>) as never;
      const hourStart = hourOf(week[0] as Record<string, number | string>);
      const base = { modelVersion: "7", record, servedAt: Date.now(), hourStart, prediction: 100 };
      await log.log([
        { ...base, requestId: "with", row: 0, lower: 80, upper: 120, intervalLevel: 0.9 },
        { ...base, requestId: "without", row: 0 },
      ]);
      await log.close();
      const stored = await db.all<{
        request_id: string;
        lower: number | null;
        upper: number | null;
        interval_level: number | null;
      }>("SELECT request_id, lower, upper, interval_level FROM predictions ORDER BY request_id");
      expect(stored.map((r) => [r.request_id, r.lower, r.upper, r.interval_level])).toEqual([
        ["with", 80, 120, 0.9],
        ["without", null, null, null],
      ]);
      const actuals = await Actuals.open(db);
      await actuals.report([{ hourStart, cnt: 130 }]);
      const coverage = await actuals.intervalCoverage();
      expect(coverage.get("7")).toEqual([{ level: 0.9, labelledHours: 1, coverage: 0, meanWidth: 40 }]);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the prediction log's spool", () => {
  it("keeps the interval of an acknowledged prediction through a crash: the replay writes it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bikeshare-ispool-"));
    try {
      const dbPath = join(dir, "log.duckdb");
      const spoolDir = join(dir, "spool");
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [
            "--import",
            "tsx",
            join(import.meta.dirname, "../helpers/interval-spool-child.ts"),
            dbPath,
            spoolDir,
          ],
          { stdio: ["ignore", "pipe", "inherit"] },
        );
        let text = "";
        child.stdout.on("data", (d: Buffer) => {
          text += d.toString();
        });
        child.on("error", reject);
        child.on("exit", (code, signal) =>
          signal === "SIGKILL"
            ? resolve(text)
            : reject(new Error(`child ended with ${code ?? signal}: ${text}`)),
        );
      });
      // Both entries were still in memory only (and in the spool) when the process died.
      expect(out.trim()).toBe("2");
      const db = await Database.open(dbPath);
      try {
        const log = await PredictionLog.open(db, { spoolDir });
        await log.close();
        const stored = await db.all<{
          request_id: string;
          lower: number | null;
          upper: number | null;
          interval_level: number | null;
        }>("SELECT request_id, lower, upper, interval_level FROM predictions ORDER BY request_id");
        expect(stored.map((r) => [r.request_id, r.lower, r.upper, r.interval_level])).toEqual([
          ["with", 250.5, 361.25, 0.8],
          ["without", null, null, null],
        ]);
      } finally {
        await db.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
