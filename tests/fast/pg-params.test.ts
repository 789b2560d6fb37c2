/** How the PostgreSQL backend turns the stores' `$name` parameters and values into what pg sends. */

import { describe, expect, it } from "vitest";
import { positional, redactUrl } from "../../services/storage/postgres.js";

describe("positional", () => {
  it("numbers $name parameters by first use, reusing a repeated one", () => {
    expect(positional("SELECT * FROM t WHERE a = $a AND b = $b OR a2 = $a", { b: 2, a: 1 })).toEqual({
      text: "SELECT * FROM t WHERE a = $1 AND b = $2 OR a2 = $1",
      values: [1, 2],
    });
  });

  it("leaves quoted text, quoted identifiers and :: casts alone", () => {
    expect(
      positional(`SELECT '$a', "$a", 'it''s $a', $a::TIMESTAMP, now()::TIMESTAMP`, {
        a: new Date("2012-07-04T21:00:00.123Z"),
      }),
    ).toEqual({
      text: `SELECT '$a', "$a", 'it''s $a', $1::TIMESTAMP, now()::TIMESTAMP`,
      values: ["2012-07-04T21:00:00.123"],
    });
  });

  it("binds as DuckDB does: Dates as UTC timestamps, bigints, bytes, double lists, undefined as NULL", () => {
    const { values } = positional("SELECT $1, $2, $3, $4, $5", [
      2n ** 60n,
      new Uint8Array([1, 2]),
      Float64Array.from([0.5, -1]),
      undefined,
      [new Date(0), null],
    ]);
    expect(values).toEqual([
      "1152921504606846976",
      Buffer.from([1, 2]),
      [0.5, -1],
      null,
      ["1970-01-01T00:00:00.000", null],
    ]);
    expect(() => positional("SELECT $a", { b: 1 })).toThrow(/no value for the SQL parameter \$a/);
    expect(() => positional("SELECT $1", [new Date(Number.NaN)])).toThrow(/invalid Date/);
  });
});

describe("redactUrl", () => {
  it("hides the password and nothing else", () => {
    expect(redactUrl("postgres://app:s3cr%40t@db.internal:5432/bikeshare?sslmode=require")).toBe(
      "postgres://app:***@db.internal:5432/bikeshare?sslmode=require",
    );
    expect(redactUrl("postgres://app@db/bikeshare")).toBe("postgres://app@db/bikeshare");
  });
});
