/**
 * Scoring writes each output beside its name (`.NAME.PID.partial`) and renames it into place. That
 * name is predictable, so a link planted there (in a shared scoring folder) must be replaced, never
 * followed: otherwise a scoring job would overwrite whatever file the link points at.
 */
import { lstat, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FEATURE_NAMES, RAW_FIELD_NAMES } from "../../core/features/index.js";
import type { ScoringModel } from "../../pipelines/scoring/model.js";
import { partialPath } from "../../pipelines/scoring/output.js";
import { scoreFile } from "../../pipelines/scoring/score-file.js";
import { readHourCsvRecords } from "../helpers/hour-csv.js";

// What is under test is where the files go, not the forecasts: any model that answers will do.
const constantModel: ScoringModel = {
  featureNames: FEATURE_NAMES,
  predict: async (_features, rows) => new Float32Array(rows).fill(42),
};

let dir: string;
let input: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-partial-"));
  input = join(dir, "hours.csv");
  const records = readHourCsvRecords().slice(0, 50);
  const lines = records.map((r, i) =>
    RAW_FIELD_NAMES.map((f) => (i === 3 && f === "hr" ? 99 : r[f])).join(","),
  );
  await writeFile(input, `${RAW_FIELD_NAMES.join(",")}\n${lines.join("\n")}\n`);
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("partial output files", () => {
  for (const name of ["out.parquet", "out.arrow", "out.arrows"]) {
    it(`replaces a link planted at the partial name of ${name} and of its invalid-rows file`, async () => {
      const output = join(dir, name);
      const invalidOutput = join(dir, `${name}.invalid.csv`);
      const victims = [join(dir, `victim-${name}`), join(dir, `victim-${name}.csv`)];
      for (const [i, path] of [output, invalidOutput].entries()) {
        await writeFile(victims[i] as string, "precious");
        await symlink(victims[i] as string, partialPath(path));
      }
      const summary = await scoreFile({ input, output, invalidOutput, model: constantModel });
      expect([summary.rowsScored, summary.rowsInvalid]).toEqual([49, 1]);
      for (const victim of victims) expect(await readFile(victim, "utf8")).toBe("precious");
      for (const path of [output, invalidOutput]) {
        const stats = await lstat(path);
        expect([path, stats.isFile()]).toEqual([path, true]);
        expect(stats.size).toBeGreaterThan(0);
      }
      expect((await readFile(invalidOutput, "utf8")).split("\n")[1]).toMatch(/^4,hr,/);
    });
  }
});
