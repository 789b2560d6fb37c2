import type { Experiment, ModelVersion, RegisteredModel, Registry, Run } from "../registry/registry.js";
import { MLFLOW_STATUS, runArtifactUri, USER_TAG } from "../registry/search-filter.js";
import { DELETED_TAG, latestMetricDetails } from "./store.js";

/**
 * bikeshare's registry objects in the JSON of MLflow's protos (mlflow/protos/service.proto and
 * model_registry.proto, as MLflow's server prints them: snake_case fields, int64 times in epoch
 * milliseconds as JSON numbers, maps as `[{key, value}]` lists).
 */

const keyValueList = (record: Record<string, string>) =>
  Object.entries(record).map(([key, value]) => ({ key, value }));

export function experimentJson(e: Experiment) {
  const time = e.createdAt.getTime();
  return {
    experiment_id: e.id,
    name: e.name,
    artifact_location: `mlflow-artifacts:/${e.id}`,
    lifecycle_stage: "active",
    creation_time: time,
    last_update_time: time,
    tags: keyValueList(e.tags),
  };
}

export function lifecycleOf(run: Run): "active" | "deleted" {
  return DELETED_TAG in run.tags ? "deleted" : "active";
}

function runInfoJson(r: Run) {
  return {
    run_id: r.id,
    run_uuid: r.id,
    run_name: r.name,
    experiment_id: r.experimentId,
    user_id: r.tags[USER_TAG] ?? "",
    status: MLFLOW_STATUS[r.status],
    start_time: r.startTime.getTime(),
    ...(r.endTime ? { end_time: r.endTime.getTime() } : {}),
    artifact_uri: runArtifactUri(r.experimentId, r.id),
    lifecycle_stage: lifecycleOf(r),
  };
}

export function runInfoOnly(r: Run) {
  return runInfoJson(r);
}

/** Runs with their data; a run's source commit and data fingerprint show as tags, as MLflow keeps them. */
export async function runsJson(registry: Registry, runs: readonly Run[]) {
  const latest = await latestMetricDetails(
    registry,
    runs.map((r) => r.id),
  );
  return runs.map((r) => {
    const tags: Record<string, string> = Object.assign(Object.create(null), r.tags);
    delete tags[DELETED_TAG];
    if (r.sourceCommit !== "" && !("mlflow.source.git.commit" in tags)) {
      tags["mlflow.source.git.commit"] = r.sourceCommit;
    }
    if (r.dataFingerprint !== "") tags["bikeshare.data_fingerprint"] ??= r.dataFingerprint;
    tags["mlflow.runName"] ??= r.name;
    return {
      info: runInfoJson(r),
      data: {
        metrics: (latest.get(r.id) ?? []).map((m) => ({
          key: m.key,
          value: metricValueJson(m.value),
          timestamp: m.time.getTime(),
          step: m.step,
        })),
        params: keyValueList(r.params),
        tags: keyValueList(tags),
      },
      inputs: {},
    };
  });
}

/** MLflow's legacy stage of a version, read from bikeshare's aliases (services/registry/aliases.ts). */
function stageOf(v: ModelVersion): string {
  if (v.aliases.includes("production")) return "Production";
  if (v.aliases.includes("staging")) return "Staging";
  return "None";
}

export function versionJson(v: ModelVersion, experimentId: string | undefined) {
  const time = v.createdAt.getTime();
  return {
    name: v.modelName,
    version: v.version,
    creation_timestamp: time,
    last_updated_timestamp: time,
    user_id: "",
    current_stage: stageOf(v),
    description: v.description,
    source: experimentId === undefined ? `runs:/${v.runId}` : runArtifactUri(experimentId, v.runId),
    run_id: v.runId,
    status: "READY",
    run_link: "",
    tags: [],
    aliases: v.aliases,
  };
}

export function modelJson(m: RegisteredModel, latest: readonly ReturnType<typeof versionJson>[]) {
  const time = m.createdAt.getTime();
  return {
    name: m.name,
    creation_timestamp: time,
    last_updated_timestamp: Math.max(time, ...latest.map((v) => v.last_updated_timestamp)),
    description: m.description,
    latest_versions: latest,
    tags: [],
    aliases: Object.entries(m.aliases).map(([alias, version]) => ({ alias, version })),
  };
}

/**
 * A metric value as MLflow's JSON writes it: JSON has no NaN or infinities (JSON.stringify gives null,
 * which MLflow's client reads as 0.0), so those go as the strings "NaN", "Infinity" and "-Infinity".
 */
export function metricValueJson(value: number): number | string {
  return Number.isFinite(value) ? value : String(value);
}
