/**
 * The registry's one error type. Every other registry file (and search-filter.ts) imports it from
 * here rather than from registry.ts, so no registry file depends on the facade that assembles them.
 */

export type RegistryErrorCode =
  | "not_found"
  | "already_exists"
  | "invalid_argument"
  | "failed_precondition"
  | "permission_denied"
  | "data_loss";

export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
    /** The offending input, named as in the proto (snake_case), when there is one. */
    readonly field?: string,
  ) {
    super(message);
    this.name = "RegistryError";
  }
}
