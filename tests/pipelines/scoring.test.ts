import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { tableFromIPC } from "apache-arrow";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  dayColumn,
  FEATURE_NAMES,
  featureMatrix,
  RAW_FIELD_NAMES,
  recordsToColumns,
  validateRecord,
  withDays,
} from "../../core/features/index.js";
import { OnnxModel, xgboostToOnnx } from "../../core/onnx/index.js";
import { type Booster, train } from "../../core/xgboost/index.js";
import { loadHourly } from "../../pipelines/data/hourly.js";
import {
  boosterScoringModel,
  onnxScoringModel,
  type ScoringModel,
  scoreFile,
} from "../../pipelines/scoring/index.js";
import { writeSyntheticInput } from "../../pipelines/scoring/synthetic.js";
import { HOUR_CSV, readHourCsvRecords } from "../helpers/hour-csv.js";

const ROOT = join(import.meta.dirname, "../..");
const ROWS = 3000;
let dir: string;
let booster: Booster;
let onnx: OnnxModel;
/** Native predictions for hour.csv rows, computed from the plain CSV records one by one (not by scoring). */
let expected: Float32Array;

// Rows (1-based) made invalid in every input, and what the side file must say about them.
const BAD: Record<number, string[]> = {
  5: ["hr"],
  10: ["temp"],
  20: ["weekday"],
  30: ["season", "hum"],
};

async function duckdb<T>(sql: string): Promise<T[]> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    return (await connection.runAndReadAll(sql)).getRowObjectsJS() as T[];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

/** The first ROWS hours of hour.csv with the BAD rows broken, as typed columns in CSV, Parquet and Arrow. */
async function writeInputs(): Promise<Record<string, string>> {
  const base = join(dir, "base.csv");
  const records = readHourCsvRecords().slice(0, ROWS);
  const cols = [...RAW_FIELD_NAMES, "dteday"];
  const lines = records.map((r, i) => {
    const row = { ...r };
    const n = i + 1;
    if (n === 5) row.hr = 25;
    if (n === 10) row.temp = "";
    if (n === 20) row.weekday = ((r.weekday as number) + 1) % 7;
    if (n === 30) {
      row.season = 0;
      row.hum = 1.5;
    }
    return cols.map((c) => row[c]).join(",");
  });
  await writeFile(base, `${cols.join(",")}\n${lines.join("\n")}\n`);
  const paths: Record<string, string> = { csv: join(dir, "in.csv") };
  // The CSV also carries a cell that is not a number, which typed formats cannot hold.
  await writeFile(
    paths.csv as string,
    `${cols.join(",")}\n${lines.join("\n")}\n${lines[0]?.replace(/,0\.24,/, ",warm,")}\n`,
  );
  for (const ext of ["parquet", "arrow", "arrows"]) {
    paths[ext] = join(dir, `in.${ext}`);
    await writeSyntheticInput(base, paths[ext] as string, ROWS);
  }
  return paths;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-scoring-"));
  const data = await loadHourly(HOUR_CSV);
  const columns = withDays(data.columns, dayColumn(data.dteday));
  ({ booster } = await train({
    params: { max_depth: 6, eta: 0.1, nthread: 2 },
    rounds: 40,
    train: {
      data: featureMatrix(columns),
      rows: columns.length,
      cols: FEATURE_NAMES.length,
      labels: Float32Array.from(data.cnt),
    },
  }));
  onnx = await OnnxModel.load(xgboostToOnnx(booster.saveJson(), { featureNames: FEATURE_NAMES }));
  // Another way to the same numbers: each CSV record through validateRecord, as an online request.
  const records = readHourCsvRecords()
    .slice(0, ROWS + 1)
    .map((r) => {
      const body: Record<string, unknown> = Object.fromEntries(RAW_FIELD_NAMES.map((f) => [f, r[f]]));
      const result = validateRecord(body);
      if (!result.ok) throw new Error("hour.csv row invalid");
      return { ...result.record, day: dayColumn([r.dteday as string])[0] as number };
    });
  expected = booster.predict({
    data: featureMatrix(recordsToColumns(records)),
    rows: records.length,
    cols: FEATURE_NAMES.length,
  });
}, 60_000);

afterAll(async () => {
  await onnx?.release();
  booster?.dispose();
  await rm(dir, { recursive: true, force: true });
});

async function readOutput(path: string): Promise<{ row: number; prediction: number; hr: number }[]> {
  if (path.endsWith(".parquet"))
    return duckdb(`SELECT row, prediction, hr FROM read_parquet('${path}') ORDER BY row`);
  const table = tableFromIPC(await readFile(path));
  return table.toArray().map((r) => ({ row: r.row, prediction: r.prediction, hr: r.hr }));
}

async function readInvalid(path: string): Promise<{ row: number; field: string; reason: string }[]> {
  return duckdb(
    `SELECT row::INT AS row, field, reason FROM read_csv('${path}', header = true, all_varchar = true)`,
  );
}

