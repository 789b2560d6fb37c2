import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { BACKENDS } from "../helpers/backends.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const RECORD = {
  season: 1,
  yr: 0,
  mnth: 1,
  hr: 0,
  holiday: 0,
  weekday: 6,
  workingday: 0,
  weathersit: 1,
  temp: 0.24,
  atemp: 0.2879,
  hum: 0.81,
  windspeed: 0,
};

/** The i-th logged prediction of a test: request r<i>, predicting i. */
const entry = (i: number) => ({
  requestId: `r${i}`,
  row: 0,
  modelVersion: "1",
  record: RECORD,
  prediction: i,
  servedAt: Date.now(),
});

describe.each(BACKENDS)("prediction log buffer on $name", (backend) => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-plog-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("shares one waiting flush among the callers that ask meanwhile, so flushes never pile up", async () => {
    const db = await backend.open(await backend.create(dir));
    try {
      const log = await PredictionLog.open(db, { flushIntervalMs: 60_000 });
      await log.log([entry(1)]);
      const first = log.flush();
      expect(log.flush()).toBe(first);
      await first;
      await log.log([entry(2)]);
      const next = log.flush();
      expect(next).not.toBe(first);
      await next;
      const [row] = await db.all<{ n: number }>("SELECT CAST(count(*) AS INTEGER) AS n FROM predictions");
      expect(Number(row?.n)).toBe(2);
      await log.close();
    } finally {
      await db.close();
    }
  });

  it("counts what overflows the bounded buffer, and flushes the rest on close", async () => {
    const db = await backend.open(await backend.create(dir));
    let droppedSeen = 0;
    const log = await PredictionLog.open(db, {
      capacity: 100,
      batchSize: 1000,
      flushIntervalMs: 60_000,
      onDropped: (n) => (droppedSeen += n),
    });
    for (let i = 0; i < 150; i++) {
      // Not awaited: without a spool, log() has nothing to wait for.
      void log.log([{ ...entry(i), ...(i % 2 ? { hourStart: Date.UTC(2012, 0, 1, i % 24) } : {}) }]);
    }
    expect(log.depth).toBe(100);
    expect(log.dropped).toBe(50);
    expect(droppedSeen).toBe(50);
    await log.close();
    const [row] = await db.all<{ n: number; hours: number }>(
      `SELECT count(*)::INTEGER AS n, count(hour)::INTEGER AS hours FROM predictions`,
    );
    expect(row).toEqual({ n: 100, hours: 50 });
    await db.close();
  });

  it("stores every value exactly as logged, with NULL for an unknown hour", async () => {
    const db = await backend.open(await backend.create(dir));
    const log = await PredictionLog.open(db, { flushIntervalMs: 60_000 });
    const record = { ...RECORD, temp: 0.1 + 0.2, hum: 1 / 3, windspeed: 5e-324 };
    const hourStart = Date.UTC(2012, 6, 4, 21);
    await log.log([
      {
        requestId: 'r"1"',
        row: 3,
        modelVersion: "7",
        record,
        prediction: 123.456789012345,
        servedAt: 1_700_000_000_123,
        hourStart,
      },
      {
        requestId: "r2",
        row: 0,
        modelVersion: "7",
        record: RECORD,
        prediction: -0.5,
        servedAt: 1_700_000_000_124,
      },
    ]);
    await log.close();
    const rows = await db.all<Record<string, unknown>>(
      `SELECT request_id, row_index, epoch_ms(served_at) AS served, epoch_ms(hour) AS hour, temp, hum, windspeed, prediction
       FROM predictions ORDER BY request_id`,
    );
    expect(rows).toEqual([
      {
        request_id: 'r"1"',
        row_index: 3,
        served: 1_700_000_000_123n,
        hour: BigInt(hourStart),
        temp: 0.1 + 0.2,
        hum: 1 / 3,
        windspeed: 5e-324,
        prediction: 123.456789012345,
      },
      {
        request_id: "r2",
        row_index: 0,
        served: 1_700_000_000_124n,
        hour: null,
        temp: RECORD.temp,
        hum: RECORD.hum,
        windspeed: 0,
        prediction: -0.5,
      },
    ]);
    await db.close();
  });

  it("writes a steady trickle in one insert per interval, not one insert per arrival", async () => {
    const db = await backend.open(await backend.create(dir));
    const batches: number[] = [];
    const log = await PredictionLog.open(db, { flushIntervalMs: 100, onWritten: (n) => batches.push(n) });
    for (let i = 0; i < 200; i++) {
      await log.log([entry(i)]);
      await new Promise((r) => setTimeout(r, 2));
    }
    await log.close();
    expect(batches.reduce((a, b) => a + b, 0)).toBe(200);
    // About 200 × 2 ms / 100 ms = 4–6 inserts; writing what arrives during an insert right away made ~100.
    expect(batches.length).toBeLessThanOrEqual(12);
    await db.close();
  });
});

describe("prediction log under load", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t?.stop();
  });

  // Correctness only: the rate and latency it reaches are measured in bench/ (docs/benchmarks.md).
  it("logs every prediction of a steady load exactly once, with no failed request", async () => {
    const body = JSON.stringify(RECORD);
    const report = await new Promise<{
      non2xx: number;
      errors: number;
      timeouts: number;
      "2xx": number;
    }>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          join(import.meta.dirname, "../../node_modules/autocannon/autocannon.js"),
          "--json",
          "-c",
          "8",
          "-d",
          "5",
          "-R",
          "300",
          "-m",
          "POST",
          "-H",
          "content-type=application/json",
          "-b",
          body,
          `${t.baseUrl}/predict`,
        ],
        { stdio: ["ignore", "pipe", "ignore"] },
      );
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.on("error", reject);
      child.on("exit", (code) =>
        code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`autocannon exited ${code}`)),
      );
    });
    expect(report.errors + report.timeouts + report.non2xx).toBe(0);
    expect(report["2xx"]).toBeGreaterThan(0);

    const metrics = async () => {
      const text = await (await fetch(`${t.baseUrl}/metrics`)).text();
      const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
      return {
        // autocannon leaves out replies that arrive after its last second: the server's count is exact.
        served: [...text.matchAll(/^bikeshare_predictions_total\{[^}]*\} (\S+)$/gm)].reduce(
          (sum, m) => sum + Number(m[1]),
          0,
        ),
        written: value("bikeshare_prediction_log_written_total"),
        dropped: value("bikeshare_prediction_log_dropped_total"),
        unspooled: value("bikeshare_prediction_log_unspooled_total"),
      };
    };
    const unwritten = async () => {
      const m = await metrics();
      return m.served - m.written;
    };
    await expect.poll(unwritten, { timeout: 30_000, message: "predictions served but not written" }).toBe(0);
    const m = await metrics();
    expect(m.served).toBeGreaterThanOrEqual(report["2xx"]);
    expect(m).toEqual({ served: m.served, written: m.served, dropped: 0, unspooled: 0 });
  }, 120_000);
});
