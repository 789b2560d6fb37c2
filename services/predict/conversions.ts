import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type FieldViolation,
  RAW_FIELD_NAMES,
  type RawRecord,
  validateRecord,
} from "../../core/features/index.js";
import type { HourConditions } from "../../gen/bikeshare/v1/common_pb.js";

const HOUR_MS = 3_600_000;

export type ConditionsResult =
  | { ok: true; record: RawRecord; hourStart: number | undefined }
  | { ok: false; violations: FieldViolation[] };

/** Reads the model inputs of an RPC message; unset fields are reported as missing. */
export function recordFromConditions(conditions: HourConditions | undefined, path: string): ConditionsResult {
  if (conditions === undefined) {
    return { ok: false, violations: [{ field: path, type: "missing", description: "is required" }] };
  }
  const plain: Record<string, unknown> = {};
  for (const name of RAW_FIELD_NAMES) {
    const value = conditions[name];
    if (value !== undefined) plain[name] = value;
  }
  const hourStart = conditions.hour
    ? Math.floor(timestampMs(conditions.hour) / HOUR_MS) * HOUR_MS
    : undefined;
  if (hourStart !== undefined) plain.timestamp = new Date(hourStart).toISOString();
  const result = validateRecord(plain, path);
  return result.ok ? { ok: true, record: result.record, hourStart } : result;
}
