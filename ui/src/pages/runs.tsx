import { useEffect, useState } from "preact/hooks";
import { type Run, RunStatus } from "../../../gen/bikeshare/v1/registry_pb.js";
import { explain, registry } from "../api.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

type Group = "params" | "metrics" | "tags";
const GROUPS: Group[] = ["params", "metrics", "tags"];
/** What a comparison holds: two runs at least to compare, five at most to read side by side. */
export const COMPARE_MIN = 2;
export const COMPARE_MAX = 5;
/** `cols=none` in the URL: no param, metric or tag column (an empty value would drop out of the URL). */
const NO_COLUMNS = "none";

interface Column {
  group: Group;
  key: string;
}
const columnId = (c: Column) => `${c.group}.${c.key}`;

/**
 * The chosen columns from the URL's `cols` (`metrics.valid_rmse,params.max_depth`, in that order);
 * without it, every param and metric, as before the picker existed.
 */
function chosenColumns(cols: string | null, runs: Run[]): Column[] {
  if (cols === null) {
    return (["params", "metrics"] as Group[]).flatMap((g) =>
      keysOf(runs, g).map((key) => ({ group: g, key })),
    );
  }
  if (cols === NO_COLUMNS) return [];
  return cols.split(",").flatMap((id) => {
    const dot = id.indexOf(".");
    const group = id.slice(0, dot) as Group;
    return dot > 0 && GROUPS.includes(group) ? [{ group, key: id.slice(dot + 1) }] : [];
  });
}

