import { randomUUID } from "node:crypto";
import type { SqlDatabase } from "../storage/database.js";
import { type Migration, migrate, tableExists } from "../storage/migrations.js";
import { RegistryError } from "./errors.js";
import type { AliasChange, Artifact, RunStatus } from "./types.js";

/** The registry's tables, their row shapes and the mapping of rows to the public shapes. */

/** Version 1: the tables as the first release created them (DuckDB files of that release upgrade in place). */
const TABLES: readonly string[] = [
  "CREATE SCHEMA IF NOT EXISTS registry",
  `CREATE TABLE IF NOT EXISTS registry.experiments (
     id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, created_at TIMESTAMP NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS registry.experiment_tags (
     experiment_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL,
     PRIMARY KEY (experiment_id, key))`,
  `CREATE TABLE IF NOT EXISTS registry.runs (
     id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, experiment_id VARCHAR NOT NULL, name VARCHAR NOT NULL,
     status VARCHAR NOT NULL, start_time TIMESTAMP NOT NULL, end_time TIMESTAMP,
     source_commit VARCHAR NOT NULL, data_fingerprint VARCHAR NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS registry.run_params (
     run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY (run_id, key))`,
  `CREATE TABLE IF NOT EXISTS registry.run_tags (
     run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY (run_id, key))`,
  `CREATE TABLE IF NOT EXISTS registry.run_metrics (
     run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value DOUBLE PRECISION NOT NULL, step BIGINT NOT NULL,
     time TIMESTAMP NOT NULL, seq BIGINT NOT NULL)`,
  `CREATE OR REPLACE VIEW registry.latest_metrics AS
     SELECT run_id, key, value, step, time FROM (
       SELECT run_id, key, value, step, time,
              row_number() OVER (PARTITION BY run_id, key ORDER BY step DESC, time DESC, seq DESC) AS rn
       FROM registry.run_metrics) ranked
     WHERE rn = 1`,
  `CREATE TABLE IF NOT EXISTS registry.artifacts (
     run_id VARCHAR NOT NULL, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, size_bytes BIGINT NOT NULL,
     content_type VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, PRIMARY KEY (run_id, path))`,
  `CREATE TABLE IF NOT EXISTS registry.registered_models (
     name VARCHAR PRIMARY KEY, description VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS registry.model_versions (
     model_name VARCHAR NOT NULL, version INTEGER NOT NULL, run_id VARCHAR NOT NULL,
     description VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, PRIMARY KEY (model_name, version))`,
  `CREATE TABLE IF NOT EXISTS registry.aliases (
     model_name VARCHAR NOT NULL, alias VARCHAR NOT NULL, version INTEGER NOT NULL,
     updated_at TIMESTAMP NOT NULL, PRIMARY KEY (model_name, alias))`,
  `CREATE TABLE IF NOT EXISTS registry.alias_changes (
     seq BIGINT PRIMARY KEY, model_name VARCHAR NOT NULL, alias VARCHAR NOT NULL, from_version INTEGER,
     to_version INTEGER, actor VARCHAR NOT NULL, reason VARCHAR NOT NULL, time TIMESTAMP NOT NULL,
     forced BOOLEAN NOT NULL)`,
];

/** The registry's migrations in order (services/storage/migrations.ts). */
export const REGISTRY_MIGRATIONS: readonly Migration[] = [
  { version: 1, statements: () => TABLES },
  // Artifact bytes in a shared database (blob-store.ts); beside an embedded one they stay in files.
  {
    version: 2,
    statements: (dialect) =>
      dialect === "postgres"
        ? ["CREATE TABLE IF NOT EXISTS registry.blobs (sha256 VARCHAR PRIMARY KEY, bytes BYTEA NOT NULL)"]
        : [],
  },
];

/**
 * Brings the registry's tables to this build's version. Throws when the database was written by a
 * newer one. Databases from before `schema_migrations` recorded their version in registry.schema_version.
 */
export async function migrateRegistry(db: SqlDatabase): Promise<void> {
  await migrate(db, "registry", REGISTRY_MIGRATIONS, {
    legacyVersion: async (tx) => {
      if (!(await tableExists(tx, "registry.schema_version"))) return 0;
      const [row] = await tx.all<{ version: number | null }>(
        "SELECT CAST(MAX(version) AS INTEGER) AS version FROM registry.schema_version",
      );
      return row?.version ?? 0;
    },
    tooNew: (found, known) =>
      new RegistryError(
        "failed_precondition",
        `the registry in ${db.path} has schema version ${found}; this build knows version ${known} at most`,
      ),
  });
}

export function newId(): string {
  return randomUUID().replaceAll("-", "");
}

// ---------------------------------------------------------------------------------------------
// rows

export interface ExperimentRow {
  id: string;
  name: string;
  created_at: Date;
}
export interface RunRow {
  id: string;
  experiment_id: string;
  name: string;
  status: RunStatus;
  start_time: Date;
  end_time: Date | null;
  source_commit: string;
  data_fingerprint: string;
}
export interface KeyValueRow {
  owner: string;
  key: string;
  value: string;
}
export interface MetricRow {
  owner: string;
  key: string;
  value: number;
}
export interface ArtifactRow {
  run_id: string;
  path: string;
  sha256: string;
  size_bytes: number;
  content_type: string;
}
export interface VersionRow {
  model_name: string;
  version: number;
  run_id: string;
  description: string;
  created_at: Date;
}
export interface AliasRow {
  model_name: string;
  alias: string;
  version: number;
}
export interface ChangeRow {
  model_name: string;
  alias: string;
  from_version: number | null;
  to_version: number | null;
  actor: string;
  reason: string;
  time: Date;
  forced: boolean;
}

export const ARTIFACT_COLUMNS =
  "run_id, path, sha256, CAST(size_bytes AS DOUBLE PRECISION) AS size_bytes, content_type";

export function toArtifact(row: ArtifactRow): Artifact {
  return { path: row.path, sha256: row.sha256, sizeBytes: row.size_bytes, contentType: row.content_type };
}

export function group<R extends { owner: string }, V>(
  rows: readonly R[],
  pick: (r: R) => [string, V],
): Map<string, Record<string, V>> {
  const out = new Map<string, Record<string, V>>();
  for (const row of rows) {
    let record = out.get(row.owner);
    if (!record) {
      // No prototype: a key named `__proto__` (a tag, a param) is kept as an entry.
      record = Object.create(null) as Record<string, V>;
      out.set(row.owner, record);
    }
    const [k, v] = pick(row);
    record[k] = v;
  }
  return out;
}

export function toChange(row: ChangeRow): AliasChange {
  return {
    modelName: row.model_name,
    alias: row.alias,
    fromVersion: row.from_version === null ? "" : String(row.from_version),
    toVersion: row.to_version === null ? "" : String(row.to_version),
    actor: row.actor,
    reason: row.reason,
    time: row.time,
    forced: row.forced,
  };
}
