import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type FieldViolation, type RawRecord, recordsToColumns } from "../../core/features/index.js";
import { BadRequestSchema, ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { ModelInfoSchema, type PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import type { Metrics } from "../observability/metrics.js";
import { recordFromConditions } from "./conversions.js";
import type { ServingModel } from "./serving-model.js";

export function invalidArgument(violations: readonly FieldViolation[]): ConnectError {
  const summary = violations.map((v) => `${v.field} ${v.description}`).join("; ");
  return new ConnectError(`invalid argument: ${summary}`, Code.InvalidArgument, undefined, [
    {
      desc: BadRequestSchema,
      value: { fieldViolations: violations.map((v) => ({ field: v.field, description: v.description })) },
    },
  ]);
}

/** Holds the model being served; swapped as a whole, so a request sees one version from start to end. */
export interface ModelSlot {
  readonly current: ServingModel | undefined;
}

function requireModel(slot: ModelSlot): ServingModel {
  const model = slot.current;
  if (!model)
    throw new ConnectError("no model is loaded yet; the server is still starting", Code.Unavailable);
  return model;
}

const FAMILY: Record<string, ModelFamily> = {
  gbtree: ModelFamily.GBTREE,
  random_forest: ModelFamily.RANDOM_FOREST,
  linear: ModelFamily.LINEAR,
};

export function createPredictService(
  slot: ModelSlot,
  metrics: Metrics,
  limits: { maxBatchSize: number },
): Partial<ServiceImpl<typeof PredictService>> {
  const validateRows = (rows: readonly Parameters<typeof recordFromConditions>[0][]): RawRecord[] => {
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
    const violations: FieldViolation[] = [];
    rows.forEach((row, i) => {
      const result = recordFromConditions(row, `rows[${i}]`);
      if (result.ok) records.push(result.record);
      else violations.push(...result.violations);
    });
    if (violations.length > 0) throw invalidArgument(violations);
    return records;
  };

  return {
    async predict(request) {
      const result = recordFromConditions(request.conditions, "conditions");
      if (!result.ok) throw invalidArgument(result.violations);
      const model = requireModel(slot);
      const [prediction] = await model.predict(recordsToColumns([result.record]));
      metrics.predictions.inc({ model_version: model.version });
      return {
        prediction: prediction as number,
        modelVersion: model.version,
        requestId: randomUUID(),
        timestamp: timestampNow(),
      };
    },

    async predictBatch(request) {
      const records = validateRows(request.rows);
      const model = requireModel(slot);
      const predictions = await model.predict(recordsToColumns(records));
      metrics.predictions.inc({ model_version: model.version }, records.length);
      return {
        predictions: Array.from(predictions),
        modelVersion: model.version,
        requestId: randomUUID(),
        timestamp: timestampNow(),
      };
    },

    async *predictStream(requests) {
      let offset = 0n;
      for await (const chunk of requests) {
        const records = validateRows(chunk.rows);
        const model = requireModel(slot);
        const predictions = await model.predict(recordsToColumns(records));
        metrics.predictions.inc({ model_version: model.version }, records.length);
        yield { offset, predictions: Array.from(predictions), modelVersion: model.version };
        offset += BigInt(records.length);
      }
    },

    async getModelInfo() {
      const model = requireModel(slot);
      const m = model.metadata;
      return {
        model: create(ModelInfoSchema, {
          name: m.name,
          version: m.version,
          aliases: ["production"],
          family: FAMILY[m.family] ?? ModelFamily.UNSPECIFIED,
          objective: m.objective,
          featureNames: m.featureNames,
          featureImportance: Object.entries(m.featureImportance)
            .sort((a, b) => b[1] - a[1])
            .map(([feature, importance]) => ({ feature, importance })),
          metrics: m.metrics,
          dataFingerprint: m.dataFingerprint,
          createdAt: timestampFromDate(new Date(m.createdAt)),
          runtime: "onnxruntime-node",
        }),
      };
    },
  };
}
