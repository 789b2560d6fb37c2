import type { Queryable, SqlDatabase } from "../storage/database.js";
import type { ArtifactStore } from "./blob-store.js";
import { RegistryError } from "./errors.js";
import { latestMetrics, requireRun } from "./runs.js";
import { type AliasRow, ARTIFACT_COLUMNS, type ArtifactRow, toArtifact, type VersionRow } from "./schema.js";
import type { ModelVersion, RegisteredModel } from "./types.js";
import { checkName, optionalText, requireText, VERSION } from "./validation.js";

/** Registered models and their numbered versions (each the artifacts of one finished run). */

export class Models {
  constructor(
    private readonly db: SqlDatabase,
    private readonly blobs: ArtifactStore,
  ) {}

  async createRegisteredModel(name: string, description = ""): Promise<RegisteredModel> {
    const checked = checkName(name, "name", "model");
    const desc = optionalText(description, "description", 5000);
    return this.db.transaction(async (tx) => {
      if (await modelExists(tx, checked)) {
        throw new RegistryError("already_exists", `model "${checked}" already exists`, "name");
      }
      await tx.run("INSERT INTO registry.registered_models VALUES ($1, $2, $3)", [checked, desc, new Date()]);
      return loadModelOrThrow(tx, checked);
    });
  }

  async getRegisteredModel(name: string): Promise<RegisteredModel | undefined> {
    if (typeof name !== "string" || name === "") return undefined;
    return this.db.transaction(async (tx) => (await loadModels(tx, name))[0]);
  }

  async listRegisteredModels(): Promise<RegisteredModel[]> {
    return this.db.transaction((tx) => loadModels(tx));
  }

  /**
   * Registers the artifacts of a finished run as the model's next version (1, 2, …), creating the
   * model when missing. Refused when the run has no artifact or one of them is not on disk.
   */
  async createModelVersion(input: {
    modelName: string;
    runId: string;
    description?: string;
  }): Promise<ModelVersion> {
    const modelName = checkName(input.modelName, "model_name", "model");
    const runId = requireText(input.runId, "run_id", 64);
    const description = optionalText(input.description, "description", 5000);
    return this.db.transaction((tx) => insertVersion(tx, this.blobs, modelName, runId, description));
  }

  /** A version by number, by alias, or "latest"; undefined when the model or version is unknown. */
  async getModelVersion(modelName: string, versionOrAlias: string): Promise<ModelVersion | undefined> {
    if (typeof modelName !== "string" || modelName === "") return undefined;
    if (typeof versionOrAlias !== "string" || versionOrAlias === "") return undefined;
    return this.db.transaction(async (tx) => {
      const version = await resolveVersion(tx, modelName, versionOrAlias);
      if (version === undefined) return undefined;
      return (await loadVersions(tx, modelName, [version]))[0];
    });
  }

  async listModelVersions(modelName: string): Promise<ModelVersion[]> {
    requireText(modelName, "model_name", 128);
    return this.db.transaction(async (tx) => {
      await requireModel(tx, modelName);
      return loadVersions(tx, modelName);
    });
  }
}

export async function insertVersion(
  tx: Queryable,
  blobs: ArtifactStore,
  modelName: string,
  runId: string,
  description: string,
): Promise<ModelVersion> {
  const run = await requireRun(tx, runId);
  if (run.status !== "finished") {
    throw new RegistryError(
      "failed_precondition",
      `run ${runId} is ${run.status}; only a finished run can become a model version`,
      "run_id",
    );
  }
  const artifacts = (
    await tx.all<ArtifactRow>(`SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1`, [runId])
  ).map(toArtifact);
  if (artifacts.length === 0) {
    throw new RegistryError(
      "failed_precondition",
      `run ${runId} has no artifacts; a model version needs the run's artifacts`,
      "run_id",
    );
  }
  for (const a of artifacts) {
    const size = await blobs.size(tx, a.sha256);
    if (size === undefined) {
      throw new RegistryError(
        "failed_precondition",
        `artifact ${a.path} of run ${runId} is missing from the artifact store; no version was created`,
        "run_id",
      );
    }
    if (size !== a.sizeBytes) {
      throw new RegistryError(
        "data_loss",
        `artifact ${a.path} of run ${runId} has ${size} bytes on disk; ${a.sizeBytes} were recorded; no version was created`,
        "run_id",
      );
    }
  }
  if (!(await modelExists(tx, modelName))) {
    await tx.run("INSERT INTO registry.registered_models VALUES ($1, '', $2)", [modelName, new Date()]);
  }
  const [row] = await tx.all<{ version: number }>(
    `INSERT INTO registry.model_versions
         SELECT $1::VARCHAR, COALESCE(MAX(version), 0) + 1, $2, $3, $4::TIMESTAMP FROM registry.model_versions WHERE model_name = $1
         RETURNING version`,
    [modelName, runId, description, new Date()],
  );
  return loadVersionOrThrow(tx, modelName, row?.version ?? 0);
}

