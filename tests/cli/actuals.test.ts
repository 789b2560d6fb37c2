/**
 * `bikeshare actuals FILE` (pipelines/data/actuals-file.ts) through the real CLI against a real
 * server: CSV, Parquet and Arrow files become labelled hours the server counts in GetPerformance;
 * a bad file is refused as a whole, naming the column or the row.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DuckDBInstance } from "@duckdb/node-api";
import { Int32, Table, TimestampMillisecond, tableToIPC, vectorFromArray } from "apache-arrow";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { rmse } from "../../core/metrics/index.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { runCli } from "../helpers/cli.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
let dir: string;
const records = readHourCsvRecords();

beforeAll(async () => {
  t = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), "bikeshare-actuals-"));
});
afterAll(async () => {
  await t?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Hour {
  dteday: string;
  hr: number;
  /** Start of the hour (Washington time), ms since the epoch. */
  start: number;
  cnt: number;
}

/** The hours of hour.csv from `from` (inclusive) to `to` (exclusive). */
function hoursOf(from: string, to: string): (Hour & { row: Record<string, number | string> })[] {
  return records
    .filter((r) => (r.dteday as string) >= from && (r.dteday as string) < to)
    .map((r) => ({
      dteday: r.dteday as string,
      hr: r.hr as number,
      start: instantOfLocalHour(dayNumber(r.dteday as string), r.hr as number).getTime(),
      cnt: r.cnt as number,
      row: r,
    }));
}

const windowOf = (from: string, to: string) => ({
  from: timestampFromMs(instantOfLocalHour(dayNumber(from), 0).getTime()),
  to: timestampFromMs(instantOfLocalHour(dayNumber(to), 0).getTime()),
});

/** Forecasts of those hours, logged by the server with each hour's timestamp. */
async function predict(hours: ReturnType<typeof hoursOf>): Promise<number[]> {
  const { predictions } = await connectClient(t.baseUrl, PredictService).predictBatch({
    rows: hours.map((h) => ({
      ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, h.row[f] as number])),
      hour: timestampFromMs(h.start),
    })),
  });
  return predictions;
}

async function performance(from: string, to: string) {
  const { versions } = await connectClient(t.baseUrl, MonitorService, t.tokens.reader).getPerformance({
    window: windowOf(from, to),
  });
  return versions;
}

function actualsCli(file: string) {
  return runCli(["actuals", file, "--json"], {
    ...process.env,
    BIKESHARE_URL: t.baseUrl,
    BIKESHARE_TOKEN: t.tokens.trainer,
  });
}

/** Reports `file` through the CLI and checks what the server then knows about [from, to). */
async function expectLabelled(
  file: string,
  reported: { accepted: number; unmatched: number },
  from: string,
  to: string,
  hours: readonly Hour[],
  predictions: readonly number[],
): Promise<void> {
  const result = await actualsCli(file);
  expect(result.code, result.stderr).toBe(0);
  expect(JSON.parse(result.stdout)).toEqual(reported);
  const versions = await performance(from, to);
  expect(versions.map((v) => [v.modelVersion, v.labelledHours])).toEqual([["1", hours.length]]);
  expect(versions[0]?.rmse).toBeCloseTo(
    rmse(
      hours.map((h) => h.cnt),
      predictions,
    ),
    3,
  );
}

async function writeWithDuckDb(sql: string): Promise<void> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    await connection.run(sql);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

