import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { traceMethods } from "../observability/tracing.js";
import type { Database, Queryable } from "../storage/database.js";
import { filterToSql, orderByToSql, parseFilter, parseOrderBy } from "./search-filter.js";

/**
 * The registry: experiments, runs (params, step-indexed metrics, tags), content-addressed artifacts,
 * registered models, versions and aliases with an audit trail. It replaces MLflow tracking and the
 * MLflow model registry, over one DuckDB file (shared with the rest of the server) and one folder.
 *
 * Every write is one DuckDB transaction, so a crash leaves either all of it or none of it. Artifact
 * bytes live outside the database at `<artifactsDir>/sha256/<2 hex>/<sha256>`: written to a temporary
 * file under `<artifactsDir>/tmp/`, fsynced, renamed into place (atomic), and only then recorded in
 * the database, so a row never points at a missing or partial file. Identical content is stored once.
 * Nothing is cached in memory: every answer is read from the database.
 */

export type RegistryErrorCode =
  | "not_found"
  | "already_exists"
  | "invalid_argument"
  | "failed_precondition"
  | "permission_denied"
  | "data_loss";

export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
    /** The offending input, named as in the proto (snake_case), when there is one. */
    readonly field?: string,
  ) {
    super(message);
    this.name = "RegistryError";
  }
}

export type RunStatus = "running" | "finished" | "failed" | "cancelled";
export type EndStatus = Exclude<RunStatus, "running">;

export interface Experiment {
  id: string;
  name: string;
  createdAt: Date;
  tags: Record<string, string>;
}

export interface Artifact {
  /** Path within the run, e.g. "model.onnx". */
  path: string;
  sha256: string;
  sizeBytes: number;
  contentType: string;
}

export interface Run {
  id: string;
  experimentId: string;
  name: string;
  status: RunStatus;
  startTime: Date;
  endTime?: Date;
  params: Record<string, string>;
  /** Latest value of each metric (highest step, then latest time). */
  metrics: Record<string, number>;
  tags: Record<string, string>;
  sourceCommit: string;
  dataFingerprint: string;
  artifacts: Artifact[];
}

export interface MetricPoint {
  value: number;
  step: number;
  time: Date;
}

export interface MetricInput {
  key: string;
  value: number;
  step?: number;
  time?: Date;
}

export interface RegisteredModel {
  name: string;
  description: string;
  createdAt: Date;
  /** Alias → version. */
  aliases: Record<string, string>;
  /** "" when the model has no version yet. */
  latestVersion: string;
}

export interface ModelVersion {
  modelName: string;
  version: string;
  /** Lineage: the run that produced this version. */
  runId: string;
  aliases: string[];
  createdAt: Date;
  /** The run's latest metrics. */
  metrics: Record<string, number>;
  artifacts: Artifact[];
  description: string;
}

export interface AliasChange {
  modelName: string;
  alias: string;
  /** "" when the alias was created. */
  fromVersion: string;
  /** "" when the alias was deleted. */
  toVersion: string;
  actor: string;
  reason: string;
  time: Date;
  /** True when the champion/challenger gate refused the move and `force` overrode it. */
  forced: boolean;
}

export interface SearchRunsQuery {
  /** Experiment ids or names; empty or absent means all. */
  experiments?: string[];
  filter?: string;
  orderBy?: string[];
  /** Default 100, at most 1000. */
  pageSize?: number;
  pageToken?: string;
}

export interface RegistryOptions {
  /** Largest artifact accepted by putArtifact; default 2 GiB. */
  maxArtifactBytes?: number;
}

/** The alias guarded by the champion/challenger gate. */
export const PRODUCTION_ALIAS = "production";
/** Run tag written by the training job: the production version the candidate was evaluated against. */
export const GATE_CHAMPION_VERSION_TAG = "gate.champion_version";
/** Run metrics written by the training job on the same recent window. */
export const GATE_CHALLENGER_RMSE = "gate.challenger_rmse";
export const GATE_CHAMPION_RMSE = "gate.champion_rmse";

export const DEFAULT_CHUNK_SIZE = 64 * 1024;
const SCHEMA_VERSION = 1;
const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;
const INSERT_BATCH = 400;

