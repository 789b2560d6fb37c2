import { useEffect, useState } from "preact/hooks";
import { type Run, RunStatus } from "../../../gen/bikeshare/v1/registry_pb.js";
import { explain, registry } from "../api.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

type Group = "params" | "metrics" | "tags";
const GROUPS: Group[] = ["params", "metrics", "tags"];

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
  const [shown, setShown] = useState<Record<Group, boolean>>({ params: true, metrics: true, tags: false });

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

  const columns = GROUPS.filter((g) => shown[g]).flatMap((g) =>
    keysOf(runs ?? [], g).map((key) => ({ group: g, key })),
  );
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      <form
        class="search"
        onSubmit={(e) => {
          e.preventDefault();
          window.location.hash = href("runs", form);
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
      <fieldset class="columns">
        <legend>Columns</legend>
        {GROUPS.map((g) => (
          <label key={g}>
            <input
              type="checkbox"
              name={`show-${g}`}
              checked={shown[g]}
              onChange={(e) => setShown({ ...shown, [g]: e.currentTarget.checked })}
            />
            {g}
          </label>
        ))}
      </fieldset>
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
                <th scope="col">Run</th>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                {columns.map((c) => (
                  <th scope="col" key={`${c.group}.${c.key}`} class={c.group}>
                    {c.group}.{c.key}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {runs.map((run) => (
                <tr key={run.id} data-run-id={run.id}>
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
