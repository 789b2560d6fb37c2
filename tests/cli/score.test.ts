import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { DuckDBInstance } from "@duckdb/node-api";
import { tableFromIPC } from "apache-arrow";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour, RAW_FIELD_NAMES } from "../../core/features/index.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { writeSyntheticInput } from "../../pipelines/scoring/synthetic.js";
import { type CliResult, runCli, runCliInTerminal } from "../helpers/cli.js";
import { readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

const ROWS = 400;
let t: TestServer;
let dir: string;
let csv: string;
let arrow: string;
/** What the server's PredictBatch answers for the same hours: the reference for both scoring paths. */
let served: number[];

function run(args: string[]): Promise<CliResult> {
  return runCli(args, { ...process.env, BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: t.tokens.reader });
}

beforeAll(async () => {
  t = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), "bikeshare-score-cli-"));
  const records = readHourCsvRecords().slice(0, ROWS);
  const cols = [...RAW_FIELD_NAMES, "dteday"];
  const lines = records.map((r) => cols.map((c) => r[c]).join(","));
  lines[9] = lines[9]?.replace(/^1,/, "7,") as string; // row 10: season 7
  csv = join(dir, "in.csv");
  await writeFile(csv, `${cols.join(",")}\n${lines.join("\n")}\n`);
  arrow = join(dir, "in.arrow");
  await writeSyntheticInput(csv, arrow, ROWS);
  const client = createClient(
    PredictService,
    createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" }),
  );
  const { predictions } = await client.predictBatch({
    rows: records.map((r) => ({
      ...Object.fromEntries(RAW_FIELD_NAMES.map((f) => [f, r[f] as number])),
      hour: timestampFromMs(instantOfLocalHour(dayNumber(r.dteday as string), r.hr as number).getTime()),
    })),
  });
  served = predictions;
}, 180_000);

afterAll(async () => {
  await t?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function parquetRows(path: string): Promise<{ row: number; prediction: number }[]> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    const result = await connection.runAndReadAll(
      `SELECT row, prediction FROM read_parquet('${path}') ORDER BY row`,
    );
    return result.getRowObjectsJS() as { row: number; prediction: number }[];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

function expectServed(rows: { row: number; prediction: number }[]) {
  expect(rows.map((r) => r.row)).toEqual(
    Array.from({ length: ROWS }, (_, i) => i + 1).filter((r) => r !== 10),
  );
  for (const r of rows) {
    const want = served[r.row - 1] as number;
    expect(Math.abs(r.prediction - want)).toBeLessThan(1e-3 * Math.max(1, want));
  }
}

describe("bikeshare score", () => {
  it("scores locally with the production model downloaded from the registry, on two threads, rows in order", async () => {
    const out = join(dir, "local.parquet");
    // Small chunks over two threads: chunks come back from two sessions and must be written in input order.
    const res = await run([
      "score",
      "--in",
      csv,
      "--out",
      out,
      "--json",
      "--threads",
      "2",
      "--chunk-size",
      "37",
    ]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const summary = JSON.parse(res.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({
      rowsRead: ROWS,
      rowsScored: ROWS - 1,
      rowsInvalid: 1,
      modelVersion: "1",
      remote: false,
      inputFormat: "csv",
      outputFormat: "parquet",
    });
    expectServed(await parquetRows(out));
    const invalid = await readFile(`${out}.invalid.csv`, "utf8");
    expect(invalid.split("\n")[1]).toMatch(/^10,season,"season must be an integer in 1\.\.4 .*got 7"$/);
  });

  it("draws a progress bar on a terminal and clears it before the summary; none when piped", async () => {
    const parquet = join(dir, "in.parquet");
    await writeSyntheticInput(csv, parquet, ROWS);
    const env = { ...process.env, BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: t.tokens.reader };
    const args = (out: string) => ["score", "--in", parquet, "--out", out, "--chunk-size", "50"];
    const shown = await runCliInTerminal(args(join(dir, "tty.parquet")), env);
    expect(shown.code).toBe(0);
    // Each redraw starts with "\r\x1b[K" (back to the line's start, clear it). Parquet says its row count
    // up front, so the bar has a percentage; the last clear leaves the line to the summary.
    const redraws = shown.stdout.split("\r\x1b[K").slice(1);
    expect(redraws.some((l) => /^\[[#.]{30}\] +\d+% {2}[\d,]+ scored, [\d,]+ invalid/.test(l))).toBe(true);
    expect(redraws.at(-1)).toMatch(/^scored 399 of 400 rows into /);
    const piped = await run(args(join(dir, "piped.parquet")));
    expect(piped.code).toBe(0);
    expect(piped.stderr).toBe("");
    expect(piped.stdout).toMatch(/^scored 399 of 400 rows into /);
  });

  it("scores remotely through PredictStream, with the same predictions", async () => {
    const out = join(dir, "remote.arrows");
    const invalid = join(dir, "remote-invalid.csv");
    const res = await run([
      "score",
      "--in",
      arrow,
      "--out",
      out,
      "--invalid",
      invalid,
      "--remote",
      "--chunk-size",
      "150",
    ]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(
      new RegExp(
        `scored 399 of 400 rows into .*remote\\.arrows with model version 1 \\(remote\\).*1 invalid rows in ${invalid}`,
      ),
    );
    const table = tableFromIPC(await readFile(out));
    expectServed(table.toArray().map((r) => ({ row: r.row as number, prediction: r.prediction as number })));
    expect((await readFile(invalid, "utf8")).split("\n")[1]).toMatch(/^10,season,/);
  });

  it("fails with a clear message and exit code on bad input, a missing option or an unknown version", async () => {
    const bad = join(dir, "bad.parquet");
    await writeFile(bad, "nope");
    const unreadable = await run(["score", "--in", bad, "--out", join(dir, "x.parquet")]);
    expect(unreadable.code).toBe(1);
    expect(unreadable.stderr).toContain(`${bad} is not a Parquet file`);

    const usage = await run(["score", "--out", join(dir, "x.parquet")]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("score needs --in FILE");

    const unknown = await run([
      "score",
      "--in",
      csv,
      "--out",
      join(dir, "x.parquet"),
      "--model-version",
      "42",
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/NotFound: .*has no version 42/);
  });

  it("PredictStream names the invalid row by its index in the whole stream, and the field", async () => {
    const client = createClient(
      PredictService,
      createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "2" }),
    );
    const row = Object.fromEntries(RAW_FIELD_NAMES.map((f) => [f, readHourCsvRecords()[0]?.[f] as number]));
    async function* requests() {
      yield { rows: [row, row, row] };
      yield { rows: [row, { ...row, hr: 24 }] };
    }
    const offsets: bigint[] = [];
    const error = await (async () => {
      for await (const res of client.predictStream(requests())) offsets.push(res.offset);
    })().catch((e: unknown) => e);
    expect(offsets).toEqual([0n]);
    expect(String(error)).toMatch(/invalid_argument.*rows\[4\]\.hr must be an integer in 0\.\.23.*got 24/);
  });
});
