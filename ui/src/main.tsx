import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { getToken, predict, setToken } from "./api.js";
import { ComparePage } from "./pages/compare.js";
import { JobsPage } from "./pages/jobs.js";
import { ModelsPage } from "./pages/models.js";
import { MonitoringPage } from "./pages/monitoring.js";
import { RunsPage } from "./pages/runs.js";
import { href, useRoute } from "./route.js";

const PAGES = [
  { id: "runs", title: "Runs" },
  { id: "models", title: "Models" },
  { id: "jobs", title: "Jobs" },
  { id: "monitoring", title: "Monitoring" },
] as const;
/** Pages reached from another page, not from the header; the header marks their parent. */
const SUBPAGES: Record<string, { parent: string; title: string }> = {
  compare: { parent: "runs", title: "Compare runs" },
};

function TokenBox(props: { token: string; onChange(token: string): void }) {
  const [draft, setDraft] = useState("");
  if (props.token !== "") {
    return (
      <div class="token">
        <span data-testid="token-state">Token set for this tab</span>
        <button type="button" onClick={() => props.onChange("")}>
          Forget token
        </button>
      </div>
    );
  }
  return (
    <form
      class="token"
      onSubmit={(e) => {
        e.preventDefault();
        props.onChange(draft.trim());
        setDraft("");
      }}
    >
      <label>
        Token{" "}
        <input
          type="password"
          name="token"
          autocomplete="off"
          placeholder="bearer token (reader, trainer or admin)"
          value={draft}
          onInput={(e) => setDraft(e.currentTarget.value)}
        />
      </label>
      <button type="submit">Use token</button>
    </form>
  );
}

/** The served model, from GetModelInfo: open without a token unless the server requires one for predictions. */
function Serving() {
  const [text, setText] = useState("");
  useEffect(() => {
    predict.getModelInfo({}).then(
      ({ model }) => setText(model ? `serving ${model.name} v${model.version}` : ""),
      () => setText(""),
    );
  }, []);
  return text === "" ? null : (
    <span class="serving" data-testid="serving">
      {text}
    </span>
  );
}

function App() {
  const route = useRoute();
  const [token, setTokenState] = useState(getToken);
  const changeToken = (next: string) => {
    setToken(next);
    setTokenState(next);
  };
  const sub = SUBPAGES[route.page];
  const current = sub?.parent ?? route.page;
  const title = sub?.title ?? PAGES.find((p) => p.id === route.page)?.title;
  useEffect(() => {
    document.title = `${title ?? "Not found"} · bikeshare console`;
  }, [title]);
  return (
    <>
      <header>
        <strong class="brand">bikeshare</strong>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a key={p.id} href={href(p.id)} aria-current={p.id === current ? "page" : undefined}>
              {p.title}
            </a>
          ))}
        </nav>
        <Serving />
        <TokenBox token={token} onChange={changeToken} />
      </header>
      {/* Keyed by the token: a page loads again with the new rights when the token changes. */}
      <main key={token}>
        {route.page === "runs" ? (
          <RunsPage query={route.query} />
        ) : route.page === "models" ? (
          <ModelsPage query={route.query} />
        ) : route.page === "jobs" ? (
          <JobsPage query={route.query} />
        ) : route.page === "monitoring" ? (
          <MonitoringPage query={route.query} />
        ) : route.page === "compare" ? (
          <ComparePage query={route.query} />
        ) : (
          <p class="error" role="alert">
            No page called “{route.page}”.
          </p>
        )}
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
