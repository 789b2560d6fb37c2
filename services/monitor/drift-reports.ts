import { randomUUID } from "node:crypto";
import {
  type DatasetDriftResult,
  type DriftHistogram,
  type DriftThresholds,
  datasetDrift,
  type FeatureDriftResult,
  featureDrift,
  histogram,
  type SeasonalDriftResult,
  seasonalDrift,
} from "../../core/drift/index.js";
import { BikeshareError } from "../../core/errors.js";
import {
  FEATURE_NAMES,
  featureMatrix,
  localDayAndHour,
  NUM_FEATURES,
  RAW_FIELD_NAMES,
  type RawColumns,
  type RawField,
} from "../../core/features/index.js";
import { ARTIFACT_REFERENCE } from "../registry/model-card.js";
import type { ModelVersion, Registry } from "../registry/registry.js";
import type { SqlDatabase } from "../storage/database.js";
import { migrate } from "../storage/migrations.js";
import type { Window } from "./actuals.js";

/** The training sample stored with a model version (pipelines/training: ReferenceSample). */
interface Reference {
  featureNames: string[];
  rows: number;
  columns: Record<string, number[]>;
  predictions: number[];
}

export interface DriftReport {
  id: string;
  createdAt: Date;
  modelVersion: string;
  window: Window;
  referenceRows: number;
  currentRows: number;
  dataset: DatasetDriftResult;
  /**
   * The same window against a seasonal reference, calendar features apart (core/drift/seasonal.ts):
   * what the dataset_drift rule judges. Absent from reports stored before it existed.
   */
  seasonal?: SeasonalDriftResult;
  /** Features left out because one side had no values (e.g. date features when no request carried a timestamp). */
  skipped: string[];
  prediction: FeatureDriftResult;
  histograms: Record<string, DriftHistogram>;
}

export interface WindowRows {
  rows: number;
  /** Row-major [rows × NUM_FEATURES]. */
  matrix: Float32Array;
  predictions: Float64Array;
  versions: string[];
}

/** Too few logged predictions for a drift report: failed_precondition (serve more, or widen the window). */
export class NotEnoughData extends BikeshareError {
  constructor(message: string) {
    super("failed_precondition", message);
    this.name = "NotEnoughData";
  }
}

/** Logged predictions fall in a window by the hour they predict, or by when they were served when the caller sent no hour. */
const WHEN = "coalesce(hour, served_at)";

/**
 * Drift of the inputs and of the predictions, between the production model's training
 * sample (reference) and a window of logged predictions (current). Every report is stored.
 */
export class DriftReports {
  private readonly references = new Map<string, Reference>();

  private constructor(
    private readonly db: SqlDatabase,
    private readonly registry: Registry,
  ) {}

  static async open(db: SqlDatabase, registry: Registry): Promise<DriftReports> {
    await migrate(db, "drift_reports", [
      {
        version: 1,
        statements: () => [
          `CREATE TABLE IF NOT EXISTS drift_reports (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            model_version VARCHAR NOT NULL,
            body VARCHAR NOT NULL
          )`,
        ],
      },
    ]);
    return new DriftReports(db, registry);
  }

  private async reference(version: ModelVersion): Promise<Reference> {
    const key = `${version.modelName}/${version.version}`;
    let reference = this.references.get(key);
    if (!reference) {
      reference = JSON.parse(
        (await this.registry.readArtifact(version.runId, ARTIFACT_REFERENCE)).toString("utf8"),
      ) as Reference;
      this.references.set(key, reference);
    }
    return reference;
  }

  /**
   * Logged predictions of a window through the same feature definition as training and serving:
   * one row-major matrix, the predictions and the version that served each row.
   */
  async windowRows(window: Window): Promise<WindowRows> {
    const params: unknown[] = [];
    const clauses: string[] = [];
    if (window.from !== undefined) {
      params.push(window.from);
      clauses.push(`${WHEN} >= epoch_ms($${params.length}::BIGINT)`);
    }
    if (window.until !== undefined) {
      params.push(window.until);
      clauses.push(`${WHEN} < epoch_ms($${params.length}::BIGINT)`);
    }
    const rows = await this.db.all<Record<string, number | string | null>>(
      `SELECT ${RAW_FIELD_NAMES.map((f) => `"${f}"`).join(", ")}, CAST(epoch_ms(hour) AS DOUBLE PRECISION) AS hour_ms, prediction, model_version
       FROM predictions ${clauses.length > 0 ? `WHERE ${clauses.join(" AND ")}` : ""}`,
      params,
    );
    const columns = { length: rows.length } as { length: number; day: Float64Array } & Record<
      RawField,
      Float64Array
    >;
    for (const f of RAW_FIELD_NAMES) columns[f] = Float64Array.from(rows, (r) => r[f] as number);
    columns.day = Float64Array.from(rows, (r) =>
      r.hour_ms === null ? Number.NaN : localDayAndHour(new Date(r.hour_ms as number)).day,
    );
    return {
      rows: rows.length,
      matrix: featureMatrix(columns as RawColumns),
      predictions: Float64Array.from(rows, (r) => r.prediction as number),
      versions: rows.map((r) => String(r.model_version)),
    };
  }

