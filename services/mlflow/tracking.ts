import type { EndStatus, MetricInput, Registry, Run } from "../registry/registry.js";
import { checkBatchLimits } from "../registry/runs.js";
import { likeMatcher, USER_TAG } from "../registry/search-filter.js";
import { experimentJson, metricValueJson, runInfoOnly, runsJson } from "./entities.js";
import {
  type Call,
  checkFilterLength,
  int,
  keyValues,
  MlflowError,
  num,
  pageOf,
  type Route,
  requireStr,
  str,
  strList,
} from "./http.js";
import { DELETED_TAG, deleteTag, renameRun, setDeleted } from "./store.js";

/** MLflow tracking: experiments, runs, params, metrics and tags (service.proto's MlflowService). */

/** bikeshare pages runs by at most 1000; MLflow's client follows next_page_token for the rest. */
const MAX_RUNS_PAGE = 1000;

const END_STATUSES: Record<string, EndStatus> = {
  FINISHED: "finished",
  FAILED: "failed",
  KILLED: "cancelled",
};

function runIdOf(params: Record<string, unknown>): string {
  const id = str(params, "run_id") || str(params, "run_uuid");
  if (!id) throw new MlflowError("INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_id'.");
  return id;
}

async function requireRun(registry: Registry, runId: string): Promise<Run> {
  const run = await registry.getRun(runId);
  if (!run) throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Run with id=${runId} not found`);
  return run;
}

async function requireExperiment(registry: Registry, id: string) {
  const experiment = await registry.getExperiment(id);
  if (!experiment || experiment.id !== id) {
    throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Could not find experiment with ID ${id}`);
  }
  return experiment;
}

function metricOf(m: unknown, field: string): MetricInput {
  if (typeof m !== "object" || m === null) {
    throw new MlflowError("INVALID_PARAMETER_VALUE", `${field} must be an object`);
  }
  const p = m as Record<string, unknown>;
  const timestamp = int(p, "timestamp");
  return {
    key: requireStr(p, "key"),
    value: num(p, "value"),
    step: int(p, "step") ?? 0,
    ...(timestamp !== undefined ? { time: new Date(timestamp) } : {}),
  };
}

/** A simple experiments filter: `name = '…'`, `name LIKE '…'` or `name ILIKE '…'`, or none. */
function experimentFilter(filter: string | undefined): (name: string) => boolean {
  if (filter === undefined || filter.trim() === "") return () => true;
  checkFilterLength(filter);
  const m = /^\s*(?:attributes\.)?name\s*(=|!=|LIKE|ILIKE)\s*'((?:[^']|'')*)'\s*$/i.exec(filter);
  if (!m) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `filter ${JSON.stringify(filter)}: bikeshare searches experiments by name only (name = '…', name LIKE '…')`,
    );
  }
  const op = (m[1] as string).toUpperCase();
  const value = m[2] as string;
  if (op === "=") return (name) => name === value;
  if (op === "!=") return (name) => name !== value;
  const matches = likeMatcher(value, op === "ILIKE");
  return (name) => matches(name);
}

