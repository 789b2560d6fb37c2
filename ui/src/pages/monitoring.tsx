import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import {
  type Alert,
  AlertRule,
  type DriftReport,
  type RunCheckResponse,
  type VersionPerformance,
} from "../../../gen/bikeshare/v1/monitor_pb.js";
import { explain, monitor } from "../api.js";
import { LineChart, type Series } from "../chart.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
/** At most this many points per line: one GetPerformance each, so a long window stays a few calls. */
const MAX_BUCKETS = 30;

/** `YYYY-MM-DD` as midnight UTC; undefined for an empty or malformed date. */
function dayMs(text: string): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return undefined;
  const ms = Date.parse(`${text}T00:00:00Z`);
  return Number.isNaN(ms) ? undefined : ms;
}
const dayText = (ms: number) => new Date(ms).toISOString().slice(0, 10);

type Measure = "rmse" | "mae" | "within20pct" | "coverage";
const MEASURES: { id: Measure; title: string }[] = [
  { id: "rmse", title: "RMSE" },
  { id: "mae", title: "MAE" },
  { id: "within20pct", title: "share within ±20 %" },
  { id: "coverage", title: "interval coverage" },
];

/** A measure of one version in one window; undefined when no labelled hour backs it. */
function measureOf(v: VersionPerformance, m: Measure): number | undefined {
  if (m === "coverage") {
    const first = v.intervals[0];
    return first && first.labelledHours > 0 ? first.coverage : undefined;
  }
  return v.labelledHours > 0 ? v[m] : undefined;
}

interface Bucket {
  from: number;
  versions: VersionPerformance[];
}

/** Live accuracy over time: the window cut into days (or equal spans of whole hours for long windows). */
async function overTime(from: number, until: number, signal: AbortSignal): Promise<Bucket[]> {
  const hours = Math.ceil((until - from) / HOUR_MS);
  const count = Math.max(1, Math.min(MAX_BUCKETS, Math.ceil((until - from) / DAY_MS)));
  const span = Math.ceil(hours / count) * HOUR_MS;
  const starts: number[] = [];
  for (let at = from; at < until; at += span) starts.push(at);
  return Promise.all(
    starts.map(async (start) => {
      const res = await monitor.getPerformance(
        { window: { from: timestampFromMs(start), to: timestampFromMs(Math.min(until, start + span)) } },
        { signal },
      );
      return { from: start, versions: res.versions };
    }),
  );
}

function seriesOf(buckets: Bucket[], measure: Measure): Series[] {
  const versions = [...new Set(buckets.flatMap((b) => b.versions.map((v) => v.modelVersion)))].sort(
    (a, b) => Number(a) - Number(b),
  );
  return versions.map((version) => ({
    label: `v${version}`,
    points: buckets.flatMap((b) => {
      const v = b.versions.find((x) => x.modelVersion === version);
      const value = v === undefined ? undefined : measureOf(v, measure);
      return value === undefined ? [] : [[b.from / 1000, value] as [number, number]];
    }),
  }));
}

const ruleName = (rule: AlertRule) => (AlertRule[rule] ?? String(rule)).toLowerCase();
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

function CheckForm(props: { until: number | undefined; onDone(): void }) {
  const [retrain, setRetrain] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: boolean; res?: RunCheckResponse; text: string } | undefined>();
  return (
    <form
      class="action"
      aria-labelledby="check-title"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setResult(undefined);
        try {
          const res = await monitor.runCheck({
            ...(props.until !== undefined ? { window: { to: timestampFromMs(props.until) } } : {}),
            allowRetrain: retrain,
          });
          const parts = [
            res.report
              ? `drift report ${shortId(res.report.id)} (dataset drift ${res.report.datasetDrift ? "yes" : "no"})`
              : "no drift report (too few predictions in the window)",
            `${res.alerts.length} alert${res.alerts.length === 1 ? "" : "s"}`,
            ...(res.retrainJobId !== "" ? [`retraining job ${shortId(res.retrainJobId)}`] : []),
          ];
          setResult({ ok: true, res, text: `Check done: ${parts.join(", ")}.` });
          props.onDone();
        } catch (error) {
          setResult({ ok: false, text: explain(error) });
        } finally {
          setBusy(false);
        }
      }}
    >
      <h2 id="check-title">Run check now</h2>
      <p class="hint">
        Runs every monitoring rule over the policy's window ending{" "}
        {props.until === undefined
          ? "now"
          : `at ${new Date(props.until).toISOString().slice(0, 16)}Z (the “to” date)`}
        , as the scheduler does. Needs a trainer token.
      </p>
      <label>
        <input
          type="checkbox"
          name="allow-retrain"
          checked={retrain}
          onChange={(e) => setRetrain(e.currentTarget.checked)}
        />
        Start a retraining when a rule is violated
      </label>
      <button type="submit" disabled={busy}>
        {busy ? "Checking…" : "Run check now"}
      </button>
      {result && (
        <p
          class={result.ok ? "ok" : "error"}
          role={result.ok ? "status" : "alert"}
          data-testid="check-result"
          data-report-id={result.res?.report?.id ?? ""}
        >
          {result.text}
          {result.res?.report && (
            <>
              {" "}
              <a href={result.res.report.htmlPath} target="_blank" rel="noopener">
                Open the report
              </a>
            </>
          )}
        </p>
      )}
    </form>
  );
}

