import type { Registry } from "../registry/registry.js";
import { RegistryError } from "../registry/registry.js";
import { checkRunName } from "../registry/validation.js";

/**
 * The few MLflow operations the Registry has no method for, written against the registry's own tables
 * in one transaction each (services/registry/schema.ts): the latest metric's step and time, run
 * rename, tag deletion, soft delete/restore, model rename and a version's description. Nothing here
 * touches aliases' audit trail or the promotion gate: those go through Registry.setAlias.
 */

/** Run tag marking a run deleted through MLflow's runs/delete; MLflow's searches hide such runs by default. */
export const DELETED_TAG = "mlflow.bikeshare.deleted";

export interface LatestMetric {
  key: string;
  value: number;
  step: number;
  time: Date;
}

export async function latestMetricDetails(
  registry: Registry,
  runIds: readonly string[],
): Promise<Map<string, LatestMetric[]>> {
  const out = new Map<string, LatestMetric[]>();
  if (runIds.length === 0) return out;
  const rows = await registry.db.transaction((tx) =>
    tx.all<LatestMetric & { run_id: string }>(
      `SELECT run_id, key, value, CAST(step AS DOUBLE PRECISION) AS step, time FROM registry.latest_metrics
       WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY key`,
      [runIds as string[]],
    ),
  );
  for (const r of rows) {
    const list = out.get(r.run_id) ?? [];
    list.push({ key: r.key, value: r.value, step: Number(r.step), time: r.time });
    out.set(r.run_id, list);
  }
  return out;
}

async function requireRunRow(registry: Registry, runId: string): Promise<void> {
  if (!(await registry.getRun(runId))) {
    throw new RegistryError("not_found", `Run with id=${runId} not found`, "run_id");
  }
}

export async function renameRun(registry: Registry, runId: string, name: string): Promise<void> {
  if (name.length === 0 || name.length > 250) {
    throw new RegistryError("invalid_argument", "run_name must be 1 to 250 characters", "run_name");
  }
  checkRunName(name, "run_name");
  await requireRunRow(registry, runId);
  await registry.db.transaction((tx) =>
    tx.run("UPDATE registry.runs SET name = $2 WHERE id = $1", [runId, name]),
  );
}

export async function deleteTag(registry: Registry, runId: string, key: string): Promise<void> {
  const run = await registry.getRun(runId);
  if (!run) throw new RegistryError("not_found", `Run with id=${runId} not found`, "run_id");
  if (!(key in run.tags)) {
    throw new RegistryError("not_found", `No tag with name: ${key} in run with id ${runId}`, "key");
  }
  await registry.db.transaction((tx) =>
    tx.run("DELETE FROM registry.run_tags WHERE run_id = $1 AND key = $2", [runId, key]),
  );
}

/** Soft delete (MLflow's lifecycle_stage "deleted") as a marker tag, so restore brings everything back. */
export async function setDeleted(registry: Registry, runId: string, deleted: boolean): Promise<void> {
  await requireRunRow(registry, runId);
  await registry.db.transaction(async (tx) => {
    await tx.run("DELETE FROM registry.run_tags WHERE run_id = $1 AND key = $2", [runId, DELETED_TAG]);
    if (deleted) {
      await tx.run("INSERT INTO registry.run_tags VALUES ($1, $2, $3)", [
        runId,
        DELETED_TAG,
        new Date().toISOString(),
      ]);
    }
  });
}

export async function updateVersionDescription(
  registry: Registry,
  modelName: string,
  version: string,
  description: string,
): Promise<void> {
  if (description.length > 5000) {
    throw new RegistryError("invalid_argument", "description is longer than 5000 characters", "description");
  }
  if (!(await registry.getModelVersion(modelName, version))) {
    throw new RegistryError("not_found", `Model Version (name=${modelName}, version=${version}) not found`);
  }
  await registry.db.transaction((tx) =>
    tx.run("UPDATE registry.model_versions SET description = $3 WHERE model_name = $1 AND version = $2", [
      modelName,
      Number(version),
      description,
    ]),
  );
}

/**
 * Renames a model with its versions, aliases and alias history, in one transaction. Refused for the
 * model this server serves (the rename would take production away from under it).
 */
export async function renameModel(
  registry: Registry,
  name: string,
  newName: string,
  servedModel: string,
): Promise<void> {
  if (name === servedModel) {
    throw new RegistryError(
      "failed_precondition",
      `model "${name}" is the model this server serves (BIKESHARE_MODEL); it cannot be renamed`,
      "name",
    );
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(newName)) {
    throw new RegistryError(
      "invalid_argument",
      `new_name ${JSON.stringify(newName)} is not a valid model name (letters, digits, _ . -; at most 128)`,
      "new_name",
    );
  }
  if (!(await registry.getRegisteredModel(name))) {
    throw new RegistryError("not_found", `Registered Model with name=${name} not found`, "name");
  }
  if (await registry.getRegisteredModel(newName)) {
    throw new RegistryError(
      "already_exists",
      `Registered Model (name=${newName}) already exists.`,
      "new_name",
    );
  }
  await registry.db.transaction(async (tx) => {
    await tx.run("UPDATE registry.registered_models SET name = $2 WHERE name = $1", [name, newName]);
    for (const table of ["model_versions", "aliases", "alias_changes"]) {
      await tx.run(`UPDATE registry.${table} SET model_name = $2 WHERE model_name = $1`, [name, newName]);
    }
  });
}
