import { decodePageToken, encodePageToken, queryKey } from "../paging.js";
import type { Queryable, SqlDatabase } from "../storage/database.js";
import { RegistryError } from "./errors.js";
import { insertExperiment, loadExperiment, resolveExperiment } from "./experiments.js";
import {
  ARTIFACT_COLUMNS,
  type ArtifactRow,
  group,
  type KeyValueRow,
  type MetricRow,
  newId,
  type RunRow,
  toArtifact,
} from "./schema.js";
import {
  filterToSql,
  MAX_SEARCH_EXPERIMENTS,
  orderByToSql,
  parseFilter,
  parseOrderBy,
} from "./search-filter.js";
import type { Artifact, EndStatus, MetricInput, MetricPoint, Run, SearchRunsQuery } from "./types.js";
import {
  checkExperimentName,
  checkKey,
  checkRunName,
  checkTags,
  invalid,
  optionalText,
  requireText,
} from "./validation.js";

/** Runs: params, step-indexed metrics and tags of one training attempt, their lifecycle and search. */

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;
const INSERT_BATCH = 400;

function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

const MAX_METRICS_PER_BATCH = 1000;
const MAX_PARAMS_TAGS_PER_BATCH = 100;
const MAX_ENTITIES_PER_BATCH = 1000;

/**
 * MLflow's batch limits (mlflow/utils/validation.py) for one client call (LogRunData, runs/log-batch):
 * a call is one transaction holding the database. The server's own training jobs log more in one go.
 */
export function checkBatchLimits(data: {
  params?: Record<string, string>;
  metrics?: readonly unknown[];
  tags?: Record<string, string>;
}): void {
  const counts = {
    metrics: data.metrics?.length ?? 0,
    params: Object.keys(data.params ?? {}).length,
    tags: Object.keys(data.tags ?? {}).length,
  };
  for (const [field, limit] of [
    ["metrics", MAX_METRICS_PER_BATCH],
    ["params", MAX_PARAMS_TAGS_PER_BATCH],
    ["tags", MAX_PARAMS_TAGS_PER_BATCH],
  ] as const) {
    if (counts[field] > limit) {
      invalid(
        field,
        `a batch can hold at most ${limit} ${field}, got ${counts[field]}; split it across calls`,
      );
    }
  }
  if (counts.metrics + counts.params + counts.tags > MAX_ENTITIES_PER_BATCH) {
    invalid(
      "metrics",
      `a batch can hold at most ${MAX_ENTITIES_PER_BATCH} metrics, params and tags in all, got ${counts.metrics + counts.params + counts.tags}`,
    );
  }
}

export class Runs {
  constructor(private readonly db: SqlDatabase) {}

