import {
  estimatePerformance,
  type PerformanceEstimate,
  type PerformanceEstimator,
} from "../../core/drift/index.js";
import { FEATURE_NAMES } from "../../core/features/index.js";
import { fitEstimatorForVersion } from "../../pipelines/monitoring/performance-estimator.js";
import type { Logger } from "../observability/log.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../registry/model-card.js";
import type { ModelVersion, Registry } from "../registry/registry.js";
import type { Window } from "./actuals.js";
import type { DriftReports } from "./drift-reports.js";

/**
 * A version's estimator, when its training stored one. A finished run takes no new artifacts, so
 * the monitor fits the estimator of an older version itself and keeps it in memory (a second or two).
 */
export const ARTIFACT_PERFORMANCE_ESTIMATOR = "performance-estimator.json";

/**
 * Estimated live RMSE of each version over a window's logged predictions, labelled or not (direct
 * loss estimation, core/drift/performance-estimate.ts). A version's estimator is read from its
 * artifacts or, the first time, fitted on its card's test window.
 */
export class PerformanceEstimates {
  private readonly estimators = new Map<string, Promise<PerformanceEstimator | undefined>>();

  constructor(
    private readonly registry: Registry,
    private readonly reports: DriftReports,
    private readonly modelName: string,
    private readonly log: Logger,
  ) {}

  /** The version's estimator, or undefined when it cannot be had (no card test window, data gone). */
  estimator(version: ModelVersion): Promise<PerformanceEstimator | undefined> {
    const key = `${version.modelName}/${version.version}`;
    let found = this.estimators.get(key);
    if (!found) {
      found = this.load(version);
      this.estimators.set(key, found);
    }
    return found;
  }

  private async load(version: ModelVersion): Promise<PerformanceEstimator | undefined> {
    try {
      const stored = await this.registry.readArtifact(version.runId, ARTIFACT_PERFORMANCE_ESTIMATOR);
      return JSON.parse(stored.toString("utf8")) as PerformanceEstimator;
    } catch {
      // Not fitted yet: fit below.
    }
    try {
      const card = JSON.parse(
        (await this.registry.readArtifact(version.runId, ARTIFACT_CARD)).toString("utf8"),
      ) as ModelCard;
      const estimator = await fitEstimatorForVersion({
        data: card.dataSource,
        testWindow: card.windows.test as string,
        onnx: await this.registry.readArtifact(version.runId, ARTIFACT_ONNX),
      });
      return estimator;
    } catch (error) {
      this.log.warn("no performance estimator for this version", {
        model_version: version.version,
        error,
      });
      return undefined;
    }
  }

  /** Estimated performance per version that served rows in the window (versions without an estimator left out). */
  async forWindow(window: Window): Promise<Map<string, PerformanceEstimate>> {
    const logged = await this.reports.windowRows(window);
    const byVersion = new Map<string, number[]>();
    logged.versions.forEach((v, i) => {
      const list = byVersion.get(v) ?? [];
      list.push(i);
      byVersion.set(v, list);
    });
    const out = new Map<string, PerformanceEstimate>();
    const cols = FEATURE_NAMES.length;
    for (const [v, rows] of byVersion) {
      const version = await this.registry.getModelVersion(this.modelName, v);
      if (!version) continue;
      const estimator = await this.estimator(version);
      if (!estimator) continue;
      const features = new Float32Array(rows.length * cols);
      rows.forEach((r, k) => {
        features.set(logged.matrix.subarray(r * cols, (r + 1) * cols), k * cols);
      });
      out.set(
        v,
        estimatePerformance(estimator, {
          names: FEATURE_NAMES,
          features,
          predictions: Float64Array.from(rows, (r) => logged.predictions[r] as number),
        }),
      );
    }
    return out;
  }
}