describe("bikeshare actuals", () => {
  it("reports a CSV of dteday, hr and cnt; hours nobody forecast are counted as unmatched", async () => {
    const hours = hoursOf("2012-10-01", "2012-10-04");
    const predictions = await predict(hours);
    const unforecast = hoursOf("2012-11-20", "2012-11-21");
    const file = join(dir, "counts.csv");
    await writeFile(
      file,
      `dteday,hr,cnt\n${[...hours, ...unforecast].map((h) => `${h.dteday},${h.hr},${h.cnt}`).join("\n")}\n`,
    );
    await expectLabelled(
      file,
      { accepted: hours.length + unforecast.length, unmatched: unforecast.length },
      "2012-10-01",
      "2012-10-04",
      hours,
      predictions,
    );
  });

  it("reports a Parquet file with an hour timestamp column", async () => {
    const hours = hoursOf("2012-10-08", "2012-10-11");
    const predictions = await predict(hours);
    const file = join(dir, "counts.parquet");
    const values = hours.map((h) => `(epoch_ms(${h.start}::BIGINT), ${h.cnt})`).join(", ");
    await writeWithDuckDb(
      `COPY (SELECT * FROM (VALUES ${values}) v(hour, cnt)) TO '${file}' (FORMAT parquet)`,
    );
    await expectLabelled(
      file,
      { accepted: hours.length, unmatched: 0 },
      "2012-10-08",
      "2012-10-11",
      hours,
      predictions,
    );
  });

  it("reports an Arrow IPC file with an hour timestamp column", async () => {
    const hours = hoursOf("2012-10-15", "2012-10-18");
    const predictions = await predict(hours);
    const file = join(dir, "counts.arrow");
    const table = new Table({
      hour: vectorFromArray(
        hours.map((h) => new Date(h.start)),
        new TimestampMillisecond(),
      ),
      cnt: vectorFromArray(
        hours.map((h) => h.cnt),
        new Int32(),
      ),
    });
    await writeFile(file, tableToIPC(table, "file"));
    await expectLabelled(
      file,
      { accepted: hours.length, unmatched: 0 },
      "2012-10-15",
      "2012-10-18",
      hours,
      predictions,
    );
  });

  it("refuses a bad file as a whole, naming the column or the row, and reports nothing of it", async () => {
    const hours = hoursOf("2012-10-22", "2012-10-23");
    await predict(hours);
    const good = hours.map((h) => `${h.dteday},${h.hr},${h.cnt}`);
    const at = (lines: string[], i: number, line: string) => lines.map((l, k) => (k === i ? line : l));
    const cases: [string, string, string][] = [
      ["no-cnt.csv", `dteday,hr,count\n${good.join("\n")}\n`, "needs a column cnt"],
      [
        "no-hour.csv",
        `day,hr,cnt\n${good.join("\n")}\n`,
        "needs either a column hour (timestamp) or the columns dteday and hr",
      ],
      [
        "negative.csv",
        `dteday,hr,cnt\n${at(good, 2, "2012-10-22,2,-4").join("\n")}\n`,
        "row 3: cnt must be a non-negative integer, got -4",
      ],
      ["empty-cnt.csv", `dteday,hr,cnt\n${at(good, 1, "2012-10-22,1,").join("\n")}\n`, "row 2: cnt is empty"],
      [
        "bad-hr.csv",
        `dteday,hr,cnt\n${at(good, 4, "2012-10-22,24,17").join("\n")}\n`,
        "row 5: hr must be an integer in 0..23, got 24",
      ],
      [
        "bad-day.csv",
        `dteday,hr,cnt\n${at(good, 1, "yesterday,1,17").join("\n")}\n`,
        'row 2: dteday must be a date YYYY-MM-DD, got "yesterday"',
      ],
      [
        "half-hour.csv",
        `hour,cnt\n${new Date(hours[0]?.start as number).toISOString()},5\n2012-10-22T05:30:00Z,6\n`,
        "row 2: hour must be the start of an hour, got 2012-10-22T05:30:00.000Z",
      ],
    ];
    for (const [name, content, message] of cases) {
      const file = join(dir, name);
      await writeFile(file, content);
      const result = await actualsCli(file);
      expect([name, result.code], result.stdout).toEqual([name, 1]);
      expect(result.stderr).toContain(`bikeshare: ${file}: ${message}`);
    }
    const missing = await actualsCli(join(dir, "nope.csv"));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`bikeshare: ${join(dir, "nope.csv")}: no such file`);
    // Not one row of the refused files reached the server: no hour of the window is labelled (a version
    // that served it may still be listed, with its label-free estimate).
    expect((await performance("2012-10-22", "2012-10-23")).every((v) => v.labelledHours === 0)).toBe(true);
  });
});
