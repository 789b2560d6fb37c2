import { useEffect, useState } from "preact/hooks";
import { ModelFamily } from "../../../gen/bikeshare/v1/common_pb.js";
import { type Job, JobState, type WatchJobResponse } from "../../../gen/bikeshare/v1/train_pb.js";
import { explain, train } from "../api.js";
import { num, shortId, time } from "../format.js";
import { href } from "../route.js";

const stateName = (s: JobState) => JobState[s].toLowerCase();
const finished = (s: JobState) =>
  s === JobState.SUCCEEDED || s === JobState.FAILED || s === JobState.CANCELLED;

/** One job, followed live: WatchJob streams its events, and each event re-reads the job for its progress. */
/** Enough events to see where a job is; a search with many trials streams thousands of rounds. */
const KEEP_EVENTS = 200;
/** At most this often a GetJob per stream of events; a state change always reads at once. */
const REFRESH_MS = 500;

function JobDetail(props: { id: string; onJob(job: Job): void }) {
  const [job, setJob] = useState<Job | undefined>(undefined);
  const [events, setEvents] = useState<WatchJobResponse[]>([]);
  const [error, setError] = useState("");
  const [cancelMessage, setCancelMessage] = useState("");

  useEffect(() => {
    const abort = new AbortController();
    let lastRefresh = 0;
    let lastState: JobState | undefined;
    const refresh = () => {
      lastRefresh = Date.now();
      return train.getJob({ jobId: props.id }, { signal: abort.signal }).then(
        (res) => {
          setJob(res.job);
          if (res.job) props.onJob(res.job);
        },
        (e) => abort.signal.aborted || setError(explain(e)),
      );
    };
    (async () => {
      await refresh();
      try {
        for await (const event of train.watchJob({ jobId: props.id }, { signal: abort.signal })) {
          setEvents((prev) => [...prev.slice(-(KEEP_EVENTS - 1)), event]);
          if (event.state !== lastState || Date.now() - lastRefresh >= REFRESH_MS) await refresh();
          lastState = event.state;
        }
        await refresh();
      } catch (e) {
        if (!abort.signal.aborted) setError(explain(e));
      }
    })();
    return () => abort.abort();
  }, [props.id]);

  const progress = job?.progress ?? 0;
  return (
    <section class="detail" aria-labelledby="job-title" data-testid="job-detail">
      <h2 id="job-title">
        Job <code>{props.id}</code>
      </h2>
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {job && (
        <>
          <p>
            <span class={`state ${stateName(job.state)}`} data-testid="job-state">
              {stateName(job.state)}
            </span>{" "}
            <span data-testid="job-stage">{job.stage}</span>
          </p>
          <progress max={1} value={progress} aria-label="progress" data-testid="job-progress" />{" "}
          <span data-testid="job-progress-text">{Math.round(progress * 100)}%</span>
          <dl>
            <dt>Reason</dt>
            <dd>{job.reason}</dd>
            <dt>Requested by</dt>
            <dd>{job.requestedBy}</dd>
            <dt>Run</dt>
            <dd>{job.runId}</dd>
            <dt>Model version</dt>
            <dd>
              {job.modelVersion === "" ? "" : `v${job.modelVersion}`}
              {job.promoted && <span class="badge">promoted</span>}
            </dd>
            {job.error !== "" && (
              <>
                <dt>Error</dt>
                <dd class="error">{job.error}</dd>
              </>
            )}
          </dl>
          {!finished(job.state) && (
            <button
              type="button"
              onClick={async () => {
                try {
                  await train.cancelJob({ jobId: props.id, reason: "cancelled from the console" });
                  setCancelMessage("Cancel requested.");
                } catch (e) {
                  setCancelMessage(explain(e));
                }
              }}
            >
              Cancel job (trainer)
            </button>
          )}
          {cancelMessage !== "" && (
            <p role="status" data-testid="cancel-result">
              {cancelMessage}
            </p>
          )}
        </>
      )}
      <h3>Events</h3>
      <ol class="events" data-testid="job-events">
        {events.map((e, i) => (
          <li key={i}>
            {time(e.time)} {stateName(e.state)} {e.stage} {e.candidate}
            {e.validMetric !== 0 && ` valid ${num(e.validMetric)}`} {e.message}
          </li>
        ))}
      </ol>
    </section>
  );
}