  async createRun(input: {
    experiment: string;
    name?: string;
    tags?: Record<string, string>;
    sourceCommit?: string;
    dataFingerprint?: string;
  }): Promise<Run> {
    const experiment = requireText(input.experiment, "experiment", 256);
    const name = checkRunName(input.name, "name");
    const tags = input.tags ?? {};
    checkTags(tags, "tags");
    const sourceCommit = optionalText(input.sourceCommit, "source_commit", 100);
    const dataFingerprint = optionalText(input.dataFingerprint, "data_fingerprint", 200);
    return this.db.transaction(async (tx) => {
      let exp =
        (await loadExperiment(tx, experiment, "id")) ?? (await loadExperiment(tx, experiment, "name"));
      if (!exp) exp = await insertExperiment(tx, checkExperimentName(experiment, "experiment"), {});
      const id = newId();
      await tx.run(
        `INSERT INTO registry.runs
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, 'running', $4::TIMESTAMP, NULL, $5, $6 FROM registry.runs`,
        [id, exp.id, name || `run-${id.slice(0, 8)}`, new Date(), sourceCommit, dataFingerprint],
      );
      for (const [key, value] of Object.entries(tags)) {
        await tx.run("INSERT INTO registry.run_tags VALUES ($1, $2, $3)", [id, key, value]);
      }
      return loadRunOrThrow(tx, id);
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
    checkTags(tags, "tags");
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
      await requireRunning(tx, runId, "data can only be logged to a running run");
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
        await insertRows(tx, "registry.run_params", 3, (push) => {
          for (const [key, value] of fresh) push([runId, key, value]);
        });
      }
      if (points.length > 0) {
        const [row] = await tx.all<{ seq: number }>(
          "SELECT CAST(COALESCE(MAX(seq), 0) AS DOUBLE PRECISION) AS seq FROM registry.run_metrics WHERE run_id = $1",
          [runId],
        );
        const base = row?.seq ?? 0;
        await insertRows(tx, "registry.run_metrics", 6, (push) => {
          points.forEach((p, i) => {
            push([runId, p.key, p.value, p.step, p.time, base + i + 1]);
          });
        });
      }
      await upsertTags(tx, runId, tags);
    });
  }

  async endRun(runId: string, status: EndStatus): Promise<Run> {
    requireText(runId, "run_id", 64);
    if (!["finished", "failed", "cancelled"].includes(status)) {
      invalid("status", `status must be finished, failed or cancelled, got ${JSON.stringify(status)}`);
    }
    return this.db.transaction(async (tx) => {
      const run = await requireRun(tx, runId);
      if (run.status !== "running") {
        if (run.status === status) return loadRunOrThrow(tx, runId);
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
      return loadRunOrThrow(tx, runId);
    });
  }

  async getRun(runId: string): Promise<Run | undefined> {
    if (typeof runId !== "string" || runId === "") return undefined;
    return this.db.transaction(async (tx) => (await loadRuns(tx, [runId]))[0]);
  }

  /** Every logged point of one metric, by step then time. */
  async metricHistory(runId: string, key: string): Promise<MetricPoint[]> {
    requireText(key, "key", 250);
    return this.db.transaction(async (tx) => {
      await requireRun(tx, runId);
      return tx.all<MetricPoint>(
        `SELECT value, CAST(step AS DOUBLE PRECISION) AS step, time FROM registry.run_metrics
         WHERE run_id = $1 AND key = $2 ORDER BY step, time, seq`,
        [runId, key],
      );
    });
  }

  /**
   * MLflow-style search (see search-filter.ts). Default order: newest first. The page token is an
   * offset bound to the query it came from (services/paging.ts); the page size is part of the query.
   */
  async searchRuns(q: SearchRunsQuery): Promise<{ runs: Run[]; nextPageToken: string }> {
    const clauses = parseFilter(q.filter ?? "");
    const order = parseOrderBy(q.orderBy ?? []);
    const pageSize = q.pageSize === undefined || q.pageSize === 0 ? DEFAULT_PAGE_SIZE : q.pageSize;
    if (!Number.isSafeInteger(pageSize) || pageSize < 0 || pageSize > MAX_PAGE_SIZE) {
      invalid("page_size", `page_size must be between 1 and ${MAX_PAGE_SIZE}, got ${q.pageSize}`);
    }
    const experiments = q.experiments ?? [];
    if (experiments.length > MAX_SEARCH_EXPERIMENTS) {
      invalid(
        "experiment_ids",
        `experiment_ids names ${experiments.length} experiments; the limit is ${MAX_SEARCH_EXPERIMENTS}`,
      );
    }
    const key = queryKey([experiments, q.filter ?? "", q.orderBy ?? [], pageSize]);
    const offset = decodePageToken(q.pageToken ?? "", key, invalid);

    return this.db.transaction(async (tx) => {
      const params: unknown[] = [];
      const bind = (value: unknown): string => {
        params.push(value);
        return `$${params.length}`;
      };
      const where: string[] = [];
      if (experiments.length > 0) {
        const ids: string[] = [];
        for (const e of experiments) ids.push((await resolveExperiment(tx, e)).id);
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
      const runs = await loadRuns(tx, page);
      const nextPageToken = more ? encodePageToken(offset + pageSize, key) : "";
      return { runs, nextPageToken };
    });
  }
}

export async function requireRun(tx: Queryable, runId: string): Promise<RunRow> {
  const [row] = await tx.all<RunRow>("SELECT * FROM registry.runs WHERE id = $1", [runId]);
  if (!row) throw new RegistryError("not_found", `run ${runId} does not exist`, "run_id");
  return row;
}

export async function requireRunning(tx: Queryable, runId: string, why: string): Promise<RunRow> {
  const row = await requireRun(tx, runId);
  if (row.status !== "running") {
    throw new RegistryError("failed_precondition", `run ${runId} is ${row.status}; ${why}`, "run_id");
  }
  return row;
}

export async function loadRunOrThrow(tx: Queryable, runId: string): Promise<Run> {
  const [run] = await loadRuns(tx, [runId]);
  if (!run) throw new RegistryError("not_found", `run ${runId} does not exist`, "run_id");
  return run;
}

/** Full runs for `ids`, in the order of `ids` (missing ones left out). */
export async function loadRuns(tx: Queryable, ids: readonly string[]): Promise<Run[]> {
  if (ids.length === 0) return [];
  const list = [ids as string[]];
  const rows = await tx.all<RunRow>(
    "SELECT * FROM registry.runs WHERE id IN (SELECT unnest($1::VARCHAR[]))",
    list,
  );
  const params = group(
    await tx.all<KeyValueRow>(
      "SELECT run_id AS owner, key, value FROM registry.run_params WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY key",
      list,
    ),
    (r) => [r.key, r.value],
  );
  const tags = group(
    await tx.all<KeyValueRow>(
      "SELECT run_id AS owner, key, value FROM registry.run_tags WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY key",
      list,
    ),
    (r) => [r.key, r.value],
  );
  const metrics = await latestMetrics(tx, ids);
  const artifacts = new Map<string, Artifact[]>();
  for (const a of await tx.all<ArtifactRow>(
    `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY path`,
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

export async function latestMetrics(
  tx: Queryable,
  runIds: readonly string[],
): Promise<Map<string, Record<string, number>>> {
  if (runIds.length === 0) return new Map();
  return group(
    await tx.all<MetricRow>(
      "SELECT run_id AS owner, key, value FROM registry.latest_metrics WHERE run_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY key",
      [runIds as string[]],
    ),
    (r) => [r.key, r.value],
  );
}

async function upsertTags(tx: Queryable, runId: string, tags: Record<string, string>): Promise<void> {
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
async function insertRows(
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