  async compute(input: {
    version: ModelVersion;
    window: Window;
    minRows: number;
    thresholds?: Partial<DriftThresholds>;
    /** Feature weights of the calendar-aware drifted share (e.g. the model's importance). */
    weights?: Record<string, number>;
  }): Promise<DriftReport> {
    const reference = await this.reference(input.version);
    const logged = await this.windowRows(input.window);
    if (logged.rows < input.minRows) {
      throw new NotEnoughData(
        `the window holds ${logged.rows} logged predictions; a drift report needs at least ${input.minRows}`,
      );
    }
    const { matrix } = logged;
    const current: Record<string, Float64Array> = {};
    FEATURE_NAMES.forEach((name, f) => {
      current[name] = Float64Array.from(
        { length: logged.rows },
        (_, i) => matrix[i * NUM_FEATURES + f] as number,
      );
    });

    const referenceColumns: Record<string, number[]> = {};
    const currentColumns: Record<string, Float64Array> = {};
    const skipped: string[] = [];
    for (const name of reference.featureNames) {
      const ref = reference.columns[name];
      const cur = current[name];
      if (!ref || !cur || !ref.some(Number.isFinite) || !cur.some(Number.isFinite)) skipped.push(name);
      else {
        referenceColumns[name] = ref;
        currentColumns[name] = cur;
      }
    }
    const dataset = datasetDrift(referenceColumns, currentColumns, undefined, input.thresholds);
    const predictions = logged.predictions;
    // Calendar-aware drift (core/drift/seasonal.ts) needs the month on both sides; a window whose
    // requests carried no usable month keeps Evidently's plain report only.
    let seasonal: SeasonalDriftResult | undefined;
    if (referenceColumns.mnth && currentColumns.mnth) {
      seasonal = seasonalDrift(referenceColumns, currentColumns, {
        ...(input.thresholds ? { thresholds: input.thresholds } : {}),
        ...(input.weights ? { weights: input.weights } : {}),
      });
    }
    const prediction = featureDrift(
      "prediction",
      reference.predictions,
      predictions,
      "numeric",
      input.thresholds,
    );
    const histograms: Record<string, DriftHistogram> = {};
    for (const result of dataset.features) {
      histograms[result.feature] = histogram(
        referenceColumns[result.feature] as number[],
        currentColumns[result.feature] as Float64Array,
        "sturges",
        result.kind,
      );
    }
    histograms.prediction = histogram(reference.predictions, predictions, "sturges", "numeric");

    const report: DriftReport = {
      id: randomUUID(),
      createdAt: new Date(),
      modelVersion: input.version.version,
      window: input.window,
      referenceRows: reference.rows,
      currentRows: logged.rows,
      dataset,
      ...(seasonal ? { seasonal } : {}),
      skipped,
      prediction,
      histograms,
    };
    await this.db.run(`INSERT INTO drift_reports VALUES ($1, now()::TIMESTAMP, $2, $3)`, [
      report.id,
      report.modelVersion,
      JSON.stringify(report),
    ]);
    return report;
  }

  async get(id: string): Promise<DriftReport | undefined> {
    const [row] = await this.db.all<{ body: string }>(`SELECT body FROM drift_reports WHERE id = $1`, [id]);
    return row ? revive(row.body) : undefined;
  }

  async list(limit: number, offset: number): Promise<DriftReport[]> {
    const rows = await this.db.all<{ body: string }>(
      `SELECT body FROM drift_reports ORDER BY created_at DESC, id LIMIT $1 OFFSET $2`,
      [limit, offset],
    );
    return rows.map((r) => revive(r.body));
  }
}

function revive(body: string): DriftReport {
  const report = JSON.parse(body) as DriftReport;
  report.createdAt = new Date(report.createdAt);
  return report;
}
