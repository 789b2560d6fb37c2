import { BikeshareError } from "../../core/errors.js";

/**
 * The registry's error: a BikeshareError that also names the offending input. Every other registry
 * file (and search-filter.ts) imports it from here rather than from registry.ts, so no registry file
 * depends on the facade that assembles them.
 */

export type RegistryErrorCode =
  | "not_found"
  | "already_exists"
  | "invalid_argument"
  | "failed_precondition"
  | "permission_denied"
  | "data_loss";

export class RegistryError extends BikeshareError {
  declare readonly code: RegistryErrorCode;

  constructor(
    code: RegistryErrorCode,
    message: string,
    /** The offending input, named as in the proto (snake_case), when there is one. */
    readonly field?: string,
  ) {
    // Only bad input names its field to the client (google.rpc.BadRequest); a missing run is not a bad field.
    super(
      code,
      message,
      code === "invalid_argument" && field ? { violations: [{ field, description: message }] } : {},
    );
    this.name = "RegistryError";
  }
}
