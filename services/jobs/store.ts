import { randomUUID } from "node:crypto";
import { BikeshareError } from "../../core/errors.js";
import type { TrainingRequest } from "../../pipelines/training/job.js";
import { type SqlDatabase, StoreUnwritableError } from "../storage/database.js";
import { type Migration, migrate, tableExists } from "../storage/migrations.js";
import type { KnownJob } from "./kinds.js";

export type { TrainingRequest };

export type JobState = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export const TERMINAL: readonly JobState[] = ["succeeded", "failed", "cancelled"];

interface JobFields {
  id: string;
  state: JobState;
  stage: string;
  progress: number;
  reason: string;
  createdAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
  error?: string;
  runId?: string;
  modelVersion?: string;
  promoted: boolean;
  requestedBy: string;
  idempotencyKey?: string;
  attempts: number;
}

/**
 * A stored job of one kind. The store keeps every kind alike: `request` and `result` are JSON it
 * does not read, and their types are the kind's own (declared in its handler file).
 */
export interface StoredJob<K extends string = string, Request = unknown, Result = unknown> extends JobFields {
  kind: K;
  request: Request;
  /** What the kind's handler returned as `result` when the job succeeded. */
  result?: Result;
}

/** A job of any kind this build runs (`services/jobs/kinds.ts`), narrowed by its `kind`. */
export type JobRecord = KnownJob;
export type JobKind = JobRecord["kind"];

type Row = Record<string, unknown>;

function fromRow(r: Row): JobRecord {
  const opt = <T>(v: unknown) => (v === null || v === undefined ? undefined : (v as T));
  const date = (v: unknown) =>
    v === null || v === undefined ? undefined : v instanceof Date ? v : new Date(String(v));
  const result = opt<string>(r.result);
  const job: StoredJob = {
    id: String(r.id),
    kind: String(r.kind),
    state: r.state as JobState,
    stage: String(r.stage),
    progress: Number(r.progress),
    reason: String(r.reason),
    request: JSON.parse(String(r.request)),
    createdAt: date(r.created_at) as Date,
    startedAt: date(r.started_at),
    finishedAt: date(r.finished_at),
    error: opt<string>(r.error),
    runId: opt<string>(r.run_id),
    modelVersion: opt<string>(r.model_version),
    promoted: Boolean(r.promoted),
    requestedBy: String(r.requested_by),
    idempotencyKey: callersKey(opt<string>(r.idempotency_key)),
    attempts: Number(r.attempts),
    ...(result ? { result: JSON.parse(result) } : {}),
  };
  // The row's kind was written by that kind's handler, with its own request and result.
  return job as JobRecord;
}

/**
 * The stored idempotency key: the caller's key scoped by job kind and caller, so that one key means
 * one request of one caller (a scoring job's key must not answer a training request). The column
 * stays unique (no migration): the scope is part of its value. A key is printable ASCII
 * (request-limits.ts), so the unit separator cannot occur in it and the key is what follows the
 * last one.
 */
const SCOPE_SEPARATOR = "\u001f";
function scopedKey(kind: string, requestedBy: string, key: string): string {
  return `${kind}${SCOPE_SEPARATOR}${requestedBy}${SCOPE_SEPARATOR}${key}`;
}
function callersKey(stored: string | undefined): string | undefined {
  return stored === undefined ? undefined : stored.slice(stored.lastIndexOf(SCOPE_SEPARATOR) + 1);
}

/** JSON with object keys sorted: the same request sent with its map entries in another order is the same. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  );
}

const COLUMNS = `id, state, stage, progress, reason, request, created_at, started_at, finished_at,
  error, run_id, model_version, promoted, requested_by, idempotency_key, CAST(attempts AS INTEGER) AS attempts, kind, result`;

/**
 * The jobs table's migrations in order (services/storage/migrations.ts). Before `schema_migrations`,
 * `job_schema_version` recorded the version reached; databases from before that table hold version 1
 * or 2 unrecorded (counted as 0): both statements of each are no-ops there.
 */
const MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE IF NOT EXISTS jobs (
      id VARCHAR PRIMARY KEY,
      state VARCHAR NOT NULL,
      stage VARCHAR NOT NULL,
      progress DOUBLE PRECISION NOT NULL,
      reason VARCHAR NOT NULL,
      request VARCHAR NOT NULL,
      created_at TIMESTAMP NOT NULL,
      started_at TIMESTAMP,
      finished_at TIMESTAMP,
      error VARCHAR,
      run_id VARCHAR,
      model_version VARCHAR,
      promoted BOOLEAN NOT NULL,
      requested_by VARCHAR NOT NULL,
      idempotency_key VARCHAR UNIQUE,
      attempts INTEGER NOT NULL
    )`,
  ],
  // Jobs of other kinds than training (the jobs before them are training jobs), with their result.
  [
    `ALTER TABLE jobs ADD COLUMN IF NOT EXISTS kind VARCHAR DEFAULT 'train'`,
    `ALTER TABLE jobs ADD COLUMN IF NOT EXISTS result VARCHAR`,
  ],
  // A cancel asked for through another process than the one running the job (several processes on
  // one PostgreSQL): the reason waits here until the runner stops the job.
  [`ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cancel_requested VARCHAR`],
];
export const JOB_MIGRATIONS: readonly Migration[] = MIGRATIONS.map((statements, i) => ({
  version: i + 1,
  statements: () => statements,
}));

/** What a job's end records; `result` is its kind's own (stored as JSON). */
export type FinishResult<Result = unknown> = {
  error?: string;
  runId?: string;
  modelVersion?: string;
  promoted?: boolean;
  result?: Result;
};

/** How often an outcome the full disk refused is tried again. */
const RETRY_UNSAVED_MS = 15_000;

/** Jobs of every kind, persisted so that an accepted job survives a crash or restart. */
export class JobStore {
  /**
   * Outcomes the database refused (disk full): readers see them at once, and they are written
   * when the database takes writes again, so that a job never reads "running" after it ended.
   */
  private readonly unsaved = new Map<
    string,
    { state: "succeeded" | "failed" | "cancelled"; result: FinishResult; at: Date }
  >();
  private retry: NodeJS.Timeout | undefined;

  private constructor(private readonly db: SqlDatabase) {}

  /**
   * Creates or migrates the jobs table to this build's schema version. Throws when the database was
   * written by a newer one.
   */
  static async open(db: SqlDatabase): Promise<JobStore> {
    await migrate(db, "jobs", JOB_MIGRATIONS, {
      legacyVersion: async (tx) => {
        if (!(await tableExists(tx, "job_schema_version"))) return 0;
        const [row] = await tx.all<{ version: number | null }>(
          "SELECT CAST(MAX(version) AS INTEGER) AS version FROM job_schema_version",
        );
        return row?.version ?? 0;
      },
      tooNew: (found, known) =>
        new Error(
          `the job store in ${db.path} has schema version ${found}; this build knows version ${known} at most`,
        ),
    });
    return new JobStore(db);
  }

  /** A new queued training job (StartTraining and the monitor's retraining), as `add` does. */
  create(
    request: TrainingRequest,
    requestedBy: string,
    idempotencyKey?: string,
  ): Promise<{ job: JobRecord; created: boolean }> {
    return this.add("train", request, requestedBy, idempotencyKey);
  }

  /**
   * A new queued job of `kind` (its handler validated the request), or the existing one when the
   * idempotency key was seen before.
   */
  async add<Request extends { reason: string }>(
    kind: string,
    request: Request,
    requestedBy: string,
    idempotencyKey?: string,
  ): Promise<{ job: JobRecord; created: boolean }> {
    const full = await this.db.unwritable();
    if (full) throw full;
    return this.db.transaction(async (tx) => {
      const scoped = idempotencyKey ? scopedKey(kind, requestedBy, idempotencyKey) : null;
      if (idempotencyKey) {
        // Rows from before keys were scoped hold the caller's key as it was: they count only for
        // the same kind and caller.
        const rows = await tx.all(`SELECT ${COLUMNS} FROM jobs WHERE idempotency_key IN ($1, $2)`, [
          scoped,
          idempotencyKey,
        ]);
        const existing = rows
          .map(fromRow)
          .find((job) => job.kind === kind && job.requestedBy === requestedBy);
        if (existing) {
          if (canonical(existing.request) !== canonical(request)) {
            throw new BikeshareError(
              "failed_precondition",
              `idempotency_key ${JSON.stringify(idempotencyKey)} was already used for job ${existing.id} with a different request; use a new key for a new request`,
            );
          }
          return { job: existing, created: false };
        }
      }
      const id = randomUUID();
      await tx.run(
        `INSERT INTO jobs (id, state, stage, progress, reason, request, created_at, promoted, requested_by,
           idempotency_key, attempts, kind)
         VALUES ($1, 'queued', 'queued', 0, $2, $3, now()::TIMESTAMP, false, $4, $5, 0, $6)`,
        [id, request.reason, JSON.stringify(request), requestedBy, scoped, kind],
      );
      const [row] = await tx.all(`SELECT ${COLUMNS} FROM jobs WHERE id = $1`, [id]);
      return { job: fromRow(row as Row), created: true };
    });
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const [row] = await this.db.all(`SELECT ${COLUMNS} FROM jobs WHERE id = $1`, [id]);
    return row ? this.overlay(fromRow(row)) : undefined;
  }

  private overlay(job: JobRecord): JobRecord {
    const pending = this.unsaved.get(job.id);
    if (!pending) return job;
    const { state, result, at } = pending;
    const ended: StoredJob = {
      ...job,
      state,
      stage: state,
      finishedAt: at,
      promoted: result.promoted ?? false,
      ...(result.error !== undefined ? { error: result.error } : {}),
      ...(result.runId !== undefined ? { runId: result.runId } : {}),
      ...(result.modelVersion !== undefined ? { modelVersion: result.modelVersion } : {}),
      ...(result.result !== undefined ? { result: result.result } : {}),
    };
    // The outcome is the one the job's own handler returned, so it fits the job's kind.
    return ended as JobRecord;
  }

  private async writeUnsaved(): Promise<void> {
    for (const [id, { state, result }] of [...this.unsaved]) {
      await this.finish(id, state, result);
    }
  }

  async list(options: { state?: JobState; limit: number; offset: number }): Promise<JobRecord[]> {
    const where = options.state ? "WHERE state = $3" : "";
    const params: unknown[] = [options.limit, options.offset];
    if (options.state) params.push(options.state);
    const rows = await this.db.all(
      `SELECT ${COLUMNS} FROM jobs ${where} ORDER BY created_at DESC, id LIMIT $1 OFFSET $2`,
      params,
    );
    return rows.map((r) => this.overlay(fromRow(r)));
  }

  /**
   * Starts (or resumes) a job; false when it ended meanwhile or its cancel was asked for (`requestCancel`):
   * a cancel that reached the job while it was being dequeued must not be overwritten by "running".
   */
  async markRunning(id: string): Promise<boolean> {
    const rows = await this.db.all(
      `UPDATE jobs SET state = 'running', stage = 'starting', started_at = now()::TIMESTAMP, attempts = attempts + 1
         WHERE id = $1 AND state IN ('queued', 'running') AND cancel_requested IS NULL RETURNING id`,
      [id],
    );
    return rows.length === 1;
  }

  /**
   * Asks whoever runs the job to cancel it, on a database several processes share: the process that runs
   * it polls its jobs' rows (`cancelRequested`). The first request's reason is kept. Returns the job's
   * state, undefined when it had ended.
   */
  async requestCancel(id: string, reason: string): Promise<JobState | undefined> {
    const [row] = await this.db.all<{ state: JobState }>(
      `UPDATE jobs SET cancel_requested = coalesce(cancel_requested, $2) WHERE id = $1 AND state IN ('queued', 'running') RETURNING state`,
      [id, reason],
    );
    return row?.state;
  }

  /** Which of `ids` (running jobs) were asked to cancel by `requestCancel`. */
  async cancelRequested(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const list = ids.map((_, i) => `$${i + 1}`).join(", ");
    const rows = await this.db.all<{ id: string }>(
      `SELECT id FROM jobs WHERE id IN (${list}) AND state = 'running' AND cancel_requested IS NOT NULL`,
      [...ids],
    );
    return rows.map((r) => String(r.id));
  }

  /**
   * Records as cancelled a job asked to cancel that no process runs (still queued, or left by a process
   * that stopped); false when it had ended already, so that its outcome is recorded and told once.
   */
  async endCancelled(id: string, reason: string): Promise<boolean> {
    const rows = await this.db.all(
      `UPDATE jobs SET state = 'cancelled', stage = 'cancelled', finished_at = now()::TIMESTAMP, error = coalesce(cancel_requested, $2)
         WHERE id = $1 AND state IN ('queued', 'running') RETURNING id`,
      [id, reason],
    );
    return rows.length === 1;
  }

  async progress(id: string, stage: string, progress: number): Promise<void> {
    await this.db.run(`UPDATE jobs SET stage = $2, progress = $3 WHERE id = $1`, [id, stage, progress]);
  }

  /**
   * Records a job's end. When the disk is full the outcome is kept in memory (readers see it) and
   * written later; the call still resolves, as the outcome itself is known.
   */
  async finish(
    id: string,
    state: "succeeded" | "failed" | "cancelled",
    result: FinishResult = {},
  ): Promise<void> {
    try {
      await this.writeFinish(id, state, result);
    } catch (error) {
      if (!(error instanceof StoreUnwritableError)) throw error;
      if (!this.unsaved.has(id)) this.unsaved.set(id, { state, result, at: new Date() });
      this.retry ??= setInterval(() => {
        this.writeUnsaved().then(
          () => {
            if (this.unsaved.size === 0) {
              clearInterval(this.retry);
              this.retry = undefined;
            }
          },
          // A full disk is not an error here (finish keeps waiting for space); anything else is.
          (error: unknown) => process.emitWarning(`could not write a job's outcome: ${String(error)}`),
        );
      }, RETRY_UNSAVED_MS).unref();
      return;
    }
    this.unsaved.delete(id);
  }

  private async writeFinish(id: string, state: "succeeded" | "failed" | "cancelled", result: FinishResult) {
    await this.db.run(
      `UPDATE jobs SET state = $2, stage = $2, progress = CASE WHEN CAST($2 AS VARCHAR) = 'succeeded' THEN 1 ELSE progress END,
         finished_at = now()::TIMESTAMP, error = $3, run_id = coalesce($4, run_id), model_version = $5, promoted = $6,
         result = $7
       WHERE id = $1`,
      [
        id,
        state,
        result.error ?? null,
        result.runId ?? null,
        result.modelVersion ?? null,
        result.promoted ?? false,
        result.result !== undefined ? JSON.stringify(result.result) : null,
      ],
    );
  }

  async requeue(id: string): Promise<void> {
    await this.db.run(`UPDATE jobs SET state = 'queued', stage = 'queued' WHERE id = $1`, [id]);
  }

  /** Jobs a previous process accepted but did not finish; they are queued again, in order. */
  async unfinished(): Promise<JobRecord[]> {
    const rows = await this.db.all(
      `SELECT ${COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, id`,
    );
    return rows.map(fromRow).filter((job) => !this.unsaved.has(job.id));
  }
}
