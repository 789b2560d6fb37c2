import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { dayNumber, instantOfLocalHour, RAW_FIELD_NAMES } from "../../core/features/index.js";
import { rmse } from "../../core/metrics/index.js";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { AlertRule, type MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import type { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import type { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, type TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { loadHourly } from "../data/hourly.js";

export interface ReplayClients {
  predict: Client<typeof PredictService>;
  train: Client<typeof TrainService>;
  registry: Client<typeof RegistryService>;
  monitor: Client<typeof MonitorService>;
}

export interface ReplayOptions {
  dataPath: string;
  /** Last day of data the initial model is trained on (YYYY-MM-DD). */
  trainUntil: string;
  from: string;
  to: string;
  /** Whether monitoring checks may start retrainings. */
  retrain: boolean;
  modelName: string;
  onDay?: (day: DayResult) => void;
}

export interface DayResult {
  date: string;
  modelVersion: string;
  hours: number;
  rmse: number;
  alerts: string[];
  retrainJob?: string;
  /** Version registered by a retraining that ended this day, and whether it went to production. */
  registered?: string;
  promoted?: boolean;
  /** The day's check, rule by rule, whether or not an alert was raised (alerts are de-duplicated). */
  rules?: DayRules;
}

/** What the day's check found over its 7-day window, for judging the rules against realised accuracy. */
export interface DayRules {
  /** Evidently's default dataset drift (every feature against the whole training sample): the rule before issue 17. */
  evidentlyDrift: boolean;
  evidentlyShare: number;
  /** Calendar-aware drift: non-calendar features against the same months, or unseen calendar values. */
  seasonalDrift: boolean;
  seasonalShare: number;
  unseenCalendar: string[];
  /** RMSE estimated before the actuals (0 when none), and the threshold of the live RMSE rule. */
  estimatedRmse: number;
  threshold: number;
  /** Threshold of the estimated_rmse rule (0 when none) and whether the server's rule was violated. */
  estimatedThreshold: number;
  estimatedAlert: boolean;
  /** Realised RMSE of the serving version over the window's labelled hours. */
  windowRmse: number;
  windowLabelledHours: number;
}

const DAY_MS = 86_400_000;
const nextDay = (date: string) =>
  new Date(Date.parse(`${date}T00:00:00Z`) + DAY_MS).toISOString().slice(0, 10);

async function waitForJob(train: ReplayClients["train"], jobId: string) {
  for await (const _ of train.watchJob({ jobId })) {
    // follow to the end
  }
  const { job } = await train.getJob({ jobId });
  return job;
}

async function servedVersion(predict: ReplayClients["predict"]): Promise<string | undefined> {
  try {
    return (await predict.getModelInfo({})).model?.version;
  } catch (error) {
    // Until its first model has loaded, a fresh server answers "unavailable": nothing served yet.
    if (error instanceof ConnectError && error.code === Code.Unavailable) return undefined;
    throw error;
  }
}

async function waitForServing(predict: ReplayClients["predict"], version: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await servedVersion(predict)) !== version) {
    if (Date.now() > deadline)
      throw new Error(`the server did not start serving version ${version} within 30 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Replays labelled hours in order through a running server, one day at a time: the day's
 * forecasts (with each hour's timestamp), then its actuals, then the day's monitoring check,
 * which may start a retraining. Simulated time stands still while a retraining runs, as if
 * it had finished before the next day.
 */
export async function replay(clients: ReplayClients, options: ReplayOptions): Promise<DayResult[]> {
  const data = await loadHourly(options.dataPath);
  const byDay = new Map<string, number[]>();
  data.dteday.forEach((d, i) => {
    const list = byDay.get(d) ?? [];
    list.push(i);
    byDay.set(d, list);
  });

  // The initial model uses the same quick recipe as automatic retrainings (one gradient-boosted
  // candidate, no search), so that both replays start from the same model within the time budget.
  const initial = await clients.train.startTraining({
    families: [ModelFamily.GBTREE],
    searchTrials: 0,
    dataUntil: timestampFromMs(Date.parse(`${nextDay(options.trainUntil)}T00:00:00Z`)),
    reason: `replay: initial model on data until ${options.trainUntil}`,
  });
  const initialJob = await waitForJob(clients.train, initial.job?.id as string);
  if (initialJob?.state !== JobState.SUCCEEDED)
    throw new Error(`initial training ${JobState[initialJob?.state ?? 0]}: ${initialJob?.error}`);
  await clients.registry.setAlias({
    modelName: options.modelName,
    alias: "production",
    version: initialJob.modelVersion,
    reason: "replay: initial model",
    force: true,
  });
  await waitForServing(clients.predict, initialJob.modelVersion);

  const results: DayResult[] = [];
  for (let date = options.from; date <= options.to; date = nextDay(date)) {
    const rows = byDay.get(date) ?? [];
    if (rows.length === 0) continue;
    const hours = rows.map((i) =>
      instantOfLocalHour(dayNumber(date), data.columns.hr[i] as number).getTime(),
    );
    const conditions = rows.map((i, k) => ({
      ...Object.fromEntries(RAW_FIELD_NAMES.map((f) => [f, data.columns[f][i] as number])),
      hour: timestampFromMs(hours[k] as number),
    }));
    const forecast = await clients.predict.predictBatch({ rows: conditions });
    await clients.monitor.reportActuals({
      actuals: rows.map((i, k) => ({
        hour: timestampFromMs(hours[k] as number),
        cnt: data.cnt[i] as number,
      })),
    });
    const endOfDay = instantOfLocalHour(dayNumber(nextDay(date)), 0).getTime();
    const check = await clients.monitor.runCheck({
      window: { to: timestampFromMs(endOfDay) },
      allowRetrain: options.retrain,
    });
    const perf = await clients.monitor.getPerformance({
      window: {
        from: timestampFromMs(endOfDay - 7 * DAY_MS),
        to: timestampFromMs(endOfDay),
      },
    });
    const served = perf.versions.find((v) => v.modelVersion === forecast.modelVersion);
    const report = check.report;
    const rules: DayRules | undefined = report
      ? {
          evidentlyDrift: report.datasetDrift,
          evidentlyShare: report.driftedShare,
          seasonalDrift: report.seasonalDatasetDrift || report.unseenCalendarFeatures.length > 0,
          seasonalShare: report.seasonalDriftedShare,
          unseenCalendar: [...report.unseenCalendarFeatures],
          estimatedRmse: check.estimatedRmse,
          threshold: served?.rmseThreshold ?? 0,
          estimatedThreshold: check.estimatedRmseThreshold,
          // One check a day and alerts de-duplicated within 24 h: every violation of the day is raised.
          estimatedAlert: check.alerts.some((a) => a.rule === AlertRule.ESTIMATED_RMSE),
          windowRmse: served?.rmse ?? 0,
          windowLabelledHours: served?.labelledHours ?? 0,
        }
      : undefined;
    const day: DayResult = {
      date,
      ...(rules ? { rules } : {}),
      modelVersion: forecast.modelVersion,
      hours: rows.length,
      rmse: rmse(
        Array.from(rows, (i) => data.cnt[i] as number),
        forecast.predictions,
      ),
      alerts: check.alerts.map((a) => a.message),
    };
    if (check.retrainJobId) {
      day.retrainJob = check.retrainJobId;
      const job = await waitForJob(clients.train, check.retrainJobId);
      if (job?.state === JobState.SUCCEEDED) {
        day.registered = job.modelVersion;
        day.promoted = job.promoted;
        // The server swaps models asynchronously; tomorrow's forecasts must come from the promoted one.
        if (job.promoted) await waitForServing(clients.predict, job.modelVersion);
      }
    }
    results.push(day);
    options.onDay?.(day);
  }
  return results;
}

export function timelineCsv(days: readonly DayResult[]): string {
  const quote = (s: string) => `"${s.replaceAll('"', '""')}"`;
  const lines = days.map((d) =>
    [
      d.date,
      d.modelVersion,
      d.hours,
      d.rmse.toFixed(3),
      d.retrainJob ?? "",
      d.registered ?? "",
      d.promoted === undefined ? "" : String(d.promoted),
      quote(d.alerts.join("; ")),
      d.rules ? String(d.rules.evidentlyDrift) : "",
      d.rules ? String(d.rules.seasonalDrift) : "",
      d.rules ? d.rules.estimatedRmse.toFixed(3) : "",
      d.rules ? d.rules.windowRmse.toFixed(3) : "",
      d.rules ? d.rules.threshold.toFixed(3) : "",
      d.rules ? d.rules.estimatedThreshold.toFixed(3) : "",
      d.rules ? String(d.rules.estimatedAlert) : "",
    ].join(","),
  );
  return `date,model_version,hours,rmse,retrain_job,registered_version,promoted,alerts,evidently_drift,seasonal_drift,estimated_rmse_7d,live_rmse_7d,rmse_threshold,estimated_rmse_threshold,estimated_alert\n${lines.join("\n")}\n`;
}

export interface RuleScore {
  /** Weeks the rule fired on. */
  fired: number;
  truePositives: number;
  /** TP / fired; null when the rule never fired. */
  precision: number | null;
  /** TP / weeks whose realised RMSE exceeded the threshold; null when there were none. */
  recall: number | null;
}

export interface RuleJudgement {
  weeks: number;
  /** Weeks whose realised live RMSE (≥ 72 labelled hours) exceeded the alert threshold. */
  weeksOverThreshold: number;
  /** Dataset drift as Evidently's default judges it: the rule before issue 17. */
  evidentlyDrift: RuleScore;
  seasonalDrift: RuleScore;
  estimatedRmse: RuleScore;
  /** Either calendar-aware drift or the estimate: what an on-call engineer would be paged by. */
  seasonalDriftOrEstimate: RuleScore;
  weekly: {
    week: string;
    liveRmse: number;
    threshold: number;
    overThreshold: boolean;
    evidentlyDrift: boolean;
    seasonalDrift: boolean;
    estimatedRmse: number;
    estimatedThreshold: number;
    estimatedAlert: boolean;
  }[];
}

function score(fired: readonly boolean[], truth: readonly boolean[]): RuleScore {
  let tp = 0;
  let f = 0;
  let t = 0;
  fired.forEach((x, i) => {
    if (x) f++;
    if (truth[i]) t++;
    if (x && truth[i]) tp++;
  });
  return { fired: f, truePositives: tp, precision: f > 0 ? tp / f : null, recall: t > 0 ? tp / t : null };
}

/**
 * Each week of the replay (the check at the end of every 7th replayed day, whose window is that
 * week), whether the realised live RMSE of the serving version exceeded the alert threshold, and
 * the precision and recall of each rule against that. A week with fewer than 72 labelled hours of
 * the serving version (a promotion mid-week) has no realised RMSE to judge by and is left out.
 */
export function judgeRules(days: readonly DayResult[], minLabelledHours = 72): RuleJudgement {
  const weekly: RuleJudgement["weekly"] = [];
  days.forEach((d, i) => {
    if (i % 7 !== 6 || !d.rules || d.rules.windowLabelledHours < minLabelledHours || d.rules.threshold <= 0)
      return;
    const r = d.rules;
    weekly.push({
      week: d.date,
      liveRmse: r.windowRmse,
      threshold: r.threshold,
      overThreshold: r.windowRmse > r.threshold,
      evidentlyDrift: r.evidentlyDrift,
      seasonalDrift: r.seasonalDrift,
      estimatedRmse: r.estimatedRmse,
      estimatedThreshold: r.estimatedThreshold,
      estimatedAlert: r.estimatedAlert,
    });
  });
  const truth = weekly.map((w) => w.overThreshold);
  // The server's estimated_rmse rule as it ran (its own threshold, persistence), not a re-derivation.
  const estimated = weekly.map((w) => w.estimatedAlert);
  return {
    weeks: weekly.length,
    weeksOverThreshold: truth.filter(Boolean).length,
    evidentlyDrift: score(
      weekly.map((w) => w.evidentlyDrift),
      truth,
    ),
    seasonalDrift: score(
      weekly.map((w) => w.seasonalDrift),
      truth,
    ),
    estimatedRmse: score(estimated, truth),
    seasonalDriftOrEstimate: score(
      weekly.map((w, i) => w.seasonalDrift || (estimated[i] as boolean)),
      truth,
    ),
    weekly,
  };
}

/** Daily RMSE of both replays, with retrain (triangle) and promotion (circle) markers. */
export function chartSvg(
  withRetrain: readonly DayResult[],
  withoutRetrain: readonly DayResult[],
  title: string,
): string {
  const width = 1000;
  const height = 360;
  const pad = { left: 50, right: 20, top: 30, bottom: 40 };
  const all = [...withRetrain, ...withoutRetrain];
  const maxY = Math.max(1, ...all.map((d) => d.rmse));
  const n = Math.max(withRetrain.length, withoutRetrain.length);
  const x = (i: number) => pad.left + ((width - pad.left - pad.right) * i) / Math.max(1, n - 1);
  const y = (v: number) => pad.top + (height - pad.top - pad.bottom) * (1 - v / maxY);
  const line = (days: readonly DayResult[]) =>
    days.map((d, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(d.rmse).toFixed(1)}`).join(" ");
  const markers = withRetrain
    .map((d, i) => {
      if (d.retrainJob === undefined) return "";
      const cx = x(i);
      const tri = `<path d="M${cx.toFixed(1)},${(pad.top - 2).toFixed(1)} l-5,-9 h10 z" fill="#555"><title>${d.date}: retraining started</title></path>`;
      const dot = d.promoted
        ? `<circle cx="${cx.toFixed(1)}" cy="${y(d.rmse).toFixed(1)}" r="5" fill="#2a9d3a"><title>${d.date}: version ${d.registered} promoted</title></circle>`
        : "";
      return tri + dot;
    })
    .join("");
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (f) =>
        `<text x="${pad.left - 6}" y="${(y(maxY * f) + 4).toFixed(1)}" text-anchor="end">${Math.round(maxY * f)}</text>`,
    )
    .join("");
  const months = withRetrain
    .map((d, i) =>
      d.date.endsWith("-01")
        ? `<text x="${x(i).toFixed(1)}" y="${height - pad.bottom + 16}">${d.date.slice(0, 7)}</text>`
        : "",
    )
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" font-family="sans-serif" font-size="11">
<title>${title}</title>
<text x="${pad.left}" y="16" font-size="13">${title}</text>
<line x1="${pad.left}" y1="${height - pad.bottom}" x2="${width - pad.right}" y2="${height - pad.bottom}" stroke="#999"/>
${ticks}${months}
<path d="${line(withoutRetrain)}" fill="none" stroke="#c0392b" stroke-width="1.2" opacity="0.8"/>
<path d="${line(withRetrain)}" fill="none" stroke="#2c6fbb" stroke-width="1.4"/>
${markers}
<text x="${width - 330}" y="16"><tspan fill="#2c6fbb">■ with retraining</tspan>  <tspan fill="#c0392b">■ without</tspan>  ▼ retrain  <tspan fill="#2a9d3a">●</tspan> promotion</text>
</svg>
`;
}

export async function writeReplayOutputs(
  outDir: string,
  withRetrain: readonly DayResult[],
  withoutRetrain: readonly DayResult[],
  summary: Record<string, unknown>,
): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "timeline.csv"), timelineCsv(withRetrain));
  await writeFile(join(outDir, "timeline-no-retrain.csv"), timelineCsv(withoutRetrain));
  await writeFile(
    join(outDir, "daily-rmse.svg"),
    chartSvg(withRetrain, withoutRetrain, "Daily RMSE, replay of 2012"),
  );
  const judgement = (summary as unknown as ComparisonSummary).alertJudgement;
  if (judgement) {
    await writeFile(
      join(outDir, "weeks.csv"),
      weeksCsv(judgement.withRetraining, judgement.withoutRetraining),
    );
  }
  await writeFile(join(outDir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
  await writeFile(join(outDir, "README.md"), summaryMarkdown(summary as unknown as ComparisonSummary));
}

interface ComparisonSummary {
  trainUntil: string;
  from: string;
  to: string;
  retrainings: { date: string; version?: string; promoted?: boolean; alerts: string[] }[];
  firstAutomaticPromotion: string | null;
  retrainingCount?: number;
  alertJudgement?: { withRetraining: RuleJudgement; withoutRetraining: RuleJudgement };
  window30Days: { from?: string; to?: string } | null;
  meanDailyRmse30DaysWithRetraining: number | null;
  meanDailyRmse30DaysWithoutRetraining: number | null;
  meanDailyRmseWholeReplay: { withRetraining: number; withoutRetraining: number };
  secondsPerReplay: { withRetraining: number; withoutRetraining: number };
  machine: string;
}

function judgementMarkdown(j: ComparisonSummary["alertJudgement"]): string {
  if (!j) return "";
  const p = (x: number | null) => (x === null ? "n/a" : x.toFixed(2));
  const row = (name: string, a: RuleScore, b: RuleScore) =>
    `| ${name} | ${a.fired} | ${p(a.precision)} | ${p(a.recall)} | ${b.fired} | ${p(b.precision)} | ${p(b.recall)} |`;
  const w = j.withRetraining;
  const o = j.withoutRetraining;
  return `
## Do the alerts mean something?

Each week (the check at the end of every 7th day, whose 7-day window is that week) is judged by whether
the realised live RMSE of the serving version exceeded the alert threshold (1.5 × its test RMSE), and
every rule by its precision and recall against that; a rule is counted as fired when it was violated at
that check, alert de-duplication aside. Weeks over the threshold: ${w.weeksOverThreshold} of ${w.weeks} with retraining,
${o.weeksOverThreshold} of ${o.weeks} without (weeks with fewer than 72 labelled hours of the serving version, i.e. a promotion
mid-week, are left out).

| rule | fired (with retraining) | precision | recall | fired (without) | precision | recall |
|---|---|---|---|---|---|---|
${row("dataset drift, Evidently's default (before)", w.evidentlyDrift, o.evidentlyDrift)}
${row("dataset drift as the server judges it (calendar-aware, importance-weighted share ≥ 0.5 or unseen calendar values)", w.seasonalDrift, o.seasonalDrift)}
${row("estimated RMSE > 1.25 × its estimate over the test window, two checks running", w.estimatedRmse, o.estimatedRmse)}
${row("either: what pages the on-call engineer", w.seasonalDriftOrEstimate, o.seasonalDriftOrEstimate)}

Week by week: [weeks.csv](weeks.csv).
`;
}

export function weeksCsv(withRetrain: RuleJudgement, withoutRetrain: RuleJudgement): string {
  const lines = [
    ...withRetrain.weekly.map((w) => ({ run: "with_retraining", ...w })),
    ...withoutRetrain.weekly.map((w) => ({ run: "without_retraining", ...w })),
  ].map((w) =>
    [
      w.run,
      w.week,
      w.liveRmse.toFixed(3),
      w.threshold.toFixed(3),
      w.overThreshold,
      w.evidentlyDrift,
      w.seasonalDrift,
      w.estimatedRmse.toFixed(3),
      w.estimatedThreshold.toFixed(3),
      w.estimatedAlert,
    ].join(","),
  );
  return `run,week_ending,live_rmse_7d,threshold,over_threshold,evidently_drift,seasonal_drift,estimated_rmse_7d,estimated_rmse_threshold,estimated_alert\n${lines.join("\n")}\n`;
}

function summaryMarkdown(s: ComparisonSummary): string {
  const f = (x: number | null | undefined) => (x === null || x === undefined ? "n/a" : x.toFixed(1));
  const rows = s.retrainings
    .map(
      (r) =>
        `| ${r.date} | ${r.version ?? "failed"} | ${r.promoted ? "yes" : "no"} | ${r.alerts.join("<br>")} |`,
    )
    .join("\n");
  return `# Replay of ${s.from} – ${s.to}

Generated by \`make replay\` (\`bikeshare replay --train-until ${s.trainUntil} --from ${s.from} --to ${s.to}\`) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${s.machine}.

Each replay runs its own fresh server. The initial model is trained on data until ${s.trainUntil} and put in production.
Then, for each day: the day's 24 forecasts (PredictBatch, each hour with its timestamp), the day's actual counts
(ReportActuals), and the day's monitoring check (RunCheck on a 7-day window ending at midnight). In the first replay
a violated rule may start a retraining on all labelled data so far, and the new version reaches production only
through the champion/challenger gate (both models judged on the most recent 14 labelled days, which neither has
been fitted on). The second replay is the same without retraining.

![daily RMSE](daily-rmse.svg)

| | with retraining | without |
|---|---|---|
| mean daily RMSE, 30 days after the first automatic promotion (${s.window30Days?.from ?? "?"} – ${s.window30Days?.to ?? "?"}) | **${f(s.meanDailyRmse30DaysWithRetraining)}** | ${f(s.meanDailyRmse30DaysWithoutRetraining)} |
| mean daily RMSE, whole replay | ${f(s.meanDailyRmseWholeReplay.withRetraining)} | ${f(s.meanDailyRmseWholeReplay.withoutRetraining)} |
| wall time of the replay | ${f(s.secondsPerReplay.withRetraining)} s | ${f(s.secondsPerReplay.withoutRetraining)} s |

First automatic promotion: ${s.firstAutomaticPromotion ?? "none"}. Retrainings started: ${s.retrainingCount ?? s.retrainings.length}.
${judgementMarkdown(s.alertJudgement)}

| retraining started | version | promoted | rules violated that day |
|---|---|---|---|
${rows}

Files: [timeline.csv](timeline.csv) and [timeline-no-retrain.csv](timeline-no-retrain.csv) (one row per day: version
serving, RMSE, retraining, promotion, alerts), [summary.json](summary.json).
`;
}

export interface ComparisonOptions extends Omit<ReplayOptions, "retrain" | "modelName"> {
  outDir: string;
  /** Starts a fresh server (own database and artifacts) and returns clients for it. */
  startServer: () => Promise<{ clients: ReplayClients; modelName: string; stop: () => Promise<void> }>;
  log?: (line: string) => void;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/**
 * The acceptance run of the monitoring loop: the same replay with and without automatic
 * retraining, each on a fresh server, compared over the 30 days after the first automatic promotion.
 */
export async function replayComparison(options: ComparisonOptions): Promise<Record<string, unknown>> {
  const runs: DayResult[][] = [];
  const seconds: number[] = [];
  for (const retrain of [true, false]) {
    const started = performance.now();
    const server = await options.startServer();
    try {
      options.log?.(`replay ${retrain ? "with" : "without"} retraining`);
      runs.push(
        await replay(server.clients, {
          ...options,
          retrain,
          modelName: server.modelName,
          onDay: (d) => {
            if (d.retrainJob || d.date.endsWith("-01")) {
              options.log?.(
                `${d.date} v${d.modelVersion} RMSE ${d.rmse.toFixed(1)}${d.retrainJob ? ` retrain → v${d.registered ?? "?"}${d.promoted ? " promoted" : " not promoted"}` : ""}`,
              );
            }
          },
        }),
      );
    } finally {
      await server.stop();
    }
    seconds.push((performance.now() - started) / 1000);
  }
  const [withRetrain, withoutRetrain] = runs as [DayResult[], DayResult[]];
  const firstPromotion = withRetrain.findIndex((d) => d.promoted === true);
  const after = firstPromotion < 0 ? [] : withRetrain.slice(firstPromotion + 1, firstPromotion + 31);
  const sameDays = new Set(after.map((d) => d.date));
  const baseline = withoutRetrain.filter((d) => sameDays.has(d.date));
  const summary = {
    trainUntil: options.trainUntil,
    from: options.from,
    to: options.to,
    retrainings: withRetrain
      .filter((d) => d.retrainJob)
      .map((d) => ({ date: d.date, version: d.registered, promoted: d.promoted, alerts: d.alerts })),
    firstAutomaticPromotion: firstPromotion < 0 ? null : withRetrain[firstPromotion]?.date,
    retrainingCount: withRetrain.filter((d) => d.retrainJob).length,
    alertJudgement: {
      withRetraining: judgeRules(withRetrain),
      withoutRetraining: judgeRules(withoutRetrain),
    },
    window30Days: after.length > 0 ? { from: after[0]?.date, to: after.at(-1)?.date } : null,
    meanDailyRmse30DaysWithRetraining: after.length > 0 ? mean(after.map((d) => d.rmse)) : null,
    meanDailyRmse30DaysWithoutRetraining: baseline.length > 0 ? mean(baseline.map((d) => d.rmse)) : null,
    meanDailyRmseWholeReplay: {
      withRetraining: mean(withRetrain.map((d) => d.rmse)),
      withoutRetraining: mean(withoutRetrain.map((d) => d.rmse)),
    },
    secondsPerReplay: { withRetraining: seconds[0], withoutRetraining: seconds[1] },
    machine: `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
  };
  await writeReplayOutputs(options.outDir, withRetrain, withoutRetrain, summary);
  return summary;
}
