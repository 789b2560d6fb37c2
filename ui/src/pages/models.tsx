import { useEffect, useState } from "preact/hooks";
import type {
  AliasChange,
  ModelVersion,
  RegisteredModel,
  Run,
} from "../../../gen/bikeshare/v1/registry_pb.js";
import { explain, registry, train } from "../api.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

/** The figures a version is judged by: its held-out test metrics (model-card.ts names them test_*). */
function testMetrics(version: ModelVersion): [string, number][] {
  return Object.entries(version.metrics)
    .filter(([key]) => key.startsWith("test_"))
    .sort(([a], [b]) => a.localeCompare(b));
}

/**
 * The champion/challenger evaluation the training job recorded on the version's run (the figures the
 * server's gate compares, services/registry/promotion-gate.ts), as a sentence.
 */
function GateCell(props: { run: Run | undefined }) {
  const run = props.run;
  if (!run) return <td />;
  const against = run.tags["gate.champion_version"];
  const challenger = run.metrics["gate.challenger_rmse"];
  const champion = run.metrics["gate.champion_rmse"];
  if (against === undefined || challenger === undefined || champion === undefined) {
    return <td data-key="gate">no evaluation (first model or registered by hand)</td>;
  }
  const beat = challenger < champion;
  return (
    <td data-key="gate" data-challenger={String(challenger)} data-champion={String(champion)}>
      <span class={beat ? "ok" : "error"}>{beat ? "beat" : "did not beat"}</span> v{against}: RMSE{" "}
      {num(challenger)} vs {num(champion)}
    </td>
  );
}

/**
 * The version production pointed at before it moved to the current one, from the audit history
 * (oldest first): the latest production move onto the current version says where it came from.
 */
export function previousProduction(history: AliasChange[], current: string | undefined): string | undefined {
  if (current === undefined) return undefined;
  const moves = history.filter((c) => c.alias === "production");
  for (let i = moves.length - 1; i >= 0; i--) {
    const move = moves[i] as AliasChange;
    if (move.toVersion === current && move.fromVersion !== "" && move.fromVersion !== current) {
      return move.fromVersion;
    }
  }
  return undefined;
}

/**
 * Roll back: production to the version it served before, with a reason. The CLI's way, `models
 * promote V --force --reason …`: the same SetAlias, so the same admin check and audit entry. With force,
 * because the gate admits only a challenger that beat the current version, which an older one seldom did;
 * the audit records it as forced only when the gate would have refused.
 */
function RollbackForm(props: {
  model: string;
  current: string | undefined;
  previous: string | undefined;
  onDone(): void;
}) {
  const [reason, setReason] = useState("");
  const [message, setMessage] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  if (props.previous === undefined) {
    return (
      <p class="hint" data-testid="rollback-none">
        Roll back: production {props.current ? `(v${props.current})` : ""} has no earlier version in the audit
        history to go back to.
      </p>
    );
  }
  return (
    <form
      class="action"
      aria-labelledby="rollback-title"
      onSubmit={async (e) => {
        e.preventDefault();
        setMessage(undefined);
        try {
          const { change } = await registry.setAlias({
            modelName: props.model,
            alias: "production",
            version: props.previous as string,
            reason,
            force: true,
          });
          setMessage({
            ok: true,
            text: `Rolled back: production now points at v${change?.toVersion} (was v${change?.fromVersion}).`,
          });
          setReason("");
          props.onDone();
        } catch (error) {
          setMessage({ ok: false, text: explain(error) });
        }
      }}
    >
      <h2 id="rollback-title">Roll back production</h2>
      <p class="hint">
        Moves production from v{props.current} back to v{props.previous}, the version it served before, past
        the champion/challenger gate if need be (the audit then marks it forced). Needs an admin token.
      </p>
      <label>
        Why roll back
        <input
          name="rollback-reason"
          required
          placeholder="recorded in the audit history"
          value={reason}
          onInput={(e) => setReason(e.currentTarget.value)}
        />
      </label>
      <button type="submit">Roll back to v{props.previous}</button>
      {message && (
        <p
          class={message.ok ? "ok" : "error"}
          role={message.ok ? "status" : "alert"}
          data-testid="rollback-result"
        >
          {message.text}
        </p>
      )}
    </form>
  );
}