export function MonitoringPage(props: { query: URLSearchParams }) {
  const fromText = props.query.get("from") ?? "";
  const toText = props.query.get("to") ?? "";
  const measure = (props.query.get("measure") ?? "rmse") as Measure;
  const [form, setForm] = useState({ from: fromText, to: toText });
  const [now] = useState(() => Date.now());
  const until = dayMs(toText);
  const from = dayMs(fromText) ?? (until ?? now) - 7 * DAY_MS;
  const [performance, setPerformance] = useState<VersionPerformance[] | undefined>(undefined);
  const [buckets, setBuckets] = useState<Bucket[] | undefined>(undefined);
  const [reports, setReports] = useState<DriftReport[]>([]);
  const [alerts, setAlerts] = useState<Alert[]>([]);
  const [error, setError] = useState("");
  const [reloads, setReloads] = useState(0);

  useEffect(() => {
    setForm({ from: fromText, to: toText });
    setError("");
    const end = until ?? now;
    if (from >= end) {
      setError(`“from” (${dayText(from)}) must be before “to” (${dayText(end)}).`);
      return;
    }
    const abort = new AbortController();
    const window = { from: timestampFromMs(from), to: timestampFromMs(end) };
    (async () => {
      try {
        const [p, r, a] = await Promise.all([
          monitor.getPerformance({ window }, { signal: abort.signal }),
          monitor.listReports({ pageSize: 20 }, { signal: abort.signal }),
          monitor.listAlerts({ pageSize: 50 }, { signal: abort.signal }),
        ]);
        setPerformance(p.versions);
        setReports(r.reports);
        setAlerts(a.alerts);
        setBuckets(await overTime(from, end, abort.signal));
      } catch (e) {
        // Leaving the page (or changing the window) aborts the calls: not an error to show.
        if (!abort.signal.aborted) setError(explain(e));
      }
    })();
    return () => abort.abort();
  }, [fromText, toText, reloads]);

  const go = (next: Record<string, string>) => {
    window.location.hash = href("monitoring", { from: fromText, to: toText, measure, ...next });
  };
  const chosen = MEASURES.find((m) => m.id === measure) ?? (MEASURES[0] as (typeof MEASURES)[number]);
  return (
    <section aria-labelledby="monitoring-title">
      <h1 id="monitoring-title">Monitoring</h1>
      <form
        class="search"
        onSubmit={(e) => {
          e.preventDefault();
          go(form);
        }}
      >
        <label>
          From (UTC date)
          <input
            name="from"
            type="date"
            value={form.from}
            onInput={(e) => setForm({ ...form, from: e.currentTarget.value })}
          />
        </label>
        <label>
          To (UTC date; empty: now)
          <input
            name="to"
            type="date"
            value={form.to}
            onInput={(e) => setForm({ ...form, to: e.currentTarget.value })}
          />
        </label>
        <button type="submit">Show window</button>
      </form>
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {performance && (
        <>
          <h2>
            Live accuracy, {dayText(from)} to {until === undefined ? "now" : dayText(until)}
          </h2>
          <div class="scroll">
            <table data-testid="performance">
              <thead>
                <tr>
                  <th scope="col">Version</th>
                  <th scope="col">Labelled hours</th>
                  <th scope="col">RMSE</th>
                  <th scope="col">MAE</th>
                  <th scope="col">Within ±20 %</th>
                  <th scope="col">Interval coverage</th>
                  <th scope="col">Estimated RMSE (hours)</th>
                  <th scope="col">Alert above</th>
                </tr>
              </thead>
              <tbody>
                {performance.map((v) => (
                  <tr key={v.modelVersion} data-version={v.modelVersion}>
                    <td>v{v.modelVersion}</td>
                    <td class="n" data-key="labelled_hours" data-value={String(v.labelledHours)}>
                      {v.labelledHours}
                    </td>
                    <td class="n" data-key="rmse" data-value={String(v.rmse)}>
                      {v.labelledHours > 0 ? num(v.rmse) : "—"}
                    </td>
                    <td class="n" data-key="mae" data-value={String(v.mae)}>
                      {v.labelledHours > 0 ? num(v.mae) : "—"}
                    </td>
                    <td class="n" data-key="within_20pct" data-value={String(v.within20pct)}>
                      {v.labelledHours > 0 ? pct(v.within20pct) : "—"}
                    </td>
                    <td data-key="intervals">
                      {v.intervals.length === 0
                        ? "no intervals served"
                        : v.intervals.map((i) => (
                            <span
                              key={i.level}
                              class="metric"
                              data-level={String(i.level)}
                              data-value={String(i.coverage)}
                            >
                              {pct(i.level)}: {pct(i.coverage)} of {i.labelledHours} h
                            </span>
                          ))}
                    </td>
                    <td class="n" data-key="estimated_rmse" data-value={String(v.estimatedRmse)}>
                      {v.estimatedHours > 0 ? `${num(v.estimatedRmse)} (${v.estimatedHours})` : "—"}
                    </td>
                    <td class="n" data-key="rmse_threshold" data-value={String(v.rmseThreshold)}>
                      {v.rmseThreshold > 0 ? num(v.rmseThreshold) : "—"}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {performance.length === 0 && (
            <p class="hint">No predictions were served for hours in this window.</p>
          )}
          <fieldset class="measures">
            <legend>Over time</legend>
            {MEASURES.map((m) => (
              <label key={m.id}>
                <input
                  type="radio"
                  name="measure"
                  value={m.id}
                  checked={m.id === chosen.id}
                  onChange={() => go({ measure: m.id })}
                />
                {m.title}
              </label>
            ))}
          </fieldset>
          {buckets === undefined ? (
            <p class="hint">Loading…</p>
          ) : (
            <LineChart
              key={chosen.id}
              testId="performance-chart"
              title={`${chosen.title} per version over time`}
              xLabel="time"
              yLabel={chosen.title}
              time
              series={seriesOf(buckets, chosen.id)}
            />
          )}
        </>
      )}
      <CheckForm until={until} onDone={() => setReloads((n) => n + 1)} />
      <h2>Drift reports</h2>
      <div class="scroll">
        <table data-testid="reports">
          <thead>
            <tr>
              <th scope="col">Created</th>
              <th scope="col">Version</th>
              <th scope="col">Window</th>
              <th scope="col">Rows</th>
              <th scope="col">Drifted share</th>
              <th scope="col">Dataset drift</th>
              <th scope="col">Report</th>
            </tr>
          </thead>
          <tbody>
            {reports.map((r) => (
              <tr key={r.id} data-report-id={r.id}>
                <td>{time(r.createdAt)}</td>
                <td>v{r.modelVersion}</td>
                <td>
                  {r.window?.from ? dayText(timestampDate(r.window.from).getTime()) : ""} –{" "}
                  {r.window?.to ? dayText(timestampDate(r.window.to).getTime()) : ""}
                </td>
                <td class="n">{r.currentRows}</td>
                <td class="n">
                  {pct(r.seasonalReferenceMonths.length > 0 ? r.seasonalDriftedShare : r.driftedShare)}
                </td>
                <td>
                  {(r.seasonalReferenceMonths.length > 0 ? r.seasonalDatasetDrift : r.datasetDrift) ? (
                    <span class="badge warn">drift</span>
                  ) : (
                    "no"
                  )}
                </td>
                <td>
                  <a href={r.htmlPath} target="_blank" rel="noopener">
                    HTML report <span class="visually-hidden">{r.id}</span>
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Alerts</h2>
      <div class="scroll">
        <table data-testid="alerts">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Rule</th>
              <th scope="col">Value</th>
              <th scope="col">Threshold</th>
              <th scope="col">Message</th>
              <th scope="col">Retraining</th>
            </tr>
          </thead>
          <tbody>
            {alerts.map((a) => (
              <tr key={a.id} data-alert-id={a.id}>
                <td>{time(a.time)}</td>
                <td>{ruleName(a.rule)}</td>
                <td class="n">{num(a.value)}</td>
                <td class="n">{num(a.threshold)}</td>
                <td class="wrap">{a.message}</td>
                <td>
                  {a.jobId !== "" && (
                    <a href={href("jobs", { job: a.jobId })}>
                      <code>{shortId(a.jobId)}</code>
                    </a>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {alerts.length === 0 && <p class="hint">No alerts.</p>}
    </section>
  );
}
