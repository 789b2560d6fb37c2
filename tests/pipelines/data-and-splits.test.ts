import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataValidationError, loadHourly } from "../../pipelines/data/hourly.js";
import { randomSplit, timeSplit } from "../../pipelines/training/splits.js";
import { HOUR_CSV } from "../helpers/hour-csv.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-pipeline-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("splits", () => {
  it("split T puts every 2011 – June 2012 hour in train, Jul–Aug 2012 in valid, Sep–Dec 2012 in test", async () => {
    const data = await loadHourly(HOUR_CSV);
    const s = timeSplit(data);
    expect(s.train.length + s.valid.length + s.test.length).toBe(17_379);
    expect(s.train.every((i) => (data.dteday[i] as string) < "2012-07-01")).toBe(true);
    expect(
      s.valid.every(
        (i) => (data.dteday[i] as string) >= "2012-07-01" && (data.dteday[i] as string) < "2012-09-01",
      ),
    ).toBe(true);
    expect(s.test.every((i) => (data.dteday[i] as string) >= "2012-09-01")).toBe(true);
    expect(s.valid.length).toBe(1488);
  });

  it("split A is a reproducible random 80/20 partition", () => {
    const a = randomSplit(1000, 0.2, 42);
    expect(a.test).toHaveLength(200);
    expect(new Set([...a.train, ...a.test]).size).toBe(1000);
    expect(randomSplit(1000, 0.2, 42)).toEqual(a);
    expect(randomSplit(1000, 0.2, 43).test).not.toEqual(a.test);
  });
});

describe("loading through DuckDB", () => {
  it("rejects a file with bad cells, naming the line and field, and loads nothing", async () => {
    const lines = (await readFile(HOUR_CSV, "utf8")).split(/\r?\n/).slice(0, 6);
    const cells = (lines[3] as string).split(",");
    cells[5] = "25"; // hr
    cells[13] = "windy"; // windspeed
    lines[3] = cells.join(",");
    const bad = join(dir, "bad.csv");
    await writeFile(bad, `${lines.join("\n")}\n`);
    const error = await loadHourly(bad).catch((e) => e);
    expect(error).toBeInstanceOf(DataValidationError);
    expect(error.message).toContain("line 4: hr must be an integer in 0..23");
    expect(error.message).toContain("line 4: windspeed must be a number in [0, 1]");
    expect(error.violations).toHaveLength(2);
  });
});
