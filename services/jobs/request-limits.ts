import type { FieldViolation } from "../../core/features/index.js";

/**
 * Bounds on the free text of job requests. Every job keeps its request and reason in the store and
 * every ListJobs answers them, so an unbounded field (a 6 MB reason) would grow the server's memory
 * and every later listing: refused at the request instead.
 */
export const MAX_REASON_CHARS = 1000;
export const MAX_IDEMPOTENCY_KEY_CHARS = 128;
export const MAX_PARAM_OVERRIDES = 64;
export const MAX_PARAM_NAME_CHARS = 64;
export const MAX_PARAM_VALUE_CHARS = 256;
export const MAX_EXPERIMENT_CHARS = 256;
export const MAX_LIST_ITEMS = 16;

// C0, DEL and C1 controls: a NUL reaches realpath as ERR_INVALID_ARG_VALUE, the others garble logs.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** A free-text field: at most `max` characters, and no control characters unless `lines` allows line breaks. */
export function checkText(
  violations: FieldViolation[],
  field: string,
  value: string,
  max: number,
  options: { lines?: boolean } = {},
): void {
  if (value.length > max) {
    violations.push({
      field,
      type: "range",
      description: `must be at most ${max} characters, got ${value.length}`,
    });
    return;
  }
  const text = options.lines ? value.replace(/\r?\n|\t/g, " ") : value;
  if (CONTROL.test(text))
    violations.push({
      field,
      type: "range",
      description: "must not contain control characters (NUL included)",
    });
}

/** An idempotency key: printable ASCII, at most MAX_IDEMPOTENCY_KEY_CHARS. */
export function checkIdempotencyKey(violations: FieldViolation[], key: string): void {
  if (key.length > MAX_IDEMPOTENCY_KEY_CHARS) {
    violations.push({
      field: "idempotency_key",
      type: "range",
      description: `must be at most ${MAX_IDEMPOTENCY_KEY_CHARS} characters, got ${key.length}`,
    });
  } else if (!/^[\x20-\x7e]*$/.test(key)) {
    violations.push({
      field: "idempotency_key",
      type: "range",
      description: "must be printable ASCII characters",
    });
  }
}

/** A repeated field of at most `max` entries. */
export function checkCount(violations: FieldViolation[], field: string, count: number, max: number): void {
  if (count > max)
    violations.push({ field, type: "range", description: `must have at most ${max} entries, got ${count}` });
}