/** order_by is a list; in the form it is one line, clauses split at commas as `runs search` prints them. */
function orderClauses(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function keysOf(runs: Run[], group: Group): string[] {
  const keys = new Set<string>();
  for (const run of runs) for (const key of Object.keys(run[group])) keys.add(key);
  return [...keys].sort();
}

export function RunsPage(props: { query: URLSearchParams }) {
  const filter = props.query.get("filter") ?? "";
  const order = props.query.get("order") ?? "start_time DESC";
  const experiments = props.query.get("experiments") ?? "";
  const [form, setForm] = useState({ filter, order, experiments });
  const [runs, setRuns] = useState<Run[] | undefined>(undefined);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");
  const [selected, setSelected] = useState<string[]>([]);
  const cols = props.query.get("cols");

  const search = async (pageToken: string) => {
    setError("");
    try {
      const res = await registry.searchRuns({
        filter,
        orderBy: orderClauses(order),
        experiments: experiments === "" ? [] : experiments.split(",").map((s) => s.trim()),
        pageSize: 100,
        pageToken,
      });
      setRuns((prev) => (pageToken === "" ? res.runs : [...(prev ?? []), ...res.runs]));
      setNext(res.nextPageToken);
    } catch (e) {
      setError(explain(e));
      if (pageToken === "") setRuns(undefined);
    }
  };
  // The URL holds the search, so a search is a link and Back returns to the previous one.
  useEffect(() => {
    setForm({ filter, order, experiments });
    void search("");
  }, [filter, order, experiments]);

  const columns = chosenColumns(cols, runs ?? []);
  const chosen = new Set(columns.map(columnId));
  // The URL keeps the columns with the search, so a link shows the same table.
  const choose = (next: Set<string>) => {
    const ordered = GROUPS.flatMap((g) =>
      [...new Set([...keysOf(runs ?? [], g), ...columns.filter((c) => c.group === g).map((c) => c.key)])]
        .sort()
        .map((key) => `${g}.${key}`),
    ).filter((id) => next.has(id));
    window.location.hash = href("runs", {
      filter,
      order,
      experiments,
      cols: ordered.length === 0 ? NO_COLUMNS : ordered.join(","),
    });
  };
  const toggle = (ids: string[], on: boolean) => {
    const next = new Set(chosen);
    for (const id of ids) on ? next.add(id) : next.delete(id);
    choose(next);
  };
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      <form
        class="search"
        onSubmit={(e) => {
          e.preventDefault();
          window.location.hash = href("runs", { ...form, cols: cols ?? "" });
        }}
      >
        <label>
          Filter
          <input
            name="filter"
            placeholder="metrics.valid_rmse < 60 and params.family = 'gbtree'"
            value={form.filter}
            onInput={(e) => setForm({ ...form, filter: e.currentTarget.value })}
          />
        </label>
        <label>
          Order by
          <input
            name="order"
            placeholder="metrics.valid_rmse ASC, start_time DESC"
            value={form.order}
            onInput={(e) => setForm({ ...form, order: e.currentTarget.value })}
          />
        </label>
        <label>
          Experiments
          <input
            name="experiments"
            placeholder="all"
            value={form.experiments}
            onInput={(e) => setForm({ ...form, experiments: e.currentTarget.value })}
          />
        </label>
        <button type="submit">Search</button>
      </form>
      <details class="columns" data-testid="column-picker">
        <summary>Columns ({columns.length} shown)</summary>
        {GROUPS.map((g) => {
          const ids = [
            ...new Set([...keysOf(runs ?? [], g), ...columns.filter((c) => c.group === g).map((c) => c.key)]),
          ]
            .sort()
            .map((key) => `${g}.${key}`);
          const all = ids.length > 0 && ids.every((id) => chosen.has(id));
          return (
            <fieldset key={g}>
              <legend>
                <label>
                  <input
                    type="checkbox"
                    name={`all-${g}`}
                    checked={all}
                    disabled={ids.length === 0}
                    onChange={(e) => toggle(ids, e.currentTarget.checked)}
                  />
                  all {g}
                </label>
              </legend>
              {ids.map((id) => (
                <label key={id}>
                  <input
                    type="checkbox"
                    name={`col-${id}`}
                    checked={chosen.has(id)}
                    onChange={(e) => toggle([id], e.currentTarget.checked)}
                  />
                  {id.slice(g.length + 1)}
                </label>
              ))}
            </fieldset>
          );
        })}
      </details>
      <div class="compare-bar">
        <button
          type="button"
          data-testid="compare"
          disabled={selected.length < COMPARE_MIN || selected.length > COMPARE_MAX}
          onClick={() => {
            window.location.hash = href("compare", { runs: selected.join(",") });
          }}
        >
          Compare {selected.length} selected runs
        </button>
        <span class="hint">
          Tick {COMPARE_MIN} to {COMPARE_MAX} runs to compare their params, metrics and metric histories.
        </span>
      </div>
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {runs && (
        <div class="scroll">
          <table data-testid="runs">
            <caption>
              {runs.length} run{runs.length === 1 ? "" : "s"}
            </caption>
            <thead>
              <tr>
                <th scope="col">
                  <span class="visually-hidden">Compare</span>
                </th>
                <th scope="col">Run</th>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                {columns.map((c) => (
                  <th scope="col" key={`${c.group}.${c.key}`} class={c.group}>
                    {columnId(c)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {runs.map((run) => (
                <tr key={run.id} data-run-id={run.id}>
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Compare run ${run.name || run.id}`}
                      checked={selected.includes(run.id)}
                      disabled={!selected.includes(run.id) && selected.length >= COMPARE_MAX}
                      onChange={(e) => {
                        const on = e.currentTarget.checked;
                        setSelected((prev) => (on ? [...prev, run.id] : prev.filter((id) => id !== run.id)));
                      }}
                    />
                  </td>
                  <td title={run.id}>
                    <code>{shortId(run.id)}</code>
                  </td>
                  <td>{run.name}</td>
                  <td>{RunStatus[run.status].toLowerCase()}</td>
                  <td>{time(run.startTime)}</td>
                  {columns.map((c) => {
                    const value = run[c.group][c.key];
                    return c.group === "metrics" ? (
                      <td
                        key={`${c.group}.${c.key}`}
                        class="n"
                        data-key={`metrics.${c.key}`}
                        data-value={value === undefined ? "" : String(value)}
                      >
                        {num(value as number | undefined)}
                      </td>
                    ) : (
                      <td key={`${c.group}.${c.key}`} data-key={`${c.group}.${c.key}`}>
                        {value ?? ""}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {next !== "" && (
        <button type="button" onClick={() => void search(next)}>
          More runs
        </button>
      )}
    </section>
  );
}