export async function modelExists(tx: Queryable, name: string): Promise<boolean> {
  const rows = await tx.all("SELECT 1 FROM registry.registered_models WHERE name = $1", [name]);
  return rows.length > 0;
}

export async function requireModel(tx: Queryable, name: string): Promise<void> {
  if (!(await modelExists(tx, name))) {
    throw new RegistryError("not_found", `model "${name}" does not exist`, "model_name");
  }
}

export async function loadModelOrThrow(tx: Queryable, name: string): Promise<RegisteredModel> {
  const [model] = await loadModels(tx, name);
  if (!model) throw new RegistryError("not_found", `model "${name}" does not exist`, "model_name");
  return model;
}

export async function loadModels(tx: Queryable, name?: string): Promise<RegisteredModel[]> {
  // `$1 IS NULL` selects every model; otherwise the one named.
  const args = [name ?? null];
  const rows = await tx.all<{ name: string; description: string; created_at: Date; latest: number | null }>(
    `SELECT m.name, m.description, m.created_at,
              (SELECT MAX(v.version) FROM registry.model_versions v WHERE v.model_name = m.name) AS latest
       FROM registry.registered_models m WHERE CAST($1 AS VARCHAR) IS NULL OR m.name = $1 ORDER BY m.name`,
    args,
  );
  const aliases = await tx.all<AliasRow>(
    `SELECT model_name, alias, version FROM registry.aliases
       WHERE CAST($1 AS VARCHAR) IS NULL OR model_name = $1 ORDER BY alias`,
    args,
  );
  return rows.map((r) => ({
    name: r.name,
    description: r.description,
    createdAt: r.created_at,
    aliases: Object.fromEntries(
      aliases.filter((a) => a.model_name === r.name).map((a) => [a.alias, String(a.version)]),
    ),
    latestVersion: r.latest === null ? "" : String(r.latest),
  }));
}

export async function resolveVersion(
  tx: Queryable,
  modelName: string,
  versionOrAlias: string,
): Promise<number | undefined> {
  if (VERSION.test(versionOrAlias)) {
    const rows = await tx.all(
      "SELECT 1 FROM registry.model_versions WHERE model_name = $1 AND version = $2",
      [modelName, Number(versionOrAlias)],
    );
    return rows.length > 0 ? Number(versionOrAlias) : undefined;
  }
  const alias = versionOrAlias.toLowerCase();
  if (alias === "latest") {
    const [row] = await tx.all<{ v: number | null }>(
      "SELECT MAX(version) AS v FROM registry.model_versions WHERE model_name = $1",
      [modelName],
    );
    return row?.v ?? undefined;
  }
  const [row] = await tx.all<{ version: number }>(
    "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
    [modelName, alias],
  );
  return row?.version;
}

export async function loadVersionOrThrow(
  tx: Queryable,
  modelName: string,
  version: number,
): Promise<ModelVersion> {
  const [found] = await loadVersions(tx, modelName, [version]);
  if (!found)
    throw new RegistryError("not_found", `model "${modelName}" has no version ${version}`, "version");
  return found;
}

export async function loadVersions(
  tx: Queryable,
  modelName: string,
  versions?: number[],
): Promise<ModelVersion[]> {
  const rows = await tx.all<VersionRow>(
    versions === undefined
      ? "SELECT * FROM registry.model_versions WHERE model_name = $1 ORDER BY version"
      : "SELECT * FROM registry.model_versions WHERE model_name = $1 AND version IN (SELECT unnest($2::INTEGER[])) ORDER BY version",
    versions === undefined ? [modelName] : [modelName, versions],
  );
  if (rows.length === 0) return [];
  const runIds = [...new Set(rows.map((r) => r.run_id))];
  const metrics = await latestMetrics(tx, runIds);
  const artifacts = await tx.all<ArtifactRow>(
    `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY path`,
    [runIds],
  );
  const aliases = await tx.all<AliasRow>(
    "SELECT model_name, alias, version FROM registry.aliases WHERE model_name = $1 ORDER BY alias",
    [modelName],
  );
  return rows.map((r) => ({
    modelName: r.model_name,
    version: String(r.version),
    runId: r.run_id,
    aliases: aliases.filter((a) => a.version === r.version).map((a) => a.alias),
    createdAt: r.created_at,
    metrics: metrics.get(r.run_id) ?? {},
    artifacts: artifacts.filter((a) => a.run_id === r.run_id).map(toArtifact),
    description: r.description,
  }));
}
