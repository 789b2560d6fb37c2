import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { BikeshareError } from "../../core/errors.js";
import type { Explanation } from "../../core/explain/index.js";
import { type RawRecord, recordsToColumns, ViolationList } from "../../core/features/index.js";
import { type HourConditions, ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { ModelInfoSchema, type PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { invalidArgument, invalidRequest } from "../errors.js";
import { modelFamilyOf } from "../model-family.js";
import type { ModelCard } from "../registry/model-card.js";
import { recordFromConditions } from "./conversions.js";
import { EXPLAIN_MAX_ROWS, type ServingModel } from "./serving-model.js";

/** Holds the model being served; swapped as a whole, so a request sees one version from start to end. */
export interface ModelSlot {
  readonly current: ServingModel | undefined;
}

/** The model being served; `unavailable` (HTTP 503) until the first one is loaded. */
export function requireModel(slot: ModelSlot): ServingModel {
  const model = slot.current;
  if (!model) throw new BikeshareError("unavailable", "no model is loaded yet; the server is still starting");
  return model;
}

/** What was served: the hook the server uses to count predictions and log them for monitoring. */
export interface Served {
  requestId: string;
  model: ServingModel;
  records: readonly RawRecord[];
  /** Start of each row's hour (epoch ms) when the caller sent it. */
  hourStarts: readonly (number | undefined)[];
  predictions: Float32Array;
  /** The interval served with each prediction, when the caller asked for one. */
  interval?: ServedInterval;
}

export interface ServedInterval {
  level: number;
  lower: ArrayLike<number>;
  upper: ArrayLike<number>;
}

/** An `interval_level` is checked before any work: in (0, 1), named in the error. */
export function checkIntervalLevel(level: number | undefined, field = "interval_level"): void {
  if (level === undefined) return;
  if (!(Number.isFinite(level) && level > 0 && level < 1)) {
    throw invalidArgument([
      {
        field,
        type: "range",
        description: `must be strictly between 0 and 1 (e.g. 0.9 for a 90% interval), not ${level}`,
      },
    ]);
  }
}

/** Predicts `records` and, when `level` is set, their calibrated interval (see ServingModel.interval). */
export async function predictWithInterval(
  model: ServingModel,
  records: readonly RawRecord[],
  level: number | undefined,
): Promise<{ predictions: Float32Array; interval?: ServedInterval }> {
  const columns = recordsToColumns(records);
  const predictions = await model.predict(columns);
  if (level === undefined) return { predictions };
  const { lower, upper } = model.interval(columns, predictions, level);
  return { predictions, interval: { level, lower, upper } };
}

/** Explanations are dearer than predictions (milliseconds a row): a request asks for a bounded number. */
export function checkExplainRows(rows: number, field: string): void {
  if (rows > EXPLAIN_MAX_ROWS) {
    throw invalidArgument([
      {
        field,
        type: "range",
        description: `has ${rows} rows; explanations are computed for at most ${EXPLAIN_MAX_ROWS} rows a request`,
      },
    ]);
  }
}

/** Explanations of `records` by `model`, named as an RPC client sent them (the date is `hour`). */
export function explainRecords(
  model: ServingModel,
  records: readonly RawRecord[],
  dateField = "hour",
): Promise<Explanation[]> {
  return model.explain(recordsToColumns(records), dateField);
}

function explanationMessage(e: Explanation) {
  return {
    contributions: e.contributions.map(({ feature, value }) => ({ feature, value })),
    bias: e.bias,
    derived: e.derived.map(({ feature, value, from }) => ({ feature, value, from })),
    space: e.space,
  };
}

/** ModelInfo's SHAP importance fields (largest first), empty for a card that has none. */
function shapImportanceFields(card: ModelCard) {
  const shap = card.shapImportance;
  if (shap === undefined) return {};
  const list = (values: Record<string, number>) =>
    Object.entries(values)
      .sort((a, b) => b[1] - a[1])
      .map(([feature, meanAbsShap]) => ({ feature, meanAbsShap, space: shap.space }));
  return {
    shapImportance: list(shap.fields),
    shapFeatureImportance: list(shap.features),
    shapImportanceWindow: shap.window,
  };
}

/** Resolves once what was served is logged durably: the reply is sent only then. */
export type OnServed = (served: Served) => Promise<void>;

/**
 * StartScoring stores and queues a job: the server passes in the jobs module's handler, so serving
 * code does not depend on the job store.
 */
export type StartScoring = ServiceImpl<typeof PredictService>["startScoring"];

export function createPredictService(
  slot: ModelSlot,
  onServed: OnServed,
  limits: { maxBatchSize: number },
  startScoring: StartScoring,
): ServiceImpl<typeof PredictService> {
  /** `firstRow` numbers rows from the start of a stream, so an error names the row the client sent. */
  const validateRows = (rows: readonly HourConditions[], firstRow = 0) => {
    if (rows.length > limits.maxBatchSize) {
      throw invalidArgument([
        {
          field: "rows",
          type: "range",
          description: `has ${rows.length} rows; the limit is ${limits.maxBatchSize}`,
        },
      ]);
    }
    const records: RawRecord[] = [];
    const hourStarts: (number | undefined)[] = [];
    const violations = new ViolationList();
    rows.forEach((row, i) => {
      const result = recordFromConditions(row, violations.full ? "" : `rows[${firstRow + i}]`);
      if (result.ok) {
        records.push(result.record);
        hourStarts.push(result.hourStart);
      } else violations.addRow(result.violations);
    });
    if (violations.total > 0) throw invalidRequest(violations, "rows");
    return { records, hourStarts };
  };

  const serve = async (
    records: RawRecord[],
    hourStarts: (number | undefined)[],
    level?: number,
    explain = false,
  ) => {
    const model = requireModel(slot);
    const { predictions, interval } = await predictWithInterval(model, records, level);
    // The same version explains what it predicted: `model` is held, not re-read from the slot.
    const explanations = explain ? await explainRecords(model, records) : undefined;
    const requestId = randomUUID();
    await onServed({ requestId, model, records, hourStarts, predictions, ...(interval ? { interval } : {}) });
    return { requestId, model, predictions, interval, explanations };
  };

  /** The response fields of an interval: none at all when none was asked for. */
  const intervalFields = (interval: ServedInterval | undefined) =>
    interval
      ? {
          lower: Array.from(interval.lower),
          upper: Array.from(interval.upper),
          intervalLevel: interval.level,
        }
      : {};

  return {
    startScoring,

    async predict(request) {
      checkIntervalLevel(request.intervalLevel);
      const result = recordFromConditions(request.conditions, "conditions");
      if (!result.ok) throw invalidArgument(result.violations);
      const { requestId, model, predictions, interval, explanations } = await serve(
        [result.record],
        [result.hourStart],
        request.intervalLevel,
        request.explain,
      );
      return {
        prediction: predictions[0] as number,
        modelVersion: model.version,
        requestId,
        timestamp: timestampNow(),
        ...(interval
          ? { lower: interval.lower[0], upper: interval.upper[0], intervalLevel: interval.level }
          : {}),
        ...(explanations ? { explanation: explanationMessage(explanations[0] as Explanation) } : {}),
      };
    },

    async predictBatch(request) {
      checkIntervalLevel(request.intervalLevel);
      if (request.explain) checkExplainRows(request.rows.length, "rows");
      const { records, hourStarts } = validateRows(request.rows);
      const { requestId, model, predictions, interval, explanations } = await serve(
        records,
        hourStarts,
        request.intervalLevel,
        request.explain,
      );
      return {
        predictions: Array.from(predictions),
        modelVersion: model.version,
        requestId,
        timestamp: timestampNow(),
        ...intervalFields(interval),
        ...(explanations ? { explanations: explanations.map(explanationMessage) } : {}),
      };
    },

    async *predictStream(requests) {
      let offset = 0n;
      for await (const chunk of requests) {
        // Row indexes in errors count from the start of the stream (as `offset` does), not the message.
        checkIntervalLevel(chunk.intervalLevel);
        const { records, hourStarts } = validateRows(chunk.rows, Number(offset));
        const { model, predictions, interval } = await serve(records, hourStarts, chunk.intervalLevel);
        yield {
          offset,
          predictions: Array.from(predictions),
          modelVersion: model.version,
          ...intervalFields(interval),
        };
        offset += BigInt(records.length);
      }
    },

    async getModelInfo() {
      const model = requireModel(slot);
      const card = model.card;
      return {
        model: create(ModelInfoSchema, {
          name: model.name,
          version: model.version,
          aliases: ["production"],
          family: modelFamilyOf(card.family) ?? ModelFamily.UNSPECIFIED,
          objective: card.objective,
          featureNames: card.featureNames,
          featureImportance: Object.entries(card.featureImportance)
            .sort((a, b) => b[1] - a[1])
            .map(([feature, importance]) => ({ feature, importance })),
          metrics: card.metrics,
          dataFingerprint: card.dataFingerprint,
          runtime: "onnxruntime-node",
          intervalsCalibrated: card.calibration !== undefined,
          ...shapImportanceFields(card),
        }),
      };
    },
  };
}
