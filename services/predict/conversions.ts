import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type FieldViolation,
  RAW_FIELD_NAMES,
  type RawRecord,
  TIMESTAMP_FIELD,
  validateRecord,
} from "../../core/features/index.js";
import type { HourConditions } from "../../gen/bikeshare/v1/common_pb.js";
import { timestampProblem } from "../timestamp.js";

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
  const hour = conditions.hour;
  if (hour !== undefined) {
    const problem = timestampProblem(hour.seconds, hour.nanos);
    if (problem) {
      const result = validateRecord(plain, path);
      const violations = result.ok ? [] : result.violations;
      return {
        ok: false,
        violations: [...violations, { field: `${path}.hour`, type: "range", description: problem }],
      };
    }
  }
  const hourStart = hour ? Math.floor(timestampMs(hour) / HOUR_MS) * HOUR_MS : undefined;
  if (hourStart !== undefined) plain[TIMESTAMP_FIELD] = new Date(hourStart).toISOString();
  const result = validateRecord(plain, path);
  if (result.ok) return { ok: true, record: result.record, hourStart };
  // The record's `timestamp` is this message's `hour`: name the field the client sent.
  const stamp = `${path}.${TIMESTAMP_FIELD}`;
  return {
    ok: false,
    violations: result.violations.map((v) => (v.field === stamp ? { ...v, field: `${path}.hour` } : v)),
  };
}
