import { useEffect, useState } from "preact/hooks";
import { type Run, RunStatus } from "../../../gen/bikeshare/v1/registry_pb.js";
import { explain, registry } from "../api.js";
import { LineChart, type Series } from "../chart.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";
import { COMPARE_MAX, COMPARE_MIN } from "./runs.js";

/** A metric's points per run; only metrics logged at more than one step get a chart. */
type Histories = Record<string, Series[]>;

const label = (run: Run) => `${run.name || shortId(run.id)} (${shortId(run.id)})`;

function unionKeys(runs: Run[], group: "params" | "metrics" | "tags"): string[] {
  return [...new Set(runs.flatMap((r) => Object.keys(r[group])))].sort();
}

/** One row per key, one column per run; a row whose values differ is marked, since that is what to read. */
function Rows(props: { runs: Run[]; group: "params" | "metrics" | "tags" }) {
  return (
    <>
      {unionKeys(props.runs, props.group).map((key) => {
        const values = props.runs.map((r) => r[props.group][key]);
        const differs = new Set(values.map(String)).size > 1;
        return (
          <tr key={`${props.group}.${key}`} class={differs ? "differs" : undefined}>
            <th scope="row">
              {props.group}.{key}
            </th>
            {values.map((value, i) =>
              props.group === "metrics" ? (
                <td
                  key={props.runs[i]?.id}
                  class="n"
                  data-key={`metrics.${key}`}
                  data-value={value === undefined ? "" : String(value)}
                >
                  {num(value as number | undefined)}
                </td>
              ) : (
                <td key={props.runs[i]?.id} data-key={`${props.group}.${key}`}>
                  {value ?? ""}
                </td>
              ),
            )}
          </tr>
        );
      })}
    </>
  );
}

export function ComparePage(props: { query: URLSearchParams }) {
  const ids = (props.query.get("runs") ?? "").split(",").filter((id) => id !== "");
  const [runs, setRuns] = useState<Run[] | undefined>(undefined);
  const [histories, setHistories] = useState<Histories | undefined>(undefined);
  const [error, setError] = useState("");
  const key = ids.join(",");

  useEffect(() => {
    if (ids.length < COMPARE_MIN || ids.length > COMPARE_MAX) {
      setError(
        `Choose ${COMPARE_MIN} to ${COMPARE_MAX} runs on the Runs page to compare; got ${ids.length}.`,
      );
      return;
    }
    const abort = new AbortController();
    (async () => {
      try {
        const loaded = await Promise.all(
          ids.map(async (runId) => (await registry.getRun({ runId }, { signal: abort.signal })).run),
        );
        const found = loaded.filter((r): r is Run => r !== undefined);
        setRuns(found);
        // Every metric's history for every run: the boosted models log train and validation RMSE per
        // round, other families one final point, which is not a curve and gets no chart.
        const keys = unionKeys(found, "metrics");
        const points = await Promise.all(
          found.flatMap((run) =>
            keys
              .filter((k) => run.metrics[k] !== undefined)
              .map(async (k) => {
                const res = await registry.getMetricHistory(
                  { runId: run.id, key: k },
                  { signal: abort.signal },
                );
                return {
                  run,
                  key: k,
                  points: res.points.map((p) => [Number(p.step), p.value] as [number, number]),
                };
              }),
          ),
        );
        const byKey: Histories = {};
        for (const k of keys) {
          const series = points.filter((p) => p.key === k);
          if (!series.some((s) => s.points.length > 1)) continue;
          byKey[k] = found.map((run) => ({
            label: label(run),
            points: series.find((s) => s.run.id === run.id)?.points ?? [],
          }));
        }
        setHistories(byKey);
      } catch (e) {
        if (!abort.signal.aborted) setError(explain(e));
      }
    })();
    return () => abort.abort();
  }, [key]);

  const charts = Object.entries(histories ?? {});
  return (
    <section aria-labelledby="compare-title">
      <h1 id="compare-title">Compare runs</h1>
      <p>
        <a href={href("runs")}>Back to runs</a>
      </p>
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {runs && (
        <>
          <h2>Metric histories</h2>
          {histories === undefined ? (
            <p class="hint">Loading metric histories…</p>
          ) : charts.length === 0 ? (
            <p class="hint" data-testid="no-history">
              None of these runs logged a metric at more than one step (only boosted models log per round).
            </p>
          ) : (
            <div class="charts">
              {charts.map(([metric, series]) => (
                <LineChart
                  key={metric}
                  testId={`history-${metric}`}
                  title={`${metric} per step`}
                  xLabel="step (boosting round)"
                  yLabel={metric}
                  series={series}
                />
              ))}
            </div>
          )}
          <h2>Side by side</h2>
          <p class="hint">Rows whose values differ between the runs are marked.</p>
          <div class="scroll">
            <table data-testid="comparison">
              <thead>
                <tr>
                  <th scope="col">Run</th>
                  {runs.map((r) => (
                    <th scope="col" key={r.id} data-run-id={r.id} title={r.id}>
                      {label(r)}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                <tr>
                  <th scope="row">status</th>
                  {runs.map((r) => (
                    <td key={r.id}>{RunStatus[r.status].toLowerCase()}</td>
                  ))}
                </tr>
                <tr>
                  <th scope="row">started</th>
                  {runs.map((r) => (
                    <td key={r.id}>{time(r.startTime)}</td>
                  ))}
                </tr>
                <Rows runs={runs} group="params" />
                <Rows runs={runs} group="metrics" />
                <Rows runs={runs} group="tags" />
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}
