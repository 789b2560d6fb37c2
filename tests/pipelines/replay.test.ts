/**
 * `bikeshare replay` (pipelines/replay/) over a short window, through the real CLI: two fresh
 * servers (with and without retraining) each train an initial model, then forecast, label and check
 * every day of the window; the files it writes hold figures computed from those days. On embedded
 * DuckDB and, with BIKESHARE_DATABASE_URL, on a real PostgreSQL server, where each replay server must
 * get a database of its own. The PostgreSQL window is shorter (most of the time is the servers' training,
 * not the days): it still ends on the first retraining, so a version goes through the registry's gate.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPLAY_DATABASE_PREFIX } from "../../cli/commands/replay.js";
import { type DayResult, type DayRules, judgeRules } from "../../pipelines/replay/replay.js";
import { testPostgres } from "../helpers/backends.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { HOUR_CSV, readHourCsvRecords } from "../helpers/hour-csv.js";

const FROM = "2012-01-02";

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
  evidentlyDrift: string;
  seasonalDrift: string;
  estimatedRmse: number;
  liveRmse7d: number;
  threshold: number;
  estimatedThreshold: number;
  estimatedAlert: string;
}

/** Splits a CSV line, keeping quoted commas (the alerts column). */
function cells(line: string): string[] {
  return [...line.matchAll(/("(?:[^"]|"")*"|[^,]*)(,|$)/g)].map((m) => m[1] as string).slice(0, -1);
}

function parseTimeline(csv: string): Day[] {
  const [header, ...lines] = csv.trimEnd().split("\n");
  expect(header).toBe(
    "date,model_version,hours,rmse,retrain_job,registered_version,promoted,alerts,evidently_drift,seasonal_drift,estimated_rmse_7d,live_rmse_7d,rmse_threshold,estimated_rmse_threshold,estimated_alert",
  );
  return lines.map((line) => {
    const [
      date,
      version,
      hours,
      rmse,
      retrainJob,
      registered,
      promoted,
      ,
      evidently,
      seasonal,
      est,
      live,
      thr,
      estThr,
      estAlert,
    ] = cells(line);
    return {
      estimatedThreshold: Number(estThr),
      estimatedAlert: estAlert as string,
      evidentlyDrift: evidently as string,
      seasonalDrift: seasonal as string,
      estimatedRmse: Number(est),
      liveRmse7d: Number(live),
      threshold: Number(thr),
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

/** `use` with a client on one of the test cluster's databases, to look at what the replay did there. */
async function onCluster<T>(database: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const { port } = await testPostgres();
  const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database });
  // The cluster stops at the end of the file, maybe before a failed test got to end() this client.
  client.on("error", () => {});
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

/**
 * The replay on PostgreSQL: run with BIKESHARE_DATABASE_URL naming a database of the test cluster, while
 * the databases the servers' own connections (application_name `bikeshare`) use are sampled; then
 * checks that it left nothing behind.
 */
async function onPostgres(run: (env: NodeJS.ProcessEnv) => Promise<CliResult>): Promise<CliResult> {
  const given = await (await testPostgres()).createDatabase();
  const used = new Set<string>();
  const result = await onCluster("postgres", async (client) => {
    let running = true;
    const sampling = (async () => {
      while (running) {
        const { rows } = await client.query<{ datname: string }>(
          "SELECT DISTINCT datname FROM pg_stat_activity WHERE application_name = 'bikeshare'",
        );
        for (const r of rows) used.add(r.datname);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      return await run({ BIKESHARE_DATABASE_URL: given });
    } finally {
      running = false;
      await sampling;
    }
  });
  // Each server announced its own new database (password hidden) and really ran on it.
  const announced = [...result.stderr.matchAll(/server on a new database: (\S+)/g)].map((m) =>
    new URL(m[1] as string).pathname.slice(1),
  );
  expect(announced).toHaveLength(2);
  expect(new Set(announced).size).toBe(2);
  for (const name of announced) expect(name.startsWith(REPLAY_DATABASE_PREFIX)).toBe(true);
  expect(result.stderr).not.toContain(":secret@");
  expect(used).toEqual(new Set(announced));
  // Dropped at the end; the database the URL names was never written to.
  const left = await onCluster("postgres", (c) =>
    c.query("SELECT datname FROM pg_database WHERE datname LIKE $1", [`${REPLAY_DATABASE_PREFIX}%`]),
  );
  expect(left.rows).toEqual([]);
  const tables = await onCluster(new URL(given).pathname.slice(1), (c) =>
    c.query(
      "SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    ),
  );
  expect(tables.rows).toEqual([]);
  return result;
}

const CASES = [
  { backend: "duckdb", to: "2012-01-06", dayCount: 5 },
  { backend: "postgres", to: "2012-01-04", dayCount: 3 },
] as const;

/** A replayed day whose check saw `rules` (only the fields judgeRules reads matter). */
function judgedDay(i: number, rules: Partial<DayRules>): DayResult {
  return {
    date: `2012-01-${String(i + 1).padStart(2, "0")}`,
    modelVersion: "1",
    hours: 24,
    rmse: 0,
    alerts: [],
    rules: {
      evidentlyDrift: true,
      evidentlyShare: 0.9,
      seasonalDrift: false,
      seasonalShare: 0,
      unseenCalendar: [],
      estimatedRmse: 50,
      threshold: 75,
      estimatedThreshold: 60,
      estimatedAlert: false,
      windowRmse: 50,
      windowLabelledHours: 168,
      ...rules,
    },
  };
}

describe("judging the alert rules week by week", () => {
  it("scores each rule at the end of every week against the realised RMSE", () => {
    // Four weeks: 2 over the threshold (weeks 1 and 3). Evidently fires every week; the calendar-aware
    // rule fires on week 1 only; the server's estimated_rmse rule fires on weeks 1, 3 and wrongly on 4.
    // Week 2's estimate is above its threshold but the rule was not violated (one day only, say):
    // the replay judges the rule the server ran, not a re-derivation from the two numbers.
    const weeks = [
      { windowRmse: 90, seasonalDrift: true, estimatedRmse: 80, estimatedAlert: true },
      { windowRmse: 60, estimatedRmse: 500, estimatedAlert: false },
      { windowRmse: 100, estimatedRmse: 90, estimatedAlert: true },
      { windowRmse: 70, estimatedRmse: 76, estimatedAlert: true },
    ];
    const days: DayResult[] = [];
    weeks.forEach((w, k) => {
      for (let d = 0; d < 7; d++) {
        // Mid-week days disagree with the week's end: only the check whose window is the week counts.
        days.push(
          judgedDay(
            k * 7 + d,
            d === 6 ? w : { windowRmse: 500, seasonalDrift: true, estimatedRmse: 500, estimatedAlert: true },
          ),
        );
      }
    });
    // A fifth, short week (a promotion mid-week: 48 labelled hours) is left out.
    for (let d = 0; d < 7; d++) days.push(judgedDay(28 + d, { windowRmse: 200, windowLabelledHours: 48 }));
    const j = judgeRules(days);
    expect(j.weeks).toBe(4);
    expect(j.weeksOverThreshold).toBe(2);
    expect(j.evidentlyDrift).toEqual({ fired: 4, truePositives: 2, precision: 0.5, recall: 1 });
    expect(j.seasonalDrift).toEqual({ fired: 1, truePositives: 1, precision: 1, recall: 0.5 });
    expect(j.estimatedRmse).toEqual({ fired: 3, truePositives: 2, precision: 2 / 3, recall: 1 });
    expect(j.seasonalDriftOrEstimate).toEqual({ fired: 3, truePositives: 2, precision: 2 / 3, recall: 1 });
    expect(j.weekly.map((w) => w.week)).toEqual(["2012-01-07", "2012-01-14", "2012-01-21", "2012-01-28"]);
    expect(judgeRules([]).evidentlyDrift).toEqual({
      fired: 0,
      truePositives: 0,
      precision: null,
      recall: null,
    });
  });
});

describe.each(CASES)("bikeshare replay on $backend", ({ backend, to: TO, dayCount }) => {
  it("replays a short window with and without retraining and writes the figures it computed", async () => {
    const out = join(dir, `replay-${backend}`);
    const replay = async (env: NodeJS.ProcessEnv) => {
      const args = [
        "replay",
        "--train-until",
        "2011-12-31",
        "--from",
        FROM,
        "--to",
        TO,
        "--out",
        out,
        "--json",
      ];
      const run = await runCli(args, {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        BIKESHARE_DATA: HOUR_CSV,
        // The initial model's data ends 2011-12-31: without this, no retraining may start before
        // 2012-01-29 (the cool-down counts from the production model's data), and the window ends first.
        // Then the first drift report (yr = 1, never seen) starts one.
        BIKESHARE_RETRAIN_COOLDOWN_DAYS: "0",
        ...env,
      });
      expect(run.code, run.stderr).toBe(0);
      return run;
    };
    const result = backend === "postgres" ? await onPostgres(replay) : await replay({});
    expect(result.stderr).toContain("replay with retraining");
    expect(result.stderr).toContain("replay without retraining");

    // One day per date of the window that has data, each with its hour count from hour.csv.
    const hoursPerDay = new Map<string, number>();
    for (const r of readHourCsvRecords()) {
      const d = r.dteday as string;
      if (d >= FROM && d <= TO) hoursPerDay.set(d, (hoursPerDay.get(d) ?? 0) + 1);
    }
    expect(hoursPerDay.size).toBe(dayCount);
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
    // Every day's check is recorded rule by rule: the rule before issue 17 (Evidently's default, every
    // day in January) and after it, the estimate before actuals and the realised week's RMSE.
    // (The first days hold fewer than the 48 logged predictions a drift report needs: no rules yet.)
    const checked = (days: Day[]) => days.filter((d) => d.evidentlyDrift !== "");
    expect(checked(without).length).toBeGreaterThan(0);
    for (const d of [...checked(withRetrain), ...checked(without)]) {
      expect(d.evidentlyDrift, d.date).toBe("true");
      expect(["true", "false"]).toContain(d.seasonalDrift);
      expect(d.estimatedRmse, d.date).toBeGreaterThan(1);
      expect(d.liveRmse7d, d.date).toBeGreaterThan(1);
      expect(d.threshold, d.date).toBeGreaterThan(1);
      // The estimated_rmse rule's own threshold (factor × the estimate over the test window).
      expect(d.estimatedThreshold, d.date).toBeGreaterThan(1);
      expect(["true", "false"]).toContain(d.estimatedAlert);
    }
    // yr = 1 was never in the initial model's training data: the calendar-aware rule says so.
    expect(checked(without).every((d) => d.seasonalDrift === "true")).toBe(true);
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
    // The window reaches the first retraining: a new version went through registration and the gate.
    expect(summary.retrainings.length).toBeGreaterThan(0);
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
    expect(readme).toContain("## Do the alerts mean something?");
    // A window shorter than a week has no week to judge: the figures say so rather than invent one.
    const judged = JSON.parse(result.stdout).alertJudgement;
    expect(judged.withRetraining.weeks).toBe(0);
    expect(judged.withRetraining.evidentlyDrift.precision).toBeNull();
    expect(await readFile(join(out, "weeks.csv"), "utf8")).toMatch(/^run,week_ending,/);
  }, 600_000);
});
