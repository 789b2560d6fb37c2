import { useEffect, useState } from "preact/hooks";
import type { AliasChange, ModelVersion, RegisteredModel } from "../../../gen/bikeshare/v1/registry_pb.js";
import { explain, registry } from "../api.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

/** The figures a version is judged by: its held-out test metrics (model-card.ts names them test_*). */
function testMetrics(version: ModelVersion): [string, number][] {
  return Object.entries(version.metrics)
    .filter(([key]) => key.startsWith("test_"))
    .sort(([a], [b]) => a.localeCompare(b));
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
      },
      (e) => setError(explain(e)),
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
