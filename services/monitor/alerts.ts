import { randomUUID } from "node:crypto";
import { ALERT_RULES } from "../observability/metrics.js";
import type { SqlDatabase } from "../storage/database.js";
import { migrate } from "../storage/migrations.js";

/**
 * Alert records in DuckDB, with a cooldown per (rule, model version): a rule that keeps failing for
 * the same model raises one alert per cooldown, not one per check. The check and the insert run in
 * one transaction on the serialized connection, so concurrent raises cannot both pass the check.
 */

export type AlertRule = (typeof ALERT_RULES)[number];

export interface AlertRecord {
  id: string;
  rule: AlertRule;
  message: string;
  /** The measured value that broke the rule (PSI share, RMSE, …). */
  value: number;
  threshold: number;
  time: Date;
  modelVersion: string;
  /** The retraining job started for this alert, once attached. */
  jobId?: string;
  /** Whether the e-mail for it went out. */
  notified: boolean;
}

export interface AlertPolicy {
  /** An alert for a rule and model version suppresses the same one for this long. */
  cooldownMs: number;
}

export const DEFAULT_ALERT_POLICY: AlertPolicy = { cooldownMs: 6 * 3_600_000 };

export interface RaiseInput {
  rule: AlertRule;
  message: string;
  value: number;
  threshold: number;
  modelVersion: string;
  /** The alert's time; defaults to the clock. A replay passes simulated time. */
  now?: Date;
}

export interface AlertQuery {
  /** Inclusive. */
  from?: Date;
  /** Exclusive. */
  until?: Date;
  limit: number;
  offset: number;
}

export const MAX_ALERT_PAGE = 10_000;

interface AlertRow {
  id: string;
  rule: string;
  message: string;
  value: number;
  threshold: number;
  time: Date;
  model_version: string;
  job_id: string | null;
  notified: boolean;
}

const SELECT_COLUMNS = "id, rule, message, value, threshold, time, model_version, job_id, notified";

export class AlertStore {
  private constructor(
    private readonly db: SqlDatabase,
    readonly policy: AlertPolicy,
  ) {}

  static async open(db: SqlDatabase, policy: Partial<AlertPolicy> = {}): Promise<AlertStore> {
    const resolved: AlertPolicy = { ...DEFAULT_ALERT_POLICY, ...definedOnly(policy) };
    if (!Number.isFinite(resolved.cooldownMs) || resolved.cooldownMs < 0) {
      throw new RangeError(
        `alert cooldownMs must be a finite number of milliseconds >= 0, got ${resolved.cooldownMs}`,
      );
    }
    await migrate(db, "alerts", [
      {
        version: 1,
        statements: () => [
          "CREATE SEQUENCE IF NOT EXISTS alerts_seq",
          `CREATE TABLE IF NOT EXISTS alerts (
        id VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL DEFAULT nextval('alerts_seq'),
        rule VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        time TIMESTAMP NOT NULL,
        model_version VARCHAR NOT NULL,
        job_id VARCHAR,
        notified BOOLEAN NOT NULL DEFAULT false
      )`,
        ],
      },
    ]);
    return new AlertStore(db, resolved);
  }

  /**
   * Records a violation unless the same rule for the same model version alerted within the cooldown
   * of `now` (before or after it: a replay in simulated time next to live alerts is judged the same
   * way); returns the new record, or undefined when suppressed. An alert exactly `cooldownMs` after
   * the previous one is raised.
   */
  async raise(input: RaiseInput): Promise<AlertRecord | undefined> {
    const now = input.now ?? new Date();
    validateRaise(input, now);
    const time = new Date(now.getTime());
    const cooldown = this.policy.cooldownMs;
    return this.db.transaction(async (tx) => {
      if (cooldown > 0) {
        const recent = await tx.all<{ n: number }>(
          `SELECT count(*)::INTEGER AS n FROM alerts
           WHERE rule = $1 AND model_version = $2 AND time > $3 AND time < $4`,
          [
            input.rule,
            input.modelVersion,
            new Date(time.getTime() - cooldown),
            new Date(time.getTime() + cooldown),
          ],
        );
        if ((recent[0]?.n ?? 0) > 0) return undefined;
      }
      const record: AlertRecord = {
        id: randomUUID(),
        rule: input.rule,
        message: input.message,
        value: input.value,
        threshold: input.threshold,
        time,
        modelVersion: input.modelVersion,
        notified: false,
      };
      await tx.run(
        `INSERT INTO alerts (id, rule, message, value, threshold, time, model_version, notified)
         VALUES ($1, $2, $3, $4, $5, $6, $7, false)`,
        [
          record.id,
          record.rule,
          record.message,
          record.value,
          record.threshold,
          record.time,
          record.modelVersion,
        ],
      );
      return record;
    });
  }