function PromoteForm(props: { model: string; versions: ModelVersion[]; onDone(): void }) {
  const [version, setVersion] = useState(props.versions[0]?.version ?? "");
  const [alias, setAlias] = useState("production");
  const [reason, setReason] = useState("");
  const [force, setForce] = useState(false);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  return (
    <form
      class="action"
      aria-labelledby="promote-title"
      onSubmit={async (e) => {
        e.preventDefault();
        setMessage(undefined);
        try {
          const { change } = await registry.setAlias({
            modelName: props.model,
            alias,
            version,
            reason,
            force,
          });
          setMessage({
            ok: true,
            text: `${alias} now points at v${change?.toVersion ?? version} (was ${change?.fromVersion || "unset"}).`,
          });
          props.onDone();
        } catch (error) {
          setMessage({ ok: false, text: explain(error) });
        }
      }}
    >
      <h2 id="promote-title">Move an alias</h2>
      <p class="hint">Needs an admin token. Moving production goes through the champion/challenger gate.</p>
      <label>
        Version
        <select name="version" value={version} onChange={(e) => setVersion(e.currentTarget.value)}>
          {props.versions.map((v) => (
            <option key={v.version} value={v.version}>
              v{v.version}
            </option>
          ))}
        </select>
      </label>
      <label>
        Alias
        <input name="alias" required value={alias} onInput={(e) => setAlias(e.currentTarget.value)} />
      </label>
      <label>
        Reason
        <input
          name="reason"
          required
          placeholder="recorded in the audit history"
          value={reason}
          onInput={(e) => setReason(e.currentTarget.value)}
        />
      </label>
      <label>
        <input
          type="checkbox"
          name="force"
          checked={force}
          onChange={(e) => setForce(e.currentTarget.checked)}
        />
        Force past the gate
      </label>
      <button type="submit">Move alias</button>
      {message && (
        <p
          class={message.ok ? "ok" : "error"}
          role={message.ok ? "status" : "alert"}
          data-testid="promote-result"
        >
          {message.text}
        </p>
      )}
    </form>
  );
}

