import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { BikeshareError } from "../../core/errors.js";
import { type RawRecord, recordsToColumns, ViolationList } from "../../core/features/index.js";
import { type HourConditions, ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { ModelInfoSchema, type PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { invalidArgument, invalidRequest } from "../errors.js";
import { modelFamilyOf } from "../model-family.js";
import { recordFromConditions } from "./conversions.js";
import type { ServingModel } from "./serving-model.js";

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

  const serve = async (records: RawRecord[], hourStarts: (number | undefined)[]) => {
    const model = requireModel(slot);
    const predictions = await model.predict(recordsToColumns(records));
    const requestId = randomUUID();
    await onServed({ requestId, model, records, hourStarts, predictions });
    return { requestId, model, predictions };
  };

  return {
    startScoring,

    async predict(request) {
      const result = recordFromConditions(request.conditions, "conditions");
      if (!result.ok) throw invalidArgument(result.violations);
      const { requestId, model, predictions } = await serve([result.record], [result.hourStart]);
      return {
        prediction: predictions[0] as number,
        modelVersion: model.version,
        requestId,
        timestamp: timestampNow(),
      };
    },

    async predictBatch(request) {
      const { records, hourStarts } = validateRows(request.rows);
      const { requestId, model, predictions } = await serve(records, hourStarts);
      return {
        predictions: Array.from(predictions),
        modelVersion: model.version,
        requestId,
        timestamp: timestampNow(),
      };
    },

    async *predictStream(requests) {
      let offset = 0n;
      for await (const chunk of requests) {
        // Row indexes in errors count from the start of the stream (as `offset` does), not the message.
        const { records, hourStarts } = validateRows(chunk.rows, Number(offset));
        const { model, predictions } = await serve(records, hourStarts);
        yield { offset, predictions: Array.from(predictions), modelVersion: model.version };
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
        }),
      };
    },
  };
}
