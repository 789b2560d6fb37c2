import type { Queryable, SqlDatabase } from "../storage/database.js";
import { RegistryError } from "./errors.js";
import { type ExperimentRow, group, type KeyValueRow, newId } from "./schema.js";
import type { Experiment } from "./types.js";
import { checkExperimentName, checkTags } from "./validation.js";

/** Experiments: named groups of runs, with tags. */

export class Experiments {
  constructor(private readonly db: SqlDatabase) {}

  async createExperiment(name: string, tags: Record<string, string> = {}): Promise<Experiment> {
    const checked = checkExperimentName(name, "name");
    checkTags(tags, "tags");
    return this.db.transaction(async (tx) => {
      const [existing] = await tx.all<{ id: string }>("SELECT id FROM registry.experiments WHERE name = $1", [
        checked,
      ]);
      if (existing) {
        throw new RegistryError("already_exists", `experiment "${checked}" already exists`, "name");
      }
      return insertExperiment(tx, checked, tags);
    });
  }

  async ensureExperiment(name: string): Promise<Experiment> {
    const checked = checkExperimentName(name, "name");
    return this.db.transaction(async (tx) => {
      return (await loadExperiment(tx, checked, "name")) ?? insertExperiment(tx, checked, {});
    });
  }

  async getExperiment(idOrName: string): Promise<Experiment | undefined> {
    if (typeof idOrName !== "string" || idOrName === "") return undefined;
    return this.db.transaction(
      async (tx) =>
        (await loadExperiment(tx, idOrName, "id")) ?? (await loadExperiment(tx, idOrName, "name")),
    );
  }

  async listExperiments(): Promise<Experiment[]> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.all<ExperimentRow>(
        "SELECT id, name, created_at FROM registry.experiments ORDER BY created_at, name",
      );
      const tags = group(
        await tx.all<KeyValueRow>("SELECT experiment_id AS owner, key, value FROM registry.experiment_tags"),
        (r) => [r.key, r.value],
      );
      return rows.map((r) => ({
        id: r.id,
        name: r.name,
        createdAt: r.created_at,
        tags: tags.get(r.id) ?? {},
      }));
    });
  }
}

export async function insertExperiment(
  tx: Queryable,
  name: string,
  tags: Record<string, string>,
): Promise<Experiment> {
  const experiment: Experiment = { id: newId(), name, createdAt: new Date(), tags: { ...tags } };
  await tx.run("INSERT INTO registry.experiments VALUES ($1, $2, $3)", [
    experiment.id,
    name,
    experiment.createdAt,
  ]);
  for (const [key, value] of Object.entries(tags)) {
    await tx.run("INSERT INTO registry.experiment_tags VALUES ($1, $2, $3)", [experiment.id, key, value]);
  }
  return experiment;
}

export async function loadExperiment(
  tx: Queryable,
  value: string,
  by: "id" | "name",
): Promise<Experiment | undefined> {
  const column = by === "id" ? "id" : "name";
  const [row] = await tx.all<ExperimentRow>(
    `SELECT id, name, created_at FROM registry.experiments WHERE ${column} = $1`,
    [value],
  );
  if (!row) return undefined;
  const tags = await tx.all<{ key: string; value: string }>(
    "SELECT key, value FROM registry.experiment_tags WHERE experiment_id = $1 ORDER BY key",
    [row.id],
  );
  return {
    id: row.id,
    name: row.name,
    createdAt: row.created_at,
    tags: Object.fromEntries(tags.map((t) => [t.key, t.value])),
  };
}

export async function resolveExperiment(tx: Queryable, idOrName: string): Promise<Experiment> {
  const found = (await loadExperiment(tx, idOrName, "id")) ?? (await loadExperiment(tx, idOrName, "name"));
  if (!found) throw new RegistryError("not_found", `experiment "${idOrName}" does not exist`, "experiments");
  return found;
}