describe("scoreFile", () => {
  let inputs: Record<string, string>;
  beforeAll(async () => {
    inputs = await writeInputs();
  }, 60_000);

  const models: [string, () => ScoringModel][] = [
    ["onnx", () => onnxScoringModel(onnx)],
    ["native", () => boosterScoringModel(booster)],
  ];

  for (const format of ["csv", "parquet", "arrow", "arrows"]) {
    for (const out of ["parquet", "arrow", "arrows"]) {
      it(`scores ${format} into ${out}, row by row equal to online predictions; invalid rows in the side file`, async () => {
        const [name, model] = (format === "csv" ? models[0] : models[1]) as [string, () => ScoringModel];
        const output = join(dir, `out-${format}-${name}.${out}`);
        const progress: number[] = [];
        const summary = await scoreFile({
          input: inputs[format] as string,
          output,
          model: model(),
          chunkSize: 700, // several chunks, one of them holding several bad rows
          onProgress: (p) => progress.push(p.rowsScored),
        });
        const total = format === "csv" ? ROWS + 1 : ROWS;
        const invalidRows = Object.keys(BAD).length + (format === "csv" ? 1 : 0);
        expect(summary).toMatchObject({
          rowsRead: total,
          rowsInvalid: invalidRows,
          rowsScored: total - invalidRows,
        });
        expect(progress.at(-1)).toBe(total - invalidRows);

        const rows = await readOutput(output);
        expect(rows.length).toBe(total - invalidRows);
        const bad = new Set(Object.keys(BAD).map(Number));
        if (format === "csv") bad.add(ROWS + 1);
        let k = 0;
        for (let row = 1; row <= total; row++) {
          if (bad.has(row)) continue;
          const got = rows[k++] as { row: number; prediction: number; hr: number };
          expect(got.row).toBe(row);
          // The extra CSV row is hour.csv's first row again.
          const want = expected[row === ROWS + 1 ? 0 : row - 1] as number;
          expect(Math.abs(got.prediction - want)).toBeLessThan(1e-3 * Math.max(1, Math.abs(want)));
        }

        const invalid = await readInvalid(summary.invalidOutput);
        const byRow = new Map<number, string[]>();
        for (const v of invalid) byRow.set(v.row, [...(byRow.get(v.row) ?? []), v.field]);
        for (const [row, fields] of Object.entries(BAD)) expect(byRow.get(Number(row))).toEqual(fields);
        expect(invalid.find((v) => v.row === 5)?.reason).toMatch(/hr must be an integer in 0\.\.23.*got 25/);
        expect(invalid.find((v) => v.row === 20)?.reason).toMatch(/weekday must agree with the date/);
        if (format === "csv") expect(byRow.get(ROWS + 1)).toEqual(["temp"]);
        expect(byRow.size).toBe(invalidRows);
        // Nothing but the two results is left in the folder: no partial files.
        expect((await readdir(dir)).filter((f) => f.includes(".partial"))).toEqual([]);
      });
    }
  }

  it("reads timestamps with offsets: the date features, a bad timestamp and an hr mismatch", async () => {
    const records = readHourCsvRecords().slice(0, 50);
    const hourUtc = (r: Record<string, number | string>) => {
      const day = dayColumn([r.dteday as string])[0] as number;
      return { day, hr: r.hr as number };
    };
    const { instantOfLocalHour } = await import("../../core/features/index.js");
    const lines = records.map((r, i) => {
      const { day, hr } = hourUtc(r);
      let stamp = instantOfLocalHour(day, hr).toISOString();
      let hrValue = r.hr;
      if (i === 3) stamp = "2011-01-01 03:00"; // no offset, no T
      if (i === 7) hrValue = ((r.hr as number) + 1) % 24;
      return [...RAW_FIELD_NAMES.map((f) => (f === "hr" ? hrValue : r[f])), stamp].join(",");
    });
    const input = join(dir, "stamped.csv");
    await writeFile(input, `${[...RAW_FIELD_NAMES, "timestamp"].join(",")}\n${lines.join("\n")}\n`);
    const output = join(dir, "stamped.parquet");
    const summary = await scoreFile({ input, output, model: boosterScoringModel(booster) });
    expect(summary.rowsInvalid).toBe(2);
    const invalid = await readInvalid(summary.invalidOutput);
    expect(invalid.map((v) => [v.row, v.field])).toEqual([
      [4, "timestamp"],
      [8, "hr"],
    ]);
    expect(invalid[1]?.reason).toMatch(/must agree with the timestamp/);
    const rows = await readOutput(output);
    for (const r of rows)
      expect(Math.abs(r.prediction - (expected[r.row - 1] as number))).toBeLessThan(1e-3 * 1000);
  });

  it("fails cleanly on unreadable input, naming the file and the format", async () => {
    const model = boosterScoringModel(booster);
    const garbage = join(dir, "garbage.parquet");
    await writeFile(garbage, "not parquet at all");
    await expect(scoreFile({ input: garbage, output: join(dir, "x.arrow"), model })).rejects.toThrow(
      `${garbage} is not a Parquet file`,
    );
    const truncated = join(dir, "truncated.arrows");
    const whole = await readFile(inputs.arrows as string);
    await writeFile(truncated, whole.subarray(0, Math.floor(whole.length / 2)));
    await expect(scoreFile({ input: truncated, output: join(dir, "x.arrow"), model })).rejects.toThrow(
      /truncated\.arrows as Arrow IPC stream/,
    );
    const noHr = join(dir, "no-hr.csv");
    await writeFile(noHr, "season,yr\n1,0\n");
    await expect(scoreFile({ input: noHr, output: join(dir, "x.arrow"), model })).rejects.toThrow(
      /no-hr\.csv \(CSV\) has no column mnth, hr, holiday/,
    );
    await expect(
      scoreFile({ input: inputs.csv as string, output: join(dir, "x.json"), model }),
    ).rejects.toThrow(/cannot tell the output format of .*x\.json/);
    await expect(
      scoreFile({ input: inputs.csv as string, output: join(dir, "missing-dir", "x.arrow"), model }),
    ).rejects.toThrow(/cannot write .*missing-dir\/x\.arrow/);
    const wrongModel = { featureNames: ["a", "b"], predict: async () => new Float32Array(0) };
    await expect(
      scoreFile({ input: inputs.csv as string, output: join(dir, "x.arrow"), model: wrongModel }),
    ).rejects.toThrow(/the model reads the features \[a, b\]/);
    expect((await readdir(dir)).filter((f) => f.startsWith("x.") || f.includes(".partial"))).toEqual([]);
  });

  it("stops on abort and on a model failure without leaving a result or a partial file", async () => {
    const output = join(dir, "aborted.parquet");
    const controller = new AbortController();
    await expect(
      scoreFile({
        input: inputs.parquet as string,
        output,
        model: boosterScoringModel(booster),
        chunkSize: 500,
        signal: controller.signal,
        onProgress: () => controller.abort(new Error("cancelled by the test")),
      }),
    ).rejects.toThrow("cancelled by the test");
    let calls = 0;
    const failing: ScoringModel = {
      featureNames: FEATURE_NAMES,
      predict: async (_f, rows) => {
        if (++calls === 3) throw new Error("model exploded");
        return new Float32Array(rows);
      },
    };
    await expect(
      scoreFile({ input: inputs.arrow as string, output, model: failing, chunkSize: 500 }),
    ).rejects.toThrow("model exploded");
    expect((await readdir(dir)).filter((f) => f.startsWith("aborted") || f.includes(".partial"))).toEqual([]);
  });

  it("keeps memory bounded: a child scoring 1.5 million rows peaks no higher than one scoring 150,000", async () => {
    const model = join(dir, "model.json");
    await writeFile(model, booster.saveJson());
    const peak = async (rows: number) => {
      const input = join(dir, `big-${rows}.parquet`);
      await writeSyntheticInput(HOUR_CSV, input, rows);
      const code = `
        import { readFileSync } from "node:fs";
        import { Booster } from "${ROOT}/core/xgboost/index.ts";
        import { boosterScoringModel, scoreFile } from "${ROOT}/pipelines/scoring/index.ts";
        const booster = Booster.loadJson(readFileSync(${JSON.stringify(model)}, "utf8"));
        const s = await scoreFile({ input: ${JSON.stringify(input)}, output: ${JSON.stringify(join(dir, `big-${rows}.arrow`))}, model: boosterScoringModel(booster) });
        const hwm = /VmHWM:\\s+(\\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))[1];
        console.log(JSON.stringify({ scored: s.rowsScored, peakMiB: Number(hwm) / 1024 }));`;
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
          cwd: ROOT,
          stdio: ["ignore", "pipe", "inherit"],
        });
        let text = "";
        child.stdout.on("data", (d: Buffer) => {
          text += d.toString();
        });
        child.on("error", reject);
        child.on("exit", (c) => (c === 0 ? resolve(text) : reject(new Error(`child exited ${c}`))));
      });
      return JSON.parse(out.trim().split("\n").at(-1) as string) as { scored: number; peakMiB: number };
    };
    const small = await peak(150_000);
    const big = await peak(1_500_000);
    console.log(
      `peak RSS: ${small.peakMiB.toFixed(0)} MiB for 150,000 rows, ${big.peakMiB.toFixed(0)} MiB for 1,500,000`,
    );
    expect(small.scored).toBe(150_000);
    expect(big.scored).toBe(1_500_000);
    // Read or written whole, the extra 1.35 million rows would hold ≥ 200 MB more (13 float64 columns
    // and 16 float32 features per row).
    expect(big.peakMiB - small.peakMiB).toBeLessThan(150);
    expect(big.peakMiB).toBeLessThan(1024);
  }, 120_000);
});