const SCHEMA: readonly string[] = [
  "CREATE SCHEMA IF NOT EXISTS registry",
  `CREATE TABLE IF NOT EXISTS registry.schema_version (
     version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)`,
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
     run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value DOUBLE NOT NULL, step BIGINT NOT NULL,
     time TIMESTAMP NOT NULL, seq BIGINT NOT NULL)`,
  `CREATE VIEW IF NOT EXISTS registry.latest_metrics AS
     SELECT run_id, key, value, step, time FROM registry.run_metrics
     QUALIFY row_number() OVER (PARTITION BY run_id, key ORDER BY step DESC, time DESC, seq DESC) = 1`,
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

const CONTENT_TYPES: Record<string, string> = {
  ".json": "application/json",
  ".onnx": "application/octet-stream",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".parquet": "application/vnd.apache.parquet",
  ".png": "image/png",
  ".html": "text/html; charset=utf-8",
};

// ---------------------------------------------------------------------------------------------
// validation

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const KEY = /^[A-Za-z0-9_.\-/: ]{1,250}$/;
const ALIAS = /^[a-z_][a-z0-9_-]{0,63}$/;
const VERSION = /^[1-9][0-9]{0,8}$/;

function invalid(field: string, message: string): never {
  throw new RegistryError("invalid_argument", message, field);
}

function requireText(value: unknown, field: string, max = 1000): string {
  if (typeof value !== "string" || value.trim() === "") invalid(field, `${field} is required`);
  if (value.length > max) invalid(field, `${field} is ${value.length} characters long; the limit is ${max}`);
  return value;
}

function optionalText(value: unknown, field: string, max: number): string {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") invalid(field, `${field} must be a string`);
  if (value.length > max) invalid(field, `${field} is ${value.length} characters long; the limit is ${max}`);
  return value;
}

function checkName(value: unknown, field: string, what: string): string {
  const name = requireText(value, field, 128);
  if (!NAME.test(name)) {
    invalid(
      field,
      `${what} name ${JSON.stringify(name)} is not valid: use letters, digits, "_", "-" or ".", starting with a letter or digit (at most 128)`,
    );
  }
  return name;
}

function checkExperimentName(value: unknown, field: string): string {
  const name = requireText(value, field, 256);
  if (name !== name.trim() || [...name].some((c) => c.charCodeAt(0) < 32 || c.charCodeAt(0) === 127)) {
    invalid(
      field,
      `experiment name ${JSON.stringify(name)} must not have control characters or surrounding spaces`,
    );
  }
  return name;
}

function checkKey(key: string, field: string): void {
  if (!KEY.test(key)) {
    invalid(
      field,
      `${field} key ${JSON.stringify(key)} is not valid: use 1-250 letters, digits, "_", "-", ".", "/", ":" or spaces`,
    );
  }
}

function checkVersion(value: unknown, field = "version"): number {
  const version = requireText(value, field, 20);
  if (!VERSION.test(version))
    invalid(field, `${field} must be a positive integer, got ${JSON.stringify(version)}`);
  return Number(version);
}

function checkAlias(value: unknown, field = "alias"): string {
  const alias = requireText(value, field, 64).toLowerCase();
  if (!ALIAS.test(alias) || alias === "latest") {
    invalid(
      field,
      `alias ${JSON.stringify(alias)} is not valid: use letters, digits, "_" or "-", starting with a letter or "_" ("latest" is reserved)`,
    );
  }
  return alias;
}

function checkArtifactPath(value: unknown): string {
  const path = requireText(value, "path", 1024);
  const segments = path.split("/");
  if (
    path.startsWith("/") ||
    path.includes("\\") ||
    path.includes("\0") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    invalid(
      "path",
      `artifact path ${JSON.stringify(path)} must be relative, with no empty, "." or ".." parts`,
    );
  }
  return path;
}

function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

function fmt(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(6))) : String(x);
}

function newId(): string {
  return randomUUID().replaceAll("-", "");
}

// ---------------------------------------------------------------------------------------------
// rows

interface ExperimentRow {
  id: string;
  name: string;
  created_at: Date;
}
interface RunRow {
  id: string;
  experiment_id: string;
  name: string;
  status: RunStatus;
  start_time: Date;
  end_time: Date | null;
  source_commit: string;
  data_fingerprint: string;
}
interface KeyValueRow {
  owner: string;
  key: string;
  value: string;
}
interface MetricRow {
  owner: string;
  key: string;
  value: number;
}
interface ArtifactRow {
  run_id: string;
  path: string;
  sha256: string;
  size_bytes: number;
  content_type: string;
}
interface VersionRow {
  model_name: string;
  version: number;
  run_id: string;
  description: string;
  created_at: Date;
}
interface AliasRow {
  model_name: string;
  alias: string;
  version: number;
}
interface ChangeRow {
  model_name: string;
  alias: string;
  from_version: number | null;
  to_version: number | null;
  actor: string;
  reason: string;
  time: Date;
  forced: boolean;
}

const ARTIFACT_COLUMNS = "run_id, path, sha256, CAST(size_bytes AS DOUBLE) AS size_bytes, content_type";

function toArtifact(row: ArtifactRow): Artifact {
  return { path: row.path, sha256: row.sha256, sizeBytes: row.size_bytes, contentType: row.content_type };
}

function group<R extends { owner: string }, V>(
  rows: readonly R[],
  pick: (r: R) => [string, V],
): Map<string, Record<string, V>> {
  const out = new Map<string, Record<string, V>>();
  for (const row of rows) {
    let record = out.get(row.owner);
    if (!record) {
      record = {};
      out.set(row.owner, record);
    }
    const [k, v] = pick(row);
    record[k] = v;
  }
  return out;
}

function toChange(row: ChangeRow): AliasChange {
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

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code === "ENOENT";
}

async function* chunksOf(data: Uint8Array | AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  if (data instanceof Uint8Array) yield data;
  else yield* data;
}

interface PageToken {
  o: number;
  q: string;
}

// ---------------------------------------------------------------------------------------------

export class Registry {
  private readonly listeners = new Set<(change: AliasChange) => void>();
  private readonly tmpDir: string;
  private readonly blobDir: string;
  private readonly maxArtifactBytes: number;

  private constructor(
    readonly db: Database,
    readonly artifactsDir: string,
    options: RegistryOptions,
  ) {
    this.tmpDir = join(artifactsDir, "tmp");
    this.blobDir = join(artifactsDir, "sha256");
    this.maxArtifactBytes = options.maxArtifactBytes ?? 2 * 1024 ** 3;
  }

  /**
   * Creates the tables when missing and removes temporary files left by an interrupted upload.
   * Throws when the database was written by a newer schema version.
   */
  static async open(db: Database, artifactsDir: string, options: RegistryOptions = {}): Promise<Registry> {
    const registry = new Registry(db, artifactsDir, options);
    await db.transaction(async (tx) => {
      for (const ddl of SCHEMA) await tx.run(ddl);
      const [row] = await tx.all<{ version: number | null }>(
        "SELECT MAX(version) AS version FROM registry.schema_version",
      );
      const version = row?.version ?? null;
      if (version === null) {
        await tx.run("INSERT INTO registry.schema_version VALUES ($1, $2)", [SCHEMA_VERSION, new Date()]);
      } else if (version > SCHEMA_VERSION) {
        throw new RegistryError(
          "failed_precondition",
          `the registry in ${db.path} has schema version ${version}; this build knows version ${SCHEMA_VERSION} at most`,
        );
      }
    });
    await rm(registry.tmpDir, { recursive: true, force: true });
    await mkdir(registry.tmpDir, { recursive: true });
    await mkdir(registry.blobDir, { recursive: true });
    return registry;
  }

  /** Where the bytes of `sha256` live. */
  blobPath(sha256: string): string {
    return join(this.blobDir, sha256.slice(0, 2), sha256);
  }

  // -------------------------------------------------------------------------------------------
  // experiments

  async createExperiment(name: string, tags: Record<string, string> = {}): Promise<Experiment> {
    const checked = checkExperimentName(name, "name");
    this.checkTags(tags, "tags");
    return this.db.transaction(async (tx) => {
      const [existing] = await tx.all<{ id: string }>("SELECT id FROM registry.experiments WHERE name = $1", [
        checked,
      ]);
      if (existing) {
        throw new RegistryError("already_exists", `experiment "${checked}" already exists`, "name");
      }
      return this.insertExperiment(tx, checked, tags);
    });
  }

  async ensureExperiment(name: string): Promise<Experiment> {
    const checked = checkExperimentName(name, "name");
    return this.db.transaction(async (tx) => {
      return (await this.loadExperiment(tx, checked, "name")) ?? this.insertExperiment(tx, checked, {});
    });
  }

  async getExperiment(idOrName: string): Promise<Experiment | undefined> {
    if (typeof idOrName !== "string" || idOrName === "") return undefined;
    return this.db.transaction(
      async (tx) =>
        (await this.loadExperiment(tx, idOrName, "id")) ?? (await this.loadExperiment(tx, idOrName, "name")),
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

  private async insertExperiment(
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

  private async loadExperiment(
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

  private async resolveExperiment(tx: Queryable, idOrName: string): Promise<Experiment> {
    const found =
      (await this.loadExperiment(tx, idOrName, "id")) ?? (await this.loadExperiment(tx, idOrName, "name"));
    if (!found)
      throw new RegistryError("not_found", `experiment "${idOrName}" does not exist`, "experiments");
    return found;
  }

  // -------------------------------------------------------------------------------------------
  // runs

  async createRun(input: {
    experiment: string;
    name?: string;
    tags?: Record<string, string>;
    sourceCommit?: string;
    dataFingerprint?: string;
  }): Promise<Run> {
    const experiment = requireText(input.experiment, "experiment", 256);
    const name = optionalText(input.name, "name", 250);
    const tags = input.tags ?? {};
    this.checkTags(tags, "tags");
    const sourceCommit = optionalText(input.sourceCommit, "source_commit", 100);
    const dataFingerprint = optionalText(input.dataFingerprint, "data_fingerprint", 200);
    return this.db.transaction(async (tx) => {
      let exp =
        (await this.loadExperiment(tx, experiment, "id")) ??
        (await this.loadExperiment(tx, experiment, "name"));
      if (!exp) exp = await this.insertExperiment(tx, checkExperimentName(experiment, "experiment"), {});
      const id = newId();
      await tx.run(
        `INSERT INTO registry.runs
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, 'running', $4, NULL, $5, $6 FROM registry.runs`,
        [id, exp.id, name || `run-${id.slice(0, 8)}`, new Date(), sourceCommit, dataFingerprint],
      );
      for (const [key, value] of Object.entries(tags)) {
        await tx.run("INSERT INTO registry.run_tags VALUES ($1, $2, $3)", [id, key, value]);
      }
      return this.loadRunOrThrow(tx, id);
    });
  }

  /**
   * Params, metrics and tags in one transaction. Only on a running run. A param, once set, cannot
   * change (logging the same value again is allowed); tags can be overwritten.
   */
  async logRunData(
    runId: string,
    data: { params?: Record<string, string>; metrics?: MetricInput[]; tags?: Record<string, string> },
  ): Promise<void> {
    requireText(runId, "run_id", 64);
    const params = data.params ?? {};
    const tags = data.tags ?? {};
    const metrics = data.metrics ?? [];
    for (const [key, value] of Object.entries(params)) {
      checkKey(key, "params");
      if (typeof value !== "string") invalid("params", `param ${key} must be a string`);
      if (value.length > 6000) invalid("params", `param ${key} is longer than 6000 characters`);
    }
    this.checkTags(tags, "tags");
    const now = new Date();
    const points = metrics.map((m, i) => {
      const field = `metrics[${i}]`;
      if (typeof m.key !== "string") invalid(field, `${field}.key is required`);
      checkKey(m.key, "metrics");
      if (typeof m.value !== "number") invalid(field, `${field}.value must be a number`);
      const step = m.step ?? 0;
      if (!Number.isSafeInteger(step)) invalid(field, `${field}.step must be an integer, got ${step}`);
      const time = m.time ?? now;
      if (!(time instanceof Date) || Number.isNaN(time.getTime()))
        invalid(field, `${field}.time is not valid`);
      return { key: m.key, value: m.value, step, time };
    });

    await this.db.transaction(async (tx) => {
      await this.requireRunning(tx, runId, "data can only be logged to a running run");
      if (Object.keys(params).length > 0) {
        const existing = new Map(
          (
            await tx.all<{ key: string; value: string }>(
              "SELECT key, value FROM registry.run_params WHERE run_id = $1",
              [runId],
            )
          ).map((r) => [r.key, r.value]),
        );
        const fresh: [string, string][] = [];
        for (const [key, value] of Object.entries(params)) {
          const old = existing.get(key);
          if (old === undefined) fresh.push([key, value]);
          else if (old !== value) {
            throw new RegistryError(
              "invalid_argument",
              `param ${key} is already ${JSON.stringify(old)} on run ${shortId(runId)}; params cannot change (got ${JSON.stringify(value)})`,
              `params.${key}`,
            );
          }
        }
        await this.insertRows(tx, "registry.run_params", 3, (push) => {
          for (const [key, value] of fresh) push([runId, key, value]);
        });
      }
      if (points.length > 0) {
        const [row] = await tx.all<{ seq: number }>(
          "SELECT CAST(COALESCE(MAX(seq), 0) AS DOUBLE) AS seq FROM registry.run_metrics WHERE run_id = $1",
          [runId],
        );
        const base = row?.seq ?? 0;
        await this.insertRows(tx, "registry.run_metrics", 6, (push) => {
          points.forEach((p, i) => {
            push([runId, p.key, p.value, p.step, p.time, base + i + 1]);
          });
        });
      }
      await this.upsertTags(tx, runId, tags);
    });
  }

  async endRun(runId: string, status: EndStatus): Promise<Run> {
    requireText(runId, "run_id", 64);
    if (!["finished", "failed", "cancelled"].includes(status)) {
      invalid("status", `status must be finished, failed or cancelled, got ${JSON.stringify(status)}`);
    }
    return this.db.transaction(async (tx) => {
      const run = await this.requireRun(tx, runId);
      if (run.status !== "running") {
        if (run.status === status) return this.loadRunOrThrow(tx, runId);
        throw new RegistryError(
          "failed_precondition",
          `run ${runId} already ended as ${run.status}; it cannot become ${status}`,
          "status",
        );
      }
      await tx.run("UPDATE registry.runs SET status = $2, end_time = $3 WHERE id = $1", [
        runId,
        status,
        new Date(),
      ]);
      return this.loadRunOrThrow(tx, runId);
    });
  }

  async getRun(runId: string): Promise<Run | undefined> {
    if (typeof runId !== "string" || runId === "") return undefined;
    return this.db.transaction(async (tx) => (await this.loadRuns(tx, [runId]))[0]);
  }

  /** Every logged point of one metric, by step then time. */
  async metricHistory(runId: string, key: string): Promise<MetricPoint[]> {
    requireText(key, "key", 250);
    return this.db.transaction(async (tx) => {
      await this.requireRun(tx, runId);
      return tx.all<MetricPoint>(
        `SELECT value, CAST(step AS DOUBLE) AS step, time FROM registry.run_metrics
         WHERE run_id = $1 AND key = $2 ORDER BY step, time, seq`,
        [runId, key],
      );
    });
  }

  /**
   * MLflow-style search (see search-filter.ts). Default order: newest first. The page token is an
   * offset bound to the query it came from.
   */
  async searchRuns(q: SearchRunsQuery): Promise<{ runs: Run[]; nextPageToken: string }> {
    const clauses = parseFilter(q.filter ?? "");
    const order = parseOrderBy(q.orderBy ?? []);
    const pageSize = q.pageSize === undefined || q.pageSize === 0 ? DEFAULT_PAGE_SIZE : q.pageSize;
    if (!Number.isSafeInteger(pageSize) || pageSize < 0 || pageSize > MAX_PAGE_SIZE) {
      invalid("page_size", `page_size must be between 1 and ${MAX_PAGE_SIZE}, got ${q.pageSize}`);
    }
    const experiments = q.experiments ?? [];
    const fingerprint = createHash("sha256")
      .update(JSON.stringify([experiments, q.filter ?? "", q.orderBy ?? [], pageSize]))
      .digest("hex")
      .slice(0, 16);
    let offset = 0;
    if (q.pageToken) {
      let token: PageToken | undefined;
      try {
        token = JSON.parse(Buffer.from(q.pageToken, "base64url").toString("utf8")) as PageToken;
      } catch {
        token = undefined;
      }
      if (!token || token.q !== fingerprint || !Number.isSafeInteger(token.o) || token.o < 0) {
        invalid("page_token", "page_token is not valid for this query");
      }
      offset = token.o;
    }

    return this.db.transaction(async (tx) => {
      const params: unknown[] = [];
      const bind = (value: unknown): string => {
        params.push(value);
        return `$${params.length}`;
      };
      const where: string[] = [];
      if (experiments.length > 0) {
        const ids: string[] = [];
        for (const e of experiments) ids.push((await this.resolveExperiment(tx, e)).id);
        where.push(`r.experiment_id IN (${ids.map(bind).join(", ")})`);
      }
      where.push(...filterToSql(clauses, bind));
      const orderSql = [...orderByToSql(order, bind), "r.start_time DESC", "r.seq DESC"];
      const sql = `SELECT r.id FROM registry.runs r
        ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY ${orderSql.join(", ")}
        LIMIT ${bind(pageSize + 1)} OFFSET ${bind(offset)}`;
      const ids = (await tx.all<{ id: string }>(sql, params)).map((r) => r.id);
      const more = ids.length > pageSize;
      const page = ids.slice(0, pageSize);
      const runs = await this.loadRuns(tx, page);
      const nextPageToken = more
        ? Buffer.from(JSON.stringify({ o: offset + pageSize, q: fingerprint } satisfies PageToken)).toString(
            "base64url",
          )
        : "";
      return { runs, nextPageToken };
    });
  }

  private async requireRun(tx: Queryable, runId: string): Promise<RunRow> {
    const [row] = await tx.all<RunRow>("SELECT * FROM registry.runs WHERE id = $1", [runId]);
    if (!row) throw new RegistryError("not_found", `run ${runId} does not exist`, "run_id");
    return row;
  }

  private async requireRunning(tx: Queryable, runId: string, why: string): Promise<RunRow> {
    const row = await this.requireRun(tx, runId);
    if (row.status !== "running") {
      throw new RegistryError("failed_precondition", `run ${runId} is ${row.status}; ${why}`, "run_id");
    }
    return row;
  }

  private async loadRunOrThrow(tx: Queryable, runId: string): Promise<Run> {
    const [run] = await this.loadRuns(tx, [runId]);
    if (!run) throw new RegistryError("not_found", `run ${runId} does not exist`, "run_id");
    return run;
  }

  /** Full runs for `ids`, in the order of `ids` (missing ones left out). */
  private async loadRuns(tx: Queryable, ids: readonly string[]): Promise<Run[]> {
    if (ids.length === 0) return [];
    const list = [ids as string[]];
    const rows = await tx.all<RunRow>("SELECT * FROM registry.runs WHERE id IN (SELECT unnest($1))", list);
    const params = group(
      await tx.all<KeyValueRow>(
        "SELECT run_id AS owner, key, value FROM registry.run_params WHERE run_id IN (SELECT unnest($1)) ORDER BY key",
        list,
      ),
      (r) => [r.key, r.value],
    );
    const tags = group(
      await tx.all<KeyValueRow>(
        "SELECT run_id AS owner, key, value FROM registry.run_tags WHERE run_id IN (SELECT unnest($1)) ORDER BY key",
        list,
      ),
      (r) => [r.key, r.value],
    );
    const metrics = await this.latestMetrics(tx, ids);
    const artifacts = new Map<string, Artifact[]>();
    for (const a of await tx.all<ArtifactRow>(
      `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id IN (SELECT unnest($1)) ORDER BY path`,
      list,
    )) {
      const forRun = artifacts.get(a.run_id) ?? [];
      forRun.push(toArtifact(a));
      artifacts.set(a.run_id, forRun);
    }
    const byId = new Map(rows.map((r) => [r.id, r]));
    const runs: Run[] = [];
    for (const id of ids) {
      const r = byId.get(id);
      if (!r) continue;
      runs.push({
        id: r.id,
        experimentId: r.experiment_id,
        name: r.name,
        status: r.status,
        startTime: r.start_time,
        ...(r.end_time ? { endTime: r.end_time } : {}),
        params: params.get(id) ?? {},
        metrics: metrics.get(id) ?? {},
        tags: tags.get(id) ?? {},
        sourceCommit: r.source_commit,
        dataFingerprint: r.data_fingerprint,
        artifacts: artifacts.get(id) ?? [],
      });
    }
    return runs;
  }

  private async latestMetrics(
    tx: Queryable,
    runIds: readonly string[],
  ): Promise<Map<string, Record<string, number>>> {
    if (runIds.length === 0) return new Map();
    return group(
      await tx.all<MetricRow>(
        "SELECT run_id AS owner, key, value FROM registry.latest_metrics WHERE run_id IN (SELECT unnest($1)) ORDER BY key",
        [runIds as string[]],
      ),
      (r) => [r.key, r.value],
    );
  }

  private async upsertTags(tx: Queryable, runId: string, tags: Record<string, string>): Promise<void> {
    for (const [key, value] of Object.entries(tags)) {
      const [existing] = await tx.all("SELECT 1 FROM registry.run_tags WHERE run_id = $1 AND key = $2", [
        runId,
        key,
      ]);
      if (existing) {
        await tx.run("UPDATE registry.run_tags SET value = $3 WHERE run_id = $1 AND key = $2", [
          runId,
          key,
          value,
        ]);
      } else {
        await tx.run("INSERT INTO registry.run_tags VALUES ($1, $2, $3)", [runId, key, value]);
      }
    }
  }

  /** Multi-row INSERTs of `width` columns, a few hundred rows per statement. */
  private async insertRows(
    tx: Queryable,
    table: string,
    width: number,
    fill: (push: (row: unknown[]) => void) => void,
  ): Promise<void> {
    const rows: unknown[][] = [];
    fill((row) => rows.push(row));
    for (let start = 0; start < rows.length; start += INSERT_BATCH) {
      const batch = rows.slice(start, start + INSERT_BATCH);
      const values = batch
        .map((_, i) => `(${Array.from({ length: width }, (_, j) => `$${i * width + j + 1}`).join(", ")})`)
        .join(", ");
      await tx.run(`INSERT INTO ${table} VALUES ${values}`, batch.flat());
    }
  }

  private checkTags(tags: Record<string, string>, field: string): void {
    if (typeof tags !== "object" || tags === null) invalid(field, `${field} must be a map of strings`);
    for (const [key, value] of Object.entries(tags)) {
      checkKey(key, field);
      if (typeof value !== "string") invalid(field, `tag ${key} must be a string`);
      if (value.length > 8000) invalid(field, `tag ${key} is longer than 8000 characters`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // artifacts

  /**
   * Stores one artifact of a running run by content: streamed to a temporary file while hashing,
   * fsynced, renamed to its content address, and only then recorded. Writing the same path again
   * (while the run is running) replaces the record.
   */
  async putArtifact(
    runId: string,
    path: string,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    contentType?: string,
  ): Promise<Artifact> {
    requireText(runId, "run_id", 64);
    const checkedPath = checkArtifactPath(path);
    const type =
      optionalText(contentType, "content_type", 255) ||
      CONTENT_TYPES[extname(checkedPath).toLowerCase()] ||
      "application/octet-stream";
    await this.db.transaction((tx) =>
      this.requireRunning(tx, runId, "artifacts can only be added to a running run"),
    );

    const tmp = join(this.tmpDir, `${randomUUID()}.part`);
    const hash = createHash("sha256");
    let size = 0;
    const handle = await open(tmp, "wx");
    try {
      for await (const chunk of chunksOf(data)) {
        if (!(chunk instanceof Uint8Array)) invalid("chunk", "artifact chunks must be bytes");
        size += chunk.byteLength;
        if (size > this.maxArtifactBytes) {
          invalid(
            "chunk",
            `artifact ${checkedPath} is larger than the limit of ${this.maxArtifactBytes} bytes`,
          );
        }
        hash.update(chunk);
        await handle.write(chunk);
      }
      await handle.sync();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw error;
    }
    await handle.close();
    const sha256 = hash.digest("hex");
    const target = this.blobPath(sha256);
    const dir = join(this.blobDir, sha256.slice(0, 2));
    try {
      const created = await mkdir(dir, { recursive: true });
      // Same content renamed over an existing blob is harmless (and repairs a damaged one).
      await rename(tmp, target);
      await syncDir(dir);
      if (created !== undefined) await syncDir(this.blobDir);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }

    const artifact: Artifact = { path: checkedPath, sha256, sizeBytes: size, contentType: type };
    await this.db.transaction(async (tx) => {
      await this.requireRunning(tx, runId, "artifacts can only be added to a running run");
      await tx.run("DELETE FROM registry.artifacts WHERE run_id = $1 AND path = $2", [runId, checkedPath]);
      await tx.run("INSERT INTO registry.artifacts VALUES ($1, $2, $3, $4, $5, $6)", [
        runId,
        checkedPath,
        sha256,
        size,
        type,
        new Date(),
      ]);
    });
    return artifact;
  }

  async listArtifacts(runId: string): Promise<Artifact[]> {
    requireText(runId, "run_id", 64);
    return this.db.transaction(async (tx) => {
      await this.requireRun(tx, runId);
      const rows = await tx.all<ArtifactRow>(
        `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1 ORDER BY path`,
        [runId],
      );
      return rows.map(toArtifact);
    });
  }

  /** The whole artifact, checked against its sha256. */
  async readArtifact(runId: string, path: string): Promise<Buffer> {
    const artifact = await this.findArtifact(runId, path);
    let bytes: Buffer;
    try {
      bytes = await readFile(this.blobPath(artifact.sha256));
    } catch (error) {
      if (isNotFound(error)) throw this.missingBlob(runId, artifact);
      throw error;
    }
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (actual !== artifact.sha256) throw this.corruptBlob(runId, artifact, actual);
    return bytes;
  }

  /**
   * The artifact's record and its bytes in chunks. Checks up front that the file is there with the
   * recorded size; the sha256 is checked as the chunks go, and a mismatch fails the last read.
   */
  async openArtifact(
    runId: string,
    path: string,
    chunkSize = DEFAULT_CHUNK_SIZE,
  ): Promise<{ artifact: Artifact; chunks: AsyncIterable<Uint8Array> }> {
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0)
      invalid("chunk_size", "chunk size must be positive");
    const artifact = await this.findArtifact(runId, path);
    const file = this.blobPath(artifact.sha256);
    try {
      const info = await stat(file);
      if (info.size !== artifact.sizeBytes) {
        throw new RegistryError(
          "data_loss",
          `artifact ${artifact.path} of run ${runId} has ${info.size} bytes on disk; ${artifact.sizeBytes} were recorded`,
        );
      }
    } catch (error) {
      if (isNotFound(error)) throw this.missingBlob(runId, artifact);
      throw error;
    }
    const self = this;
    async function* chunks(): AsyncIterable<Uint8Array> {
      let handle: Awaited<ReturnType<typeof open>>;
      try {
        handle = await open(file, "r");
      } catch (error) {
        if (isNotFound(error)) throw self.missingBlob(runId, artifact);
        throw error;
      }
      try {
        const hash = createHash("sha256");
        for (;;) {
          const buffer = Buffer.allocUnsafe(chunkSize);
          const { bytesRead } = await handle.read(buffer, 0, chunkSize, null);
          if (bytesRead === 0) break;
          const chunk = buffer.subarray(0, bytesRead);
          hash.update(chunk);
          yield chunk;
        }
        const actual = hash.digest("hex");
        if (actual !== artifact.sha256) throw self.corruptBlob(runId, artifact, actual);
      } finally {
        await handle.close();
      }
    }
    return { artifact, chunks: chunks() };
  }

  private async findArtifact(runId: string, path: string): Promise<Artifact> {
    requireText(runId, "run_id", 64);
    requireText(path, "path", 1024);
    return this.db.transaction(async (tx) => {
      await this.requireRun(tx, runId);
      const [row] = await tx.all<ArtifactRow>(
        `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1 AND path = $2`,
        [runId, path],
      );
      if (!row) throw new RegistryError("not_found", `run ${runId} has no artifact "${path}"`, "path");
      return toArtifact(row);
    });
  }

  private missingBlob(runId: string, artifact: Artifact): RegistryError {
    return new RegistryError(
      "not_found",
      `artifact ${artifact.path} of run ${runId} is missing from the artifact store (sha256 ${artifact.sha256})`,
      "path",
    );
  }

  private corruptBlob(runId: string, artifact: Artifact, actual: string): RegistryError {
    return new RegistryError(
      "data_loss",
      `artifact ${artifact.path} of run ${runId} is damaged: its sha256 is ${actual}, ${artifact.sha256} was recorded`,
    );
  }

  // -------------------------------------------------------------------------------------------
  // registered models and versions

  async createRegisteredModel(name: string, description = ""): Promise<RegisteredModel> {
    const checked = checkName(name, "name", "model");
    const desc = optionalText(description, "description", 5000);
    return this.db.transaction(async (tx) => {
      if (await this.modelExists(tx, checked)) {
        throw new RegistryError("already_exists", `model "${checked}" already exists`, "name");
      }
      await tx.run("INSERT INTO registry.registered_models VALUES ($1, $2, $3)", [checked, desc, new Date()]);
      return this.loadModelOrThrow(tx, checked);
    });
  }

  async getRegisteredModel(name: string): Promise<RegisteredModel | undefined> {
    if (typeof name !== "string" || name === "") return undefined;
    return this.db.transaction(async (tx) => (await this.loadModels(tx, name))[0]);
  }

  async listRegisteredModels(): Promise<RegisteredModel[]> {
    return this.db.transaction((tx) => this.loadModels(tx));
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
    return this.db.transaction((tx) => this.insertVersion(tx, modelName, runId, description));
  }

  /**
   * Registers a finished run as the next version, points `staging` at it and offers it to the
   * champion/challenger gate for `production`, all in one transaction: a crash leaves either none
   * of it or all of it, never a version that skipped the gate.
   */
  async registerVersion(input: {
    modelName: string;
    runId: string;
    description?: string;
    actor: string;
    /** Reason recorded with the `staging` move. */
    reason: string;
    /** Reason recorded with the `production` move when the gate lets it through. */
    promotionReason: string;
  }): Promise<{ version: ModelVersion; promoted: boolean; refusal?: string }> {
    const modelName = checkName(input.modelName, "model_name", "model");
    const runId = requireText(input.runId, "run_id", 64);
    const description = optionalText(input.description, "description", 5000);
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const promotionReason = requireText(input.promotionReason, "promotion_reason", 2000);
    const changes: AliasChange[] = [];
    const outcome = await this.db.transaction(async (tx) => {
      const created = await this.insertVersion(tx, modelName, runId, description);
      const version = Number(created.version);
      changes.push(await this.moveAlias(tx, modelName, "staging", version, actor, reason, false));
      const [current] = await tx.all<{ version: number }>(
        "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
        [modelName, PRODUCTION_ALIAS],
      );
      const refusal = await this.gate(tx, modelName, version, current?.version);
      if (refusal === undefined) {
        changes.push(
          await this.moveAlias(tx, modelName, PRODUCTION_ALIAS, version, actor, promotionReason, false),
        );
      }
      return {
        version: await this.loadVersionOrThrow(tx, modelName, version),
        promoted: refusal === undefined,
        ...(refusal !== undefined ? { refusal } : {}),
      };
    });
    this.emit(changes);
    return outcome;
  }

  private async insertVersion(
    tx: Queryable,
    modelName: string,
    runId: string,
    description: string,
  ): Promise<ModelVersion> {
    const run = await this.requireRun(tx, runId);
    if (run.status !== "finished") {
      throw new RegistryError(
        "failed_precondition",
        `run ${runId} is ${run.status}; only a finished run can become a model version`,
        "run_id",
      );
    }
    const artifacts = (
      await tx.all<ArtifactRow>(`SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1`, [
        runId,
      ])
    ).map(toArtifact);
    if (artifacts.length === 0) {
      throw new RegistryError(
        "failed_precondition",
        `run ${runId} has no artifacts; a model version needs the run's artifacts`,
        "run_id",
      );
    }
    for (const a of artifacts) {
      let size: number;
      try {
        size = (await stat(this.blobPath(a.sha256))).size;
      } catch (error) {
        if (isNotFound(error)) {
          throw new RegistryError(
            "failed_precondition",
            `artifact ${a.path} of run ${runId} is missing from the artifact store; no version was created`,
            "run_id",
          );
        }
        throw error;
      }
      if (size !== a.sizeBytes) {
        throw new RegistryError(
          "data_loss",
          `artifact ${a.path} of run ${runId} has ${size} bytes on disk; ${a.sizeBytes} were recorded; no version was created`,
          "run_id",
        );
      }
    }
    if (!(await this.modelExists(tx, modelName))) {
      await tx.run("INSERT INTO registry.registered_models VALUES ($1, '', $2)", [modelName, new Date()]);
    }
    const [row] = await tx.all<{ version: number }>(
      `INSERT INTO registry.model_versions
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4 FROM registry.model_versions WHERE model_name = $1
         RETURNING version`,
      [modelName, runId, description, new Date()],
    );
    return this.loadVersionOrThrow(tx, modelName, row?.version ?? 0);
  }

  /** A version by number, by alias, or "latest"; undefined when the model or version is unknown. */
  async getModelVersion(modelName: string, versionOrAlias: string): Promise<ModelVersion | undefined> {
    if (typeof modelName !== "string" || modelName === "") return undefined;
    if (typeof versionOrAlias !== "string" || versionOrAlias === "") return undefined;
    return this.db.transaction(async (tx) => {
      const version = await this.resolveVersion(tx, modelName, versionOrAlias);
      if (version === undefined) return undefined;
      return (await this.loadVersions(tx, modelName, [version]))[0];
    });
  }

  async listModelVersions(modelName: string): Promise<ModelVersion[]> {
    requireText(modelName, "model_name", 128);
    return this.db.transaction(async (tx) => {
      await this.requireModel(tx, modelName);
      return this.loadVersions(tx, modelName);
    });
  }

  private async modelExists(tx: Queryable, name: string): Promise<boolean> {
    const rows = await tx.all("SELECT 1 FROM registry.registered_models WHERE name = $1", [name]);
    return rows.length > 0;
  }

  private async requireModel(tx: Queryable, name: string): Promise<void> {
    if (!(await this.modelExists(tx, name))) {
      throw new RegistryError("not_found", `model "${name}" does not exist`, "model_name");
    }
  }

  private async loadModelOrThrow(tx: Queryable, name: string): Promise<RegisteredModel> {
    const [model] = await this.loadModels(tx, name);
    if (!model) throw new RegistryError("not_found", `model "${name}" does not exist`, "model_name");
    return model;
  }

  private async loadModels(tx: Queryable, name?: string): Promise<RegisteredModel[]> {
    // `$1 IS NULL` selects every model; otherwise the one named.
    const args = [name ?? null];
    const rows = await tx.all<{ name: string; description: string; created_at: Date; latest: number | null }>(
      `SELECT m.name, m.description, m.created_at,
              (SELECT MAX(v.version) FROM registry.model_versions v WHERE v.model_name = m.name) AS latest
       FROM registry.registered_models m WHERE $1 IS NULL OR m.name = $1 ORDER BY m.name`,
      args,
    );
    const aliases = await tx.all<AliasRow>(
      `SELECT model_name, alias, version FROM registry.aliases
       WHERE $1 IS NULL OR model_name = $1 ORDER BY alias`,
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

  private async resolveVersion(
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

  private async loadVersionOrThrow(tx: Queryable, modelName: string, version: number): Promise<ModelVersion> {
    const [found] = await this.loadVersions(tx, modelName, [version]);
    if (!found)
      throw new RegistryError("not_found", `model "${modelName}" has no version ${version}`, "version");
    return found;
  }

  private async loadVersions(tx: Queryable, modelName: string, versions?: number[]): Promise<ModelVersion[]> {
    const rows = await tx.all<VersionRow>(
      versions === undefined
        ? "SELECT * FROM registry.model_versions WHERE model_name = $1 ORDER BY version"
        : "SELECT * FROM registry.model_versions WHERE model_name = $1 AND version IN (SELECT unnest($2)) ORDER BY version",
      versions === undefined ? [modelName] : [modelName, versions],
    );
    if (rows.length === 0) return [];
    const runIds = [...new Set(rows.map((r) => r.run_id))];
    const metrics = await this.latestMetrics(tx, runIds);
    const artifacts = await tx.all<ArtifactRow>(
      `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id IN (SELECT unnest($1)) ORDER BY path`,
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

  // -------------------------------------------------------------------------------------------
  // aliases

  /**
   * Points `alias` at `version` in one transaction with its audit row. `production` goes through the
   * champion/challenger gate unless `force` (which needs a reason like every move).
   */
  async setAlias(input: {
    modelName: string;
    alias: string;
    version: string;
    actor: string;
    reason: string;
    force?: boolean;
  }): Promise<AliasChange> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const alias = checkAlias(input.alias);
    const version = checkVersion(input.version);
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const change = await this.db.transaction((tx) =>
      this.moveAlias(tx, modelName, alias, version, actor, reason, input.force === true),
    );
    this.emit([change]);
    return change;
  }

  async deleteAlias(input: {
    modelName: string;
    alias: string;
    actor: string;
    reason: string;
  }): Promise<AliasChange> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const alias = requireText(input.alias, "alias", 64).toLowerCase();
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const change = await this.db.transaction(async (tx) => {
      await this.requireModel(tx, modelName);
      const [row] = await tx.all<{ version: number }>(
        "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
        [modelName, alias],
      );
      if (!row) throw new RegistryError("not_found", `model "${modelName}" has no alias "${alias}"`, "alias");
      await tx.run("DELETE FROM registry.aliases WHERE model_name = $1 AND alias = $2", [modelName, alias]);
      return this.audit(tx, modelName, alias, row.version, null, actor, reason, false);
    });
    this.emit([change]);
    return change;
  }

  /**
   * Legacy MLflow stages: Staging → alias "staging"; Production → alias "production" (through the
   * gate); Archived → every alias pointing at the version is removed, each move audited.
   */
  async transitionStage(input: {
    modelName: string;
    version: string;
    stage: string;
    actor: string;
    reason: string;
  }): Promise<ModelVersion> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const version = checkVersion(input.version);
    const stage = requireText(input.stage, "stage", 32).toLowerCase();
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    if (stage !== "staging" && stage !== "production" && stage !== "archived") {
      invalid("stage", `stage must be Staging, Production or Archived, got ${JSON.stringify(input.stage)}`);
    }
    const changes: AliasChange[] = [];
    const result = await this.db.transaction(async (tx) => {
      if (stage === "archived") {
        await this.requireModel(tx, modelName);
        await this.loadVersionOrThrow(tx, modelName, version);
        const rows = await tx.all<{ alias: string }>(
          "SELECT alias FROM registry.aliases WHERE model_name = $1 AND version = $2 ORDER BY alias",
          [modelName, version],
        );
        for (const { alias } of rows) {
          await tx.run("DELETE FROM registry.aliases WHERE model_name = $1 AND alias = $2", [
            modelName,
            alias,
          ]);
          changes.push(await this.audit(tx, modelName, alias, version, null, actor, reason, false));
        }
      } else {
        changes.push(await this.moveAlias(tx, modelName, stage, version, actor, reason, false));
      }
      return this.loadVersionOrThrow(tx, modelName, version);
    });
    this.emit(changes);
    return result;
  }

  /** Alias moves, oldest first. */
  async aliasHistory(modelName: string, alias?: string): Promise<AliasChange[]> {
    requireText(modelName, "model_name", 128);
    return this.db.transaction(async (tx) => {
      await this.requireModel(tx, modelName);
      const rows = await tx.all<ChangeRow>(
        alias
          ? "SELECT * FROM registry.alias_changes WHERE model_name = $1 AND alias = $2 ORDER BY seq"
          : "SELECT * FROM registry.alias_changes WHERE model_name = $1 ORDER BY seq",
        alias ? [modelName, alias.toLowerCase()] : [modelName],
      );
      return rows.map(toChange);
    });
  }

  /** Called after each committed alias change (set, delete, stage transition). Returns an unsubscribe. */
  onAliasChange(listener: (change: AliasChange) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private emit(changes: readonly AliasChange[]): void {
    for (const change of changes) {
      for (const listener of [...this.listeners]) {
        try {
          listener(change);
        } catch (error) {
          process.emitWarning(
            `an onAliasChange listener threw: ${(error as Error)?.message ?? String(error)}`,
          );
        }
      }
    }
  }

  private async moveAlias(
    tx: Queryable,
    modelName: string,
    alias: string,
    version: number,
    actor: string,
    reason: string,
    force: boolean,
  ): Promise<AliasChange> {
    await this.requireModel(tx, modelName);
    await this.loadVersionOrThrow(tx, modelName, version);
    const [current] = await tx.all<{ version: number }>(
      "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
      [modelName, alias],
    );
    let forced = false;
    if (alias === PRODUCTION_ALIAS) {
      const refusal = await this.gate(tx, modelName, version, current?.version);
      if (refusal !== undefined) {
        if (!force) throw new RegistryError("failed_precondition", refusal, "version");
        forced = true;
      }
    }
    if (current) {
      await tx.run(
        "UPDATE registry.aliases SET version = $3, updated_at = $4 WHERE model_name = $1 AND alias = $2",
        [modelName, alias, version, new Date()],
      );
    } else {
      await tx.run("INSERT INTO registry.aliases VALUES ($1, $2, $3, $4)", [
        modelName,
        alias,
        version,
        new Date(),
      ]);
    }
    return this.audit(tx, modelName, alias, current?.version ?? null, version, actor, reason, forced);
  }

  /**
   * The champion/challenger gate for `production`: undefined when the move is allowed, otherwise why
   * not. Allowed when there is no production version yet, when the alias already points there, or
   * when the candidate's run was evaluated against the current production version
   * (tag gate.champion_version) and beat it (gate.challenger_rmse < gate.champion_rmse).
   */
  private async gate(
    tx: Queryable,
    modelName: string,
    candidate: number,
    production: number | undefined,
  ): Promise<string | undefined> {
    if (production === undefined || production === candidate) return undefined;
    const override = "pass force with a reason to override";
    const [version] = await tx.all<{ run_id: string }>(
      "SELECT run_id FROM registry.model_versions WHERE model_name = $1 AND version = $2",
      [modelName, candidate],
    );
    const runId = version?.run_id ?? "";
    const [tag] = await tx.all<{ value: string }>(
      "SELECT value FROM registry.run_tags WHERE run_id = $1 AND key = $2",
      [runId, GATE_CHAMPION_VERSION_TAG],
    );
    if (!tag) {
      return `version ${candidate} has no champion/challenger evaluation (its run has no ${GATE_CHAMPION_VERSION_TAG} tag) and production is version ${production}; ${override}`;
    }
    if (tag.value !== String(production)) {
      return `version ${candidate} was compared against version ${tag.value}, but production is now version ${production}; re-evaluate`;
    }
    const metrics = (await this.latestMetrics(tx, [runId])).get(runId) ?? {};
    const challenger = metrics[GATE_CHALLENGER_RMSE];
    const champion = metrics[GATE_CHAMPION_RMSE];
    if (challenger === undefined || champion === undefined) {
      return `version ${candidate} lacks the gate metrics ${GATE_CHALLENGER_RMSE} and ${GATE_CHAMPION_RMSE}; ${override}`;
    }
    if (!(challenger < champion)) {
      return `version ${candidate} does not beat production version ${production} on the gate window (RMSE ${fmt(challenger)} vs ${fmt(champion)}); ${override}`;
    }
    return undefined;
  }

  private async audit(
    tx: Queryable,
    modelName: string,
    alias: string,
    from: number | null,
    to: number | null,
    actor: string,
    reason: string,
    forced: boolean,
  ): Promise<AliasChange> {
    const time = new Date();
    await tx.run(
      `INSERT INTO registry.alias_changes
       SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8 FROM registry.alias_changes`,
      [modelName, alias, from, to, actor, reason, time, forced],
    );
    return {
      modelName,
      alias,
      fromVersion: from === null ? "" : String(from),
      toVersion: to === null ? "" : String(to),
      actor,
      reason,
      time,
      forced,
    };
  }
}

// A span for every registry write, so that a trace shows what an RPC or a training job registered.
traceMethods(Registry, "registry", {
  createRun: (input) => ({ "registry.experiment": input.experiment, "registry.run_name": input.name ?? "" }),
  logRunData: (runId, data) => ({
    "registry.run_id": runId,
    "registry.params": Object.keys(data.params ?? {}).length,
    "registry.metrics": data.metrics?.length ?? 0,
    "registry.tags": Object.keys(data.tags ?? {}).length,
  }),
  putArtifact: (runId, path) => ({ "registry.run_id": runId, "registry.artifact_path": path }),
  createModelVersion: (input) => ({ "registry.model_name": input.modelName, "registry.run_id": input.runId }),
  registerVersion: (input) => ({ "registry.model_name": input.modelName, "registry.run_id": input.runId }),
  setAlias: (input) => ({
    "registry.model_name": input.modelName,
    "registry.alias": input.alias,
    "registry.version": input.version,
    "registry.forced": input.force === true,
  }),
});
