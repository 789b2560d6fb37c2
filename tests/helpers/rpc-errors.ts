import { type Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { BadRequestSchema } from "../../gen/bikeshare/v1/common_pb.js";

/** The code and the BadRequest field violations of an RPC's error (fails the test when it is not a ConnectError). */
export function violationsOf(error: unknown): { code: Code; fields: string[]; descriptions: string[] } {
  expect(error).toBeInstanceOf(ConnectError);
  const e = error as ConnectError;
  const violations = e.findDetails(BadRequestSchema)[0]?.fieldViolations ?? [];
  return {
    code: e.code,
    fields: violations.map((v) => v.field),
    descriptions: violations.map((v) => v.description),
  };
}
