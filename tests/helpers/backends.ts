import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { afterAll } from "vitest";
import { Database, type SqlDatabase } from "../../services/storage/database.js";
import { PgDatabase } from "../../services/storage/postgres.js";
import { startPostgres, type TestPostgres } from "./postgres.js";

/**
 * The storage backends every store-level contract test runs on: embedded DuckDB and a real
 * PostgreSQL server (one throwaway cluster per test file, a fresh database per `create`).
 *
 *   describe.each(BACKENDS)("… on $name", (backend) => { … backend.create(dir) … backend.open(at) })
 */
export interface Backend {
  readonly name: "duckdb" | "postgres";
  /** Where a new, empty database lives: a file under `dir`, or a PostgreSQL URL. */
  create(dir: string): Promise<string>;
  /** Opens the database at `location` (again, after a close, to check what persisted). */
  open(location: string): Promise<SqlDatabase>;
}

let cluster: Promise<TestPostgres> | undefined;

// Registered when a test file imports this module (each file gets its own module instance).
afterAll(async () => {
  const started = await cluster?.catch(() => undefined);
  cluster = undefined;
  await started?.destroy();
});

/** The file's cluster, started on first use and stopped when the file's tests end. */
export function testPostgres(): Promise<TestPostgres> {
  cluster ??= startPostgres();
  return cluster;
}

export const DUCKDB: Backend = {
  name: "duckdb",
  create: async (dir) => join(dir, "state", `${randomUUID()}.duckdb`),
  open: (path) => Database.open(path),
};

export const POSTGRES: Backend = {
  name: "postgres",
  create: async () => (await testPostgres()).createDatabase(),
  open: (url) => PgDatabase.open(url),
};

export const BACKENDS: readonly Backend[] = [DUCKDB, POSTGRES];