  /** Links the retraining job started for an alert. Throws when there is no such alert. */
  async attachJob(alertId: string, jobId: string): Promise<void> {
    if (typeof jobId !== "string" || jobId.length === 0)
      throw new TypeError("jobId must be a non-empty string");
    await this.update(alertId, "UPDATE alerts SET job_id = $2 WHERE id = $1 RETURNING id", [alertId, jobId]);
  }

  /** Records that the alert's e-mail went out (idempotent). Throws when there is no such alert. */
  async markNotified(alertId: string): Promise<void> {
    await this.update(alertId, "UPDATE alerts SET notified = true WHERE id = $1 RETURNING id", [alertId]);
  }

  /** Alerts in [from, until), newest first (insertion order among equal times), one page. */
  async list(q: AlertQuery): Promise<AlertRecord[]> {
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > MAX_ALERT_PAGE) {
      throw new RangeError(`limit must be an integer from 1 to ${MAX_ALERT_PAGE}, got ${q.limit}`);
    }
    if (!Number.isInteger(q.offset) || q.offset < 0) {
      throw new RangeError(`offset must be an integer >= 0, got ${q.offset}`);
    }
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.from !== undefined) {
      params.push(validDate(q.from, "from"));
      where.push(`time >= $${params.length}`);
    }
    if (q.until !== undefined) {
      params.push(validDate(q.until, "until"));
      where.push(`time < $${params.length}`);
    }
    params.push(q.limit, q.offset);
    const rows = await this.db.all<AlertRow>(
      `SELECT ${SELECT_COLUMNS} FROM alerts
       ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY time DESC, seq DESC
       LIMIT $${params.length - 1} OFFSET $${params.length}`,
      params,
    );
    return rows.map(toRecord);
  }

  private async update(alertId: string, sql: string, params: unknown[]): Promise<void> {
    if (typeof alertId !== "string" || alertId.length === 0) {
      throw new TypeError("alertId must be a non-empty string");
    }
    const rows = await this.db.all(sql, params);
    if (rows.length === 0) throw new Error(`no alert with id ${JSON.stringify(alertId)}`);
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function validDate(value: Date, name: string): Date {
  if (!(value instanceof Date) || !Number.isFinite(value.getTime())) {
    throw new TypeError(`${name} must be a valid Date`);
  }
  return value;
}

function validateRaise(input: RaiseInput, now: Date): void {
  if (!ALERT_RULES.includes(input.rule)) {
    throw new TypeError(`rule must be one of ${ALERT_RULES.join(", ")}, got ${JSON.stringify(input.rule)}`);
  }
  if (typeof input.message !== "string" || input.message.length === 0) {
    throw new TypeError("message must be a non-empty string");
  }
  if (typeof input.modelVersion !== "string" || input.modelVersion.length === 0) {
    throw new TypeError("modelVersion must be a non-empty string");
  }
  if (!Number.isFinite(input.value)) throw new TypeError(`value must be a finite number, got ${input.value}`);
  if (!Number.isFinite(input.threshold)) {
    throw new TypeError(`threshold must be a finite number, got ${input.threshold}`);
  }
  validDate(now, "now");
}

function toRecord(row: AlertRow): AlertRecord {
  const record: AlertRecord = {
    id: row.id,
    rule: row.rule as AlertRule,
    message: row.message,
    value: row.value,
    threshold: row.threshold,
    time: row.time,
    modelVersion: row.model_version,
    notified: row.notified,
  };
  if (row.job_id !== null) record.jobId = row.job_id;
  return record;
}
