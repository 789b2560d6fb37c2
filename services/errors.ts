import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import { BikeshareError, type ErrorCode } from "../core/errors.js";
import { type FieldViolation, ViolationList } from "../core/features/index.js";
import { BadRequestSchema } from "../gen/bikeshare/v1/common_pb.js";
import type { Logger } from "./observability/log.js";

/**
 * The one place where a domain error (core/errors.ts) becomes what a client sees: a Connect/gRPC code
 * through `errorInterceptor`, an HTTP status for the REST routes through `httpStatus`. Handlers throw
 * BikeshareError and never build a ConnectError; whatever else escapes a handler is a server fault and
 * reaches the client as `internal` with a generic message (its own may name paths or SQL).
 */

const CONNECT_CODE: Record<ErrorCode, Code> = {
  cancelled: Code.Canceled,
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
  unauthenticated: Code.Unauthenticated,
  resource_exhausted: Code.ResourceExhausted,
  failed_precondition: Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  data_loss: Code.DataLoss,
  internal: Code.Internal,
};

export const ERROR_CODES = Object.keys(CONNECT_CODE) as ErrorCode[];

export function connectCode(code: ErrorCode): Code {
  return CONNECT_CODE[code];
}

/** The HTTP status of a code: Connect's own table, so REST and Connect over HTTP/1.1 agree. */
export function httpStatus(code: ErrorCode): number {
  return codeToHttpStatus(CONNECT_CODE[code]);
}

export const INTERNAL_MESSAGE = "internal error; the server logged the details";

/**
 * What a client is told of any error: a BikeshareError by its code, with its violations as
 * google.rpc.BadRequest details; a ConnectError as it is; an abort as `canceled` (the client went away
 * or its deadline passed); anything else as `internal`, reported through `onUnexpected`.
 */
export function toConnectError(error: unknown, onUnexpected?: (error: unknown) => void): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof BikeshareError) {
    const details =
      error.violations.length > 0
        ? [
            {
              desc: BadRequestSchema,
              value: {
                fieldViolations: error.violations.map((v) => ({
                  field: v.field,
                  description: v.description,
                })),
              },
            },
          ]
        : [];
    return new ConnectError(error.message, CONNECT_CODE[error.code], undefined, details, error);
  }
  if (error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError")) {
    return ConnectError.from(error);
  }
  onUnexpected?.(error);
  return new ConnectError(INTERNAL_MESSAGE, Code.Internal, undefined, undefined, error);
}

/**
 * Applies `toConnectError` to every RPC, to the error of a unary call and to one that ends a response
 * stream. Register it inside the tracing and metrics interceptors, so they see the code the client gets,
 * and outside auth, which throws BikeshareError too.
 */
export function errorInterceptor(log?: Pick<Logger, "error">): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const map = (error: unknown) =>
      toConnectError(error, (unexpected) => log?.error("RPC failed", { method, error: unexpected }));
    try {
      const res = await next(req);
      if (!res.stream) return res;
      return { ...res, message: mapped(res.message, map) };
    } catch (error) {
      throw map(error);
    }
  };
}

async function* mapped<T>(messages: AsyncIterable<T>, map: (error: unknown) => ConnectError) {
  try {
    yield* messages;
  } catch (error) {
    throw map(error);
  }
}

/** invalid_argument naming each bad field (the first MAX_LISTED_VIOLATIONS of them; the rest counted). */
export function invalidArgument(violations: readonly FieldViolation[]): BikeshareError {
  const list = new ViolationList();
  list.add(violations);
  return invalidRequest(list, "request");
}

/**
 * invalid_argument listing the first violations of a request of many rows; a last entry on `countField`
 * counts the rest, so 10,000 bad rows get a reply of a few kilobytes, built in milliseconds.
 */
export function invalidRequest(list: ViolationList, countField: string): BikeshareError {
  const rest = list.summary();
  const shown = rest ? [...list.listed, { field: countField, description: rest }] : list.listed;
  const summary = shown.map((v) => `${v.field} ${v.description}`).join("; ");
  return new BikeshareError("invalid_argument", `invalid argument: ${summary}`, { violations: shown });
}