const FAMILIES = [
  { value: ModelFamily.GBTREE, label: "gradient-boosted trees" },
  { value: ModelFamily.RANDOM_FOREST, label: "random forest" },
  { value: ModelFamily.LINEAR, label: "linear" },
];

/** StartTraining as `bikeshare train` sends it: chosen families, search trials per family, a reason. */
function StartForm(props: { onStarted(job: Job): void }) {
  const [families, setFamilies] = useState<ModelFamily[]>([ModelFamily.GBTREE]);
  const [trials, setTrials] = useState("0");
  const [reason, setReason] = useState("");
  const [error, setError] = useState("");
  return (
    <form
      class="action"
      aria-labelledby="start-title"
      onSubmit={async (e) => {
        e.preventDefault();
        setError("");
        try {
          const { job } = await train.startTraining({
            families,
            // Empty means the server's default number of trials, as when the CLI gets no --trials.
            ...(trials.trim() === "" ? {} : { searchTrials: Number(trials) }),
            reason,
          });
          if (job) props.onStarted(job);
        } catch (error) {
          setError(explain(error));
        }
      }}
    >
      <h2 id="start-title">Start training</h2>
      <p class="hint">Needs a trainer or admin token. No family chosen means all of them.</p>
      <fieldset class="columns">
        <legend>Families</legend>
        {FAMILIES.map((f) => (
          <label key={f.value}>
            <input
              type="checkbox"
              name="family"
              value={String(f.value)}
              checked={families.includes(f.value)}
              onChange={(e) =>
                setFamilies(
                  e.currentTarget.checked ? [...families, f.value] : families.filter((x) => x !== f.value),
                )
              }
            />
            {f.label}
          </label>
        ))}
      </fieldset>
      <label>
        Search trials per family
        <input
          name="trials"
          type="number"
          min="0"
          step="1"
          placeholder="server default"
          value={trials}
          onInput={(e) => setTrials(e.currentTarget.value)}
        />
      </label>
      <label>
        Reason
        <input
          name="reason"
          required
          placeholder="recorded with the job"
          value={reason}
          onInput={(e) => setReason(e.currentTarget.value)}
        />
      </label>
      <button type="submit">Start training</button>
      {error !== "" && (
        <p class="error" role="alert" data-testid="start-result">
          {error}
        </p>
      )}
    </form>
  );
}

export function JobsPage(props: { query: URLSearchParams }) {
  const [jobs, setJobs] = useState<Job[] | undefined>(undefined);
  const [error, setError] = useState("");
  const selected = props.query.get("job") ?? "";

  useEffect(() => {
    train.listJobs({ pageSize: 50 }).then(
      (res) => setJobs(res.jobs),
      (e) => setError(explain(e)),
    );
  }, []);

  return (
    <section aria-labelledby="jobs-title">
      <h1 id="jobs-title">Jobs</h1>
      {error !== "" && (
        <p class="error" role="alert" data-testid="error">
          {error}
        </p>
      )}
      {selected !== "" && (
        <JobDetail
          key={selected}
          id={selected}
          onJob={(job) => setJobs((prev) => prev?.map((j) => (j.id === job.id ? job : j)))}
        />
      )}
      <StartForm
        onStarted={(job) => {
          setJobs((prev) => [job, ...(prev ?? [])]);
          window.location.hash = href("jobs", { job: job.id });
        }}
      />
      {jobs && (
        <div class="scroll">
          <table data-testid="jobs">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Kind</th>
                <th scope="col">State</th>
                <th scope="col">Stage</th>
                <th scope="col">Progress</th>
                <th scope="col">Created</th>
                <th scope="col">By</th>
                <th scope="col">Version</th>
                <th scope="col">Reason</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <tr key={j.id} data-job-id={j.id}>
                  <td title={j.id}>
                    <a href={href("jobs", { job: j.id })}>
                      <code>{shortId(j.id)}</code>
                    </a>
                  </td>
                  <td>{j.kind}</td>
                  <td>{stateName(j.state)}</td>
                  <td>{j.stage}</td>
                  <td class="n">{Math.round(j.progress * 100)}%</td>
                  <td>{time(j.createdAt)}</td>
                  <td>{j.requestedBy}</td>
                  <td>{j.modelVersion === "" ? "" : `v${j.modelVersion}`}</td>
                  <td>{j.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
