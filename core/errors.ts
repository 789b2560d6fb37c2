import type { FieldViolation } from "./features/schema.js";

/**
 * The one error type of bikeshare, after connect-es's ConnectError: a code that says whose fault it is
 * and what a caller can do, a message for people, and, for bad input, each offending field. Code below
 * the services throws it without knowing any transport; `services/errors.ts` is the one place that
 * turns a code into a Connect/gRPC code and an HTTP status.
 *
 * The codes are gRPC's (as Connect spells them on the wire, except `cancelled`), only those in use.
 */
export type ErrorCode =
  | "cancelled"
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "unauthenticated"
  | "resource_exhausted"
  | "failed_precondition"
  | "unavailable"
  | "data_loss"
  | "internal";

/** One bad input field, named as in the proto (snake_case paths like `rows[3].hr`). */
export type Violation = Pick<FieldViolation, "field" | "description">;

export interface BikeshareErrorOptions {
  /** For `invalid_argument`: every offending field; they reach a client as google.rpc.BadRequest. */
  violations?: readonly Violation[];
  cause?: unknown;
}

export class BikeshareError extends Error {
  readonly violations: readonly Violation[];

  constructor(
    readonly code: ErrorCode,
    message: string,
    options: BikeshareErrorOptions = {},
  ) {
    super(message, "cause" in options ? { cause: options.cause } : undefined);
    this.name = "BikeshareError";
    this.violations = options.violations ?? [];
  }
}
