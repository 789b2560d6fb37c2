/**
 * `bikeshare replay` (pipelines/replay/) over a short window, through the real CLI: two fresh
 * servers (with and without retraining) each train an initial model, then forecast, label and check
 * every day of the window; the files it writes hold figures computed from those days.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { HOUR_CSV, readHourCsvRecords } from "../helpers/hour-csv.js";

const FROM = "2012-01-02";
const TO = "2012-01-06";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-replay-test-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Day {
  date: string;
  version: string;
  hours: number;
  rmse: number;
  retrainJob: string;
  registered: string;
  promoted: string;
}

function parseTimeline(csv: string): Day[] {
  const [header, ...lines] = csv.trimEnd().split("\n");
  expect(header).toBe("date,model_version,hours,rmse,retrain_job,registered_version,promoted,alerts");
  return lines.map((line) => {
    const [date, version, hours, rmse, retrainJob, registered, promoted] = line.split(",") as string[];
    return {
      date: date as string,
      version: version as string,
      hours: Number(hours),
      rmse: Number(rmse),
      retrainJob: retrainJob as string,
      registered: registered as string,
      promoted: promoted as string,
    };
  });
}

describe("bikeshare replay", () => {
  it("replays a short window with and without retraining and writes the figures it computed", async () => {
    const out = join(dir, "replay");
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      BIKESHARE_DATA: HOUR_CSV,
    };
    const result = await runCli(
      ["replay", "--train-until", "2011-12-31", "--from", FROM, "--to", TO, "--out", out, "--json"],
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain("replay with retraining");
    expect(result.stderr).toContain("replay without retraining");

    // One day per date of the window that has data, each with its hour count from hour.csv.
    const hoursPerDay = new Map<string, number>();
    for (const r of readHourCsvRecords()) {
      const d = r.dteday as string;
      if (d >= FROM && d <= TO) hoursPerDay.set(d, (hoursPerDay.get(d) ?? 0) + 1);
    }
    expect(hoursPerDay.size).toBe(5);
    const withRetrain = parseTimeline(await readFile(join(out, "timeline.csv"), "utf8"));
    const without = parseTimeline(await readFile(join(out, "timeline-no-retrain.csv"), "utf8"));
    for (const days of [withRetrain, without]) {
      expect(days.map((d) => [d.date, d.hours])).toEqual([...hoursPerDay]);
      for (const d of days) {
        // A daily RMSE of hourly counts in January: finite, not zero (not a copy of the actuals), and
        // far below the counts themselves (a model, not noise; the busiest January hours are ~600).
        expect(Number.isFinite(d.rmse), d.date).toBe(true);
        expect(d.rmse, d.date).toBeGreaterThan(1);
        expect(d.rmse, d.date).toBeLessThan(250);
      }
    }
    // The replay without retraining serves its initial model throughout and starts nothing.
    expect(new Set(without.map((d) => d.version))).toEqual(new Set(["1"]));
    expect(without.every((d) => d.retrainJob === "" && d.registered === "" && d.promoted === "")).toBe(true);
    // Until a retraining lands, both replays serve the same recipe on the same data: the same figures.
    const firstRetrain = withRetrain.findIndex((d) => d.retrainJob !== "");
    const before = firstRetrain < 0 ? withRetrain.length : firstRetrain + 1;
    for (let i = 0; i < before; i++) expect(withRetrain[i]?.rmse).toBeCloseTo(without[i]?.rmse as number, 1);

    const summary = JSON.parse(result.stdout) as {
      trainUntil: string;
      from: string;
      to: string;
      retrainings: { date: string }[];
      meanDailyRmseWholeReplay: { withRetraining: number; withoutRetraining: number };
      secondsPerReplay: { withRetraining: number; withoutRetraining: number };
    };
    expect(JSON.parse(await readFile(join(out, "summary.json"), "utf8"))).toEqual(summary);
    expect([summary.trainUntil, summary.from, summary.to]).toEqual(["2011-12-31", FROM, TO]);
    expect(summary.retrainings.map((r) => r.date)).toEqual(
      withRetrain.filter((d) => d.retrainJob !== "").map((d) => d.date),
    );
    const mean = (days: Day[]) => days.reduce((s, d) => s + d.rmse, 0) / days.length;
    expect(summary.meanDailyRmseWholeReplay.withRetraining).toBeCloseTo(mean(withRetrain), 2);
    expect(summary.meanDailyRmseWholeReplay.withoutRetraining).toBeCloseTo(mean(without), 2);
    expect(summary.secondsPerReplay.withRetraining).toBeGreaterThan(0);
    expect(summary.secondsPerReplay.withoutRetraining).toBeGreaterThan(0);

    const svg = await readFile(join(out, "daily-rmse.svg"), "utf8");
    // One line per replay, with a point per day.
    const lines = [...svg.matchAll(/<path d="(M[^"]*)" fill="none"/g)].map((m) =>
      (m[1] as string).split(" "),
    );
    expect(lines.map((l) => l.length)).toEqual([withRetrain.length, without.length]);
    const readme = await readFile(join(out, "README.md"), "utf8");
    expect(readme).toContain(`# Replay of ${FROM} – ${TO}`);
  }, 600_000);
});
