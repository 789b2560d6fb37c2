import {
  type FieldViolation,
  RAW_FIELD_NAMES,
  type RawRecord,
  validateRecord,
} from "../../core/features/index.js";
import type { HourConditions } from "../../gen/bikeshare/v1/common_pb.js";

/** Reads the model inputs of an RPC message; unset fields are reported as missing. */
export function recordFromConditions(
  conditions: HourConditions | undefined,
  path: string,
): { ok: true; record: RawRecord } | { ok: false; violations: FieldViolation[] } {
  if (conditions === undefined) {
    return { ok: false, violations: [{ field: path, type: "missing", description: "is required" }] };
  }
  const plain: Record<string, number> = {};
  for (const name of RAW_FIELD_NAMES) {
    const value = conditions[name];
    if (value !== undefined) plain[name] = value;
  }
  return validateRecord(plain, path);
}
