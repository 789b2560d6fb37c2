import type { Dialect, Queryable, SqlDatabase } from "./database.js";

/**
 * Versioned schema migrations, one ordered list per store ("registry", "jobs", …), recorded in
 * `schema_migrations(component, version, applied_at)`. They run at start in one transaction: on
 * PostgreSQL under an advisory lock, so two processes starting together never both apply one (the
 * second waits, then finds it applied); DuckDB allows one writing process per file already.
 */

export interface Migration {
  /** 1, 2, … in order; never renumbered once released. */
  readonly version: number;
  /** The statements, given the dialect: DDL is where the two differ. */
  readonly statements: (dialect: Dialect) => readonly string[];
}

/** `pg_advisory_xact_lock` key for applying migrations (an arbitrary constant). */
const MIGRATION_LOCK = 7_311_642_002;

const TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  component VARCHAR NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL,
  PRIMARY KEY (component, version))`;

/**
 * DuckDB built-ins the stores' statements use, defined on PostgreSQL with the same meaning:
 * epoch milliseconds to TIMESTAMP and back (exact: integer arithmetic on an interval).
 */
const POSTGRES_FUNCTIONS = [
  `CREATE OR REPLACE FUNCTION epoch_ms(ms BIGINT) RETURNS TIMESTAMP
     LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
     AS $$ SELECT TIMESTAMP '1970-01-01' + ms * INTERVAL '1 millisecond' $$`,
  `CREATE OR REPLACE FUNCTION epoch_ms(ts TIMESTAMP) RETURNS BIGINT
     LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
     AS $$ SELECT (EXTRACT(EPOCH FROM ts) * 1000)::BIGINT $$`,
];

export interface MigrateOptions {
  /**
   * The version a database reached before `schema_migrations` existed (a store's own version table),
   * or 0. Read only when the table holds nothing for the component.
   */
  legacyVersion?: (tx: Queryable) => Promise<number>;
  /** The error for a database written by a newer build; a plain Error naming the component by default. */
  tooNew?: (found: number, known: number) => Error;
}

/** True when the table exists (schema-qualified names as `schema.table`). */
export async function tableExists(tx: Queryable, name: string): Promise<boolean> {
  const [schema, table] = name.includes(".") ? name.split(".") : [undefined, name];
  const rows = await tx.all(
    `SELECT 1 FROM information_schema.tables WHERE table_name = $1 ${schema ? "AND table_schema = $2" : ""}`,
    schema ? [table, schema] : [table],
  );
  return rows.length > 0;
}

/**
 * Brings `component` to the last version in `migrations`. Throws when the database was written by a
 * newer build (a version this one does not know). Returns the versions applied now.
 */
export async function migrate(
  db: SqlDatabase,
  component: string,
  migrations: readonly Migration[],
  options: MigrateOptions = {},
): Promise<number[]> {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`${component} migration ${i + 1} is numbered ${m.version}`);
  });
  const latest = migrations.length;
  if (db.schemaChanges === false) return requireCurrent(db, component, latest, options);
  return db.transaction(async (tx) => {
    if (db.dialect === "postgres") {
      await tx.run("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
      for (const fn of POSTGRES_FUNCTIONS) await tx.run(fn);
    }
    await tx.run(TABLE);
    const recorded = await appliedVersion(tx, component);
    const current = recorded ?? (options.legacyVersion ? await options.legacyVersion(tx) : 0);
    if (current > latest) throw tooNewError(db, component, current, latest, options);
    const applied: number[] = [];
    for (const m of migrations.slice(current)) {
      for (const statement of m.statements(db.dialect)) await tx.run(statement);
      applied.push(m.version);
    }
    // Versions a legacy table vouched for are recorded too, so the table alone tells the history.
    for (let v = (recorded ?? 0) + 1; v <= latest; v += 1) {
      await tx.run("INSERT INTO schema_migrations VALUES ($1, $2, $3)", [component, v, new Date()]);
    }
    return applied;
  });
}

/**
 * A process that must not change the schema (a predict replica) checks that `component` is at the
 * version this build knows. Older: the control plane of this build has not started yet (it applies
 * migrations); starting anyway would run this build's statements on tables they were not written for.
 */
async function requireCurrent(
  db: SqlDatabase,
  component: string,
  latest: number,
  options: MigrateOptions,
): Promise<number[]> {
  const current = (await tableExists(db, "schema_migrations"))
    ? ((await appliedVersion(db, component)) ?? 0)
    : 0;
  if (current > latest) throw tooNewError(db, component, current, latest, options);
  if (current < latest) {
    throw new Error(
      `the ${component} schema in ${db.path} is at version ${current} and this build needs ${latest}: a predict replica never changes the schema, so start a control process of this build first (it applies the migrations)`,
    );
  }
  return [];
}

function tooNewError(
  db: SqlDatabase,
  component: string,
  found: number,
  known: number,
  options: MigrateOptions,
) {
  return (
    options.tooNew?.(found, known) ??
    new Error(
      `the ${component} schema in ${db.path} has version ${found}; this build knows version ${known} at most`,
    )
  );
}

/** The last version of `component` recorded in schema_migrations; null when none is. */
async function appliedVersion(q: Queryable, component: string): Promise<number | null> {
  const [row] = await q.all<{ version: number | null }>(
    "SELECT CAST(MAX(version) AS INTEGER) AS version FROM schema_migrations WHERE component = $1",
    [component],
  );
  return row?.version ?? null;
}
