import { Database, type SqlDatabase } from "./database.js";
import { PgDatabase, redactUrl } from "./postgres.js";

export interface StorageConfig {
  /** The embedded DuckDB file (BIKESHARE_DB), used when `databaseUrl` is unset. */
  dbPath: string;
  /** BIKESHARE_DATABASE_URL: PostgreSQL holds all shared state. */
  databaseUrl?: string;
}

/**
 * The backend the configuration names: PostgreSQL when BIKESHARE_DATABASE_URL is set, else the
 * embedded DuckDB file. Errors name the setting; a URL's password never appears in them.
 */
export async function openDatabase(
  config: StorageConfig,
  options: {
    onWritable?: (writable: boolean, error?: Error) => void;
    /** False: check the schema, never change it (a predict replica; PostgreSQL only). */
    schemaChanges?: boolean;
  } = {},
): Promise<SqlDatabase> {
  if (config.databaseUrl === undefined) {
    return Database.open(config.dbPath, { setting: "BIKESHARE_DB", ...options });
  }
  try {
    return await PgDatabase.open(config.databaseUrl, options);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `BIKESHARE_DATABASE_URL=${redactUrl(config.databaseUrl)}: cannot connect: ${scrub(message, config.databaseUrl)}`,
      { cause: error },
    );
  }
}

/** A driver message never shows the password, even when it quotes the URL. */
function scrub(text: string, url: string): string {
  let password = "";
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    // An unparsable URL has no password to find.
  }
  return password ? text.replaceAll(password, "***") : text;
}
