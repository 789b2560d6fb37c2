import { mae, rmse, within20Percent } from "../../core/metrics/index.js";
import type { SqlDatabase } from "../storage/database.js";
import { migrate } from "../storage/migrations.js";

export interface ActualCount {
  /** Start of the hour, epoch ms. */
  hourStart: number;
  cnt: number;
}

export interface VersionPerformance {
  modelVersion: string;
  labelledHours: number;
  rmse: number;
  mae: number;
  within20: number;
  /** Live coverage of the intervals this version served, one entry per level asked for. */
  intervals: IntervalCoverage[];
}

export interface IntervalCoverage {
  level: number;
  /** Labelled hours predicted with an interval at this level (the latest such prediction per hour). */
  labelledHours: number;
  /** Share of them whose actual count fell inside [lower, upper]. */
  coverage: number;
  meanWidth: number;
}

export interface Window {
  /** Epoch ms, inclusive. */
  from?: number;
  /** Epoch ms, exclusive. */
  until?: number;
}

function windowSql(window: Window, column: string, params: unknown[]): string {
  const clauses: string[] = [];
  if (window.from !== undefined) {
    params.push(window.from);
    clauses.push(`${column} >= epoch_ms($${params.length}::BIGINT)`);
  }
  if (window.until !== undefined) {
    params.push(window.until);
    clauses.push(`${column} < epoch_ms($${params.length}::BIGINT)`);
  }
  return clauses.length > 0 ? `AND ${clauses.join(" AND ")}` : "";
}

/**
 * Observed counts, which arrive after the predictions, and the accuracy they reveal.
 * An hour's latest report wins (corrections happen); predictions join actuals by hour.
 */
export class Actuals {
  private constructor(private readonly db: SqlDatabase) {}

  static async open(db: SqlDatabase): Promise<Actuals> {
    await migrate(db, "actuals", [
      {
        version: 1,
        statements: () => [
          `CREATE TABLE IF NOT EXISTS actuals (
            hour TIMESTAMP PRIMARY KEY,
            cnt INTEGER NOT NULL,
            reported_at TIMESTAMP NOT NULL
          )`,
        ],
      },
    ]);
    return new Actuals(db);
  }

  /** Stores the counts in one transaction; returns how many have no logged prediction yet. */
  async report(actuals: readonly ActualCount[]): Promise<{ accepted: number; unmatched: number }> {
    if (actuals.length === 0) return { accepted: 0, unmatched: 0 };
    const hours = Float64Array.from(actuals, (a) => a.hourStart);
    const counts = Float64Array.from(actuals, (a) => a.cnt);
    return this.db.transaction(async (tx) => {
      await tx.run(
        `INSERT INTO actuals
         SELECT epoch_ms(h), c, now()::TIMESTAMP FROM (
           SELECT h, c, row_number() OVER (PARTITION BY h) AS rn
           FROM (SELECT unnest($1::DOUBLE PRECISION[])::BIGINT AS h,
                        unnest($2::DOUBLE PRECISION[])::INTEGER AS c) pairs) ranked
         WHERE rn = 1
         ON CONFLICT (hour) DO UPDATE SET cnt = excluded.cnt, reported_at = excluded.reported_at`,
        [hours, counts],
      );
      const [row] = await tx.all<{ unmatched: number }>(
        `SELECT count(*)::INTEGER AS unmatched
         FROM (SELECT DISTINCT unnest($1::DOUBLE PRECISION[]) AS h) r
         WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.hour = epoch_ms(r.h::BIGINT))`,
        [hours],
      );
      return { accepted: new Set(actuals.map((a) => a.hourStart)).size, unmatched: row?.unmatched ?? 0 };
    });
  }

  /**
   * Accuracy per model version over labelled hours in the window. When a version predicted
   * the same hour several times, its latest prediction counts, so repeated calls do not weigh more.
   */
  async performance(window: Window = {}): Promise<VersionPerformance[]> {
    const params: unknown[] = [];
    const where = windowSql(window, "p.hour", params);
    const rows = await this.db.all<{ version: string; prediction: number; cnt: number }>(
      `SELECT version, prediction, cnt FROM (
         SELECT p.model_version AS version, p.prediction, a.cnt,
                row_number() OVER (PARTITION BY p.model_version, p.hour ORDER BY p.served_at DESC) AS rn
         FROM predictions p JOIN actuals a ON a.hour = p.hour
         WHERE p.hour IS NOT NULL ${where}) latest
       WHERE rn = 1`,
      params,
    );
    const intervals = await this.intervalCoverage(window);
    const byVersion = new Map<string, { predicted: number[]; actual: number[] }>();
    for (const r of rows) {
      const v = byVersion.get(r.version) ?? { predicted: [], actual: [] };
      v.predicted.push(r.prediction);
      v.actual.push(r.cnt);
      byVersion.set(r.version, v);
    }
    return [...byVersion.entries()]
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([modelVersion, v]) => {
        // R² is left out: it is undefined on a window where every count is the same.
        return {
          modelVersion,
          labelledHours: v.actual.length,
          rmse: rmse(v.actual, v.predicted),
          mae: mae(v.actual, v.predicted),
          within20: within20Percent(v.actual, v.predicted),
          intervals: intervals.get(modelVersion) ?? [],
        };
      });
  }

  /**
   * Coverage of the served intervals per version and level over labelled hours in the window: the
   * latest interval per (version, level, hour), so a client asking again does not weigh more.
   */
  async intervalCoverage(window: Window = {}): Promise<Map<string, IntervalCoverage[]>> {
    const params: unknown[] = [];
    const where = windowSql(window, "p.hour", params);
    const rows = await this.db.all<{
      version: string;
      level: number;
      hours: number;
      covered: number;
      width: number;
    }>(
      `SELECT version, level, count(*)::INTEGER AS hours,
              sum(CASE WHEN cnt >= lower AND cnt <= upper THEN 1 ELSE 0 END)::INTEGER AS covered,
              avg(upper - lower ORDER BY hour)::DOUBLE PRECISION AS width
       FROM (
         SELECT p.model_version AS version, p.interval_level AS level, p.hour, p.lower, p.upper, a.cnt,
                row_number() OVER (
                  PARTITION BY p.model_version, p.interval_level, p.hour ORDER BY p.served_at DESC) AS rn
         FROM predictions p JOIN actuals a ON a.hour = p.hour
         WHERE p.hour IS NOT NULL AND p.interval_level IS NOT NULL ${where}) latest
       WHERE rn = 1
       GROUP BY version, level
       ORDER BY version, level`,
      params,
    );
    const out = new Map<string, IntervalCoverage[]>();
    for (const r of rows) {
      const list = out.get(r.version) ?? [];
      list.push({
        level: Number(r.level),
        labelledHours: Number(r.hours),
        coverage: Number(r.covered) / Number(r.hours),
        meanWidth: Number(r.width),
      });
      out.set(r.version, list);
    }
    return out;
  }
}