export function trackingRoutes(registry: Registry): Record<string, Route> {
  const runJson = async (run: Run) => (await runsJson(registry, [run]))[0];
  const logData = async (
    call: Call,
    data: Parameters<Registry["logRunData"]>[1],
  ): Promise<Record<string, never>> => {
    await registry.logRunData(runIdOf(call.params), data);
    return {};
  };

  const searchExperiments = async ({ params }: Call) => {
    const keep = experimentFilter(str(params, "filter"));
    const all = (await registry.listExperiments()).filter((e) => keep(e.name));
    const page = pageOf(all, params, 1000, 50_000);
    return {
      experiments: page.items.map(experimentJson),
      ...(page.next_page_token ? { next_page_token: page.next_page_token } : {}),
    };
  };

  const searchRuns = async ({ params }: Call) => {
    const view = str(params, "run_view_type") ?? "ACTIVE_ONLY";
    const deletedClause =
      view === "ACTIVE_ONLY"
        ? ` and tags.\`${DELETED_TAG}\` IS NULL`
        : view === "DELETED_ONLY"
          ? ` and tags.\`${DELETED_TAG}\` IS NOT NULL`
          : view === "ALL"
            ? ""
            : (() => {
                throw new MlflowError(
                  "INVALID_PARAMETER_VALUE",
                  `run_view_type must be ACTIVE_ONLY, DELETED_ONLY or ALL, got ${JSON.stringify(view)}`,
                );
              })();
    const maxResults = int(params, "max_results") ?? 1000;
    if (maxResults < 1 || maxResults > 50_000) {
      throw new MlflowError(
        "INVALID_PARAMETER_VALUE",
        `Invalid value ${maxResults} for parameter 'max_results' supplied. It must be at most 50000`,
      );
    }
    const { runs, nextPageToken } = await registry.searchRuns({
      experiments: strList(params, "experiment_ids"),
      filter: `${str(params, "filter") ?? ""}${deletedClause}`,
      orderBy: strList(params, "order_by"),
      pageSize: Math.min(maxResults, MAX_RUNS_PAGE),
      pageToken: str(params, "page_token") ?? "",
    });
    return {
      runs: await runsJson(registry, runs),
      ...(nextPageToken ? { next_page_token: nextPageToken } : {}),
    };
  };

  return {
    // -- experiments -----------------------------------------------------------------------------
    "experiments/create": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        if (await registry.getExperiment(name)) {
          throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Experiment(name=${name}) already exists.`);
        }
        const experiment = await registry.createExperiment(name, keyValues(params, "tags"));
        return { experiment_id: experiment.id };
      },
    },
    "experiments/get": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => ({
        experiment: experimentJson(await requireExperiment(registry, requireStr(params, "experiment_id"))),
      }),
    },
    "experiments/get-by-name": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const name = requireStr(params, "experiment_name");
        const experiment = await registry.getExperiment(name);
        if (!experiment || experiment.name !== name) {
          throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Could not find experiment with name '${name}'`);
        }
        return { experiment: experimentJson(experiment) };
      },
    },
    "experiments/search": { method: "POST", role: "reader", handle: searchExperiments },
    "GET experiments/search": { method: "GET", role: "reader", handle: searchExperiments },

    // -- runs --------------------------------------------------------------------------------------
    "runs/create": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        const experimentId = requireStr(params, "experiment_id");
        await requireExperiment(registry, experimentId);
        const tags = keyValues(params, "tags");
        const userId = str(params, "user_id");
        if (userId) tags[USER_TAG] ??= userId;
        const runName = str(params, "run_name") || tags["mlflow.runName"];
        delete tags["mlflow.runName"];
        const run = await registry.createRun({
          experiment: experimentId,
          ...(runName ? { name: runName } : {}),
          tags,
          ...(tags["mlflow.source.git.commit"] ? { sourceCommit: tags["mlflow.source.git.commit"] } : {}),
        });
        return { run: await runJson(run) };
      },
    },
    "runs/get": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => ({ run: await runJson(await requireRun(registry, runIdOf(params))) }),
    },
    "runs/update": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        const runId = runIdOf(params);
        let run = await requireRun(registry, runId);
        const name = str(params, "run_name");
        if (name && name !== run.name) await renameRun(registry, runId, name);
        const status = str(params, "status");
        if (status !== undefined && status !== "RUNNING") {
          const end = END_STATUSES[status];
          if (!end) {
            throw new MlflowError(
              "INVALID_PARAMETER_VALUE",
              `status must be RUNNING, FINISHED, FAILED or KILLED, got ${JSON.stringify(status)}`,
            );
          }
          await registry.endRun(runId, end);
        }
        run = await requireRun(registry, runId);
        return { run_info: runInfoOnly(run) };
      },
    },
    "runs/delete": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        await setDeleted(registry, runIdOf(params), true);
        return {};
      },
    },
    "runs/restore": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        await setDeleted(registry, runIdOf(params), false);
        return {};
      },
    },
    "runs/search": { method: "POST", role: "reader", handle: searchRuns },
    "runs/log-batch": {
      method: "POST",
      role: "trainer",
      handle: (call) => {
        const raw = call.params.metrics ?? [];
        if (!Array.isArray(raw)) throw new MlflowError("INVALID_PARAMETER_VALUE", "metrics must be a list");
        const data = {
          params: keyValues(call.params, "params"),
          metrics: raw.map((m, i) => metricOf(m, `metrics[${i}]`)),
          tags: keyValues(call.params, "tags"),
        };
        checkBatchLimits(data);
        return logData(call, data);
      },
    },
    "runs/log-metric": {
      method: "POST",
      role: "trainer",
      handle: (call) => logData(call, { metrics: [metricOf(call.params, "metric")] }),
    },
    "runs/log-parameter": {
      method: "POST",
      role: "trainer",
      handle: (call) =>
        logData(call, { params: { [requireStr(call.params, "key")]: str(call.params, "value") ?? "" } }),
    },
    "runs/set-tag": {
      method: "POST",
      role: "trainer",
      handle: async (call) => {
        const key = requireStr(call.params, "key");
        const value = str(call.params, "value") ?? "";
        // MLflow keeps the run's name in this tag too; setting it renames the run.
        if (key === "mlflow.runName") {
          await renameRun(registry, runIdOf(call.params), value);
          return {};
        }
        return logData(call, { tags: { [key]: value } });
      },
    },
    "runs/delete-tag": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        await deleteTag(registry, runIdOf(params), requireStr(params, "key"));
        return {};
      },
    },
    // MLflow 3's client looks for logged models (a concept bikeshare has not) whenever it lists a run's
    // artifacts; there are none, so it lists the run's own.
    "logged-models/search": {
      method: "POST",
      role: "reader",
      handle: async () => ({ models: [] }),
    },
    "metrics/get-history": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const key = requireStr(params, "metric_key");
        const points = await registry.metricHistory(runIdOf(params), key);
        const page = pageOf(points, params, 25_000, 25_000);
        return {
          metrics: page.items.map((p) => ({
            key,
            value: metricValueJson(p.value),
            timestamp: p.time.getTime(),
            step: Number(p.step),
          })),
          ...(page.next_page_token ? { next_page_token: page.next_page_token } : {}),
        };
      },
    },
  };
}
