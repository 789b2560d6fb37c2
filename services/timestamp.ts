import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import type { FieldViolation } from "../core/features/index.js";

// google.protobuf.Timestamp's own range (0001-01-01 to 9999-12-31): beyond it a Date cannot represent the
// instant, and binary protobuf can carry any int64.
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/**
 * What is wrong with a Timestamp a client sent, or undefined when it is valid. Every handler checks one
 * before making a Date of it: an invalid Date throws wherever it is used, and the client's bad field
 * would reach it as `internal`.
 */
export function timestampProblem(seconds: bigint, nanos: number): string | undefined {
  if (seconds < MIN_SECONDS || seconds > MAX_SECONDS) {
    return `must be a timestamp from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, got seconds = ${seconds}`;
  }
  if (!Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999) {
    return `must have nanos in 0..999999999, got ${nanos}`;
  }
  return undefined;
}

/** The instant of `t` in epoch ms, or undefined when unset or, with a violation on `field`, out of range. */
export function timestampField(
  t: Timestamp | undefined,
  field: string,
  violations: FieldViolation[],
): number | undefined {
  if (!t) return undefined;
  const problem = timestampProblem(t.seconds, t.nanos);
  if (problem) violations.push({ field, type: "range", description: problem });
  return problem ? undefined : timestampMs(t);
}