export function ModelsPage(props: { query: URLSearchParams }) {
  const [models, setModels] = useState<RegisteredModel[]>([]);
  const [versions, setVersions] = useState<ModelVersion[] | undefined>(undefined);
  const [history, setHistory] = useState<AliasChange[]>([]);
  const [error, setError] = useState("");
  const [reloads, setReloads] = useState(0);
  // Lineage: each version's run (data fingerprint, gate figures) and the job that registered it.
  const [runs, setRuns] = useState<Record<string, Run>>({});
  const [jobOf, setJobOf] = useState<Record<string, string>>({});
  const chosen = props.query.get("model") ?? models[0]?.name ?? "";

  useEffect(() => {
    registry.listRegisteredModels({}).then(
      (res) => setModels(res.models),
      (e) => setError(explain(e)),
    );
  }, []);
  useEffect(() => {
    if (chosen === "") return;
    Promise.all([
      registry.listModelVersions({ modelName: chosen }),
      registry.listAliasHistory({ modelName: chosen }),
    ]).then(
      ([v, h]) => {
        // Newest first: the version a user looks for is almost always the latest.
        setVersions([...v.versions].sort((a, b) => Number(b.version) - Number(a.version)));
        setHistory(h.changes);
        for (const version of v.versions) {
          registry.getRun({ runId: version.runId }).then(
            ({ run }) => run && setRuns((prev) => ({ ...prev, [version.version]: run })),
            () => undefined,
          );
        }
      },
      (e) => setError(explain(e)),
    );
    // The newest 50 jobs; older versions' jobs are on the Jobs page's later pages.
    train.listJobs({ pageSize: 50 }).then(
      ({ jobs }) =>
        setJobOf(
          Object.fromEntries(jobs.filter((j) => j.modelVersion !== "").map((j) => [j.modelVersion, j.id])),
        ),
      () => undefined,
    );
  }, [chosen, reloads]);

  return (
    <section aria-labelledby="models-title">
      <h1 id="models-title">Models</h1>
      {models.length > 1 && (
        <nav aria-label="Registered models" class="tabs">
          {models.map((m) => (
            <a key={m.name} href={href("models", { model: m.name })} aria-current={m.name === chosen}>
              {m.name}
            </a>
          ))}
        </nav>
      )}
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {versions && (
        <>
          <h2>{chosen}: versions</h2>
          <div class="scroll">
            <table data-testid="versions">
              <thead>
                <tr>
                  <th scope="col">Version</th>
                  <th scope="col">Aliases</th>
                  <th scope="col">Run</th>
                  <th scope="col">Registered</th>
                  <th scope="col">Job</th>
                  <th scope="col">Data</th>
                  <th scope="col">Gate</th>
                  <th scope="col">Test metrics</th>
                  <th scope="col">Description</th>
                </tr>
              </thead>
              <tbody>
                {versions.map((v) => (
                  <tr key={v.version} data-version={v.version}>
                    <td>v{v.version}</td>
                    <td data-key="aliases">
                      {v.aliases.map((a) => (
                        <span key={a} class="badge">
                          {a}
                        </span>
                      ))}
                    </td>
                    <td title={v.runId}>
                      <a href={href("runs", { filter: `attributes.run_id = '${v.runId}'` })}>
                        <code>{shortId(v.runId)}</code>
                      </a>
                    </td>
                    <td>{time(v.createdAt)}</td>
                    <td data-key="job">
                      {jobOf[v.version] !== undefined && (
                        <a href={href("jobs", { job: jobOf[v.version] as string })}>
                          <code>{shortId(jobOf[v.version] as string)}</code>
                        </a>
                      )}
                    </td>
                    <td data-key="fingerprint" title={runs[v.version]?.dataFingerprint}>
                      <code>{shortId(runs[v.version]?.dataFingerprint ?? "")}</code>
                    </td>
                    <GateCell run={runs[v.version]} />
                    <td>
                      {testMetrics(v).map(([k, value]) => (
                        <span key={k} class="metric" data-key={`metrics.${k}`} data-value={String(value)}>
                          {k} {num(value)}
                        </span>
                      ))}
                    </td>
                    <td>{v.description}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <RollbackForm
            model={chosen}
            current={versions.find((v) => v.aliases.includes("production"))?.version}
            previous={previousProduction(
              history,
              versions.find((v) => v.aliases.includes("production"))?.version,
            )}
            onDone={() => setReloads((n) => n + 1)}
          />
          <PromoteForm model={chosen} versions={versions} onDone={() => setReloads((n) => n + 1)} />
          <h2>Alias history</h2>
          <div class="scroll">
            <table data-testid="history">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Alias</th>
                  <th scope="col">From</th>
                  <th scope="col">To</th>
                  <th scope="col">By</th>
                  <th scope="col">Reason</th>
                </tr>
              </thead>
              <tbody>
                {history.map((c, i) => (
                  <tr key={i}>
                    <td>{time(c.time)}</td>
                    <td>{c.alias}</td>
                    <td>{c.fromVersion === "" ? "—" : `v${c.fromVersion}`}</td>
                    <td>{c.toVersion === "" ? "removed" : `v${c.toVersion}`}</td>
                    <td>{c.actor}</td>
                    <td>
                      {c.reason}
                      {c.forced && <span class="badge warn">forced</span>}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}
