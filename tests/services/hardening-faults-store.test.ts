import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../services/storage/database.js";
import { runCli } from "../helpers/cli.js";

let dir: string;
let readOnly: string;
let mounted = false;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-store-"));
  readOnly = join(dir, "read-only");
  await mkdir(readOnly);
  if (process.getuid?.() === 0) {
    // Permissions do not stop root: a read-only file system does.
    execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", readOnly]);
    mounted = true;
  } else {
    await chmod(readOnly, 0o555);
  }
});

afterAll(async () => {
  if (mounted) execFileSync("umount", [readOnly]);
  await chmod(readOnly, 0o755).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

/** The `bikeshare serve` command's stderr lines when it cannot start, with BIKESHARE_DB set to `db`. */
async function serveFails(db: string): Promise<string[]> {
  const result = await runCli(["serve"], {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PORT: "0",
    BIKESHARE_DB: db,
    BIKESHARE_MODELS_DIR: join(dir, "models"),
    BIKESHARE_TOKENS_FILE: join(dir, "tokens.json"),
    BIKESHARE_ADMIN_TOKEN_FILE: join(dir, "admin-token"),
    BIKESHARE_CHECK_INTERVAL_SECONDS: "0",
  });
  expect(result.code, result.stdout + result.stderr).toBe(1);
  return result.stderr.split("\n").filter((l) => l.trim() !== "");
}

describe("the database file", () => {
  it("is created readable and writable by its owner only", async () => {
    const path = join(dir, "new", "bikeshare.duckdb");
    const db = await Database.open(path);
    try {
      await db.run("CREATE TABLE t (a INTEGER)");
      await db.run("INSERT INTO t VALUES (1)");
    } finally {
      await db.close();
    }
    expect(((await stat(path)).mode & 0o777).toString(8)).toBe("600");
  });

  it("in a read-only folder stops the server with one line naming BIKESHARE_DB", async () => {
    const lines = await serveFails(join(readOnly, "bikeshare.duckdb"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("BIKESHARE_DB");
    expect(lines[0]).toContain(readOnly);
    expect(lines[0]).toContain("read-only");
  }, 120_000);

  it("under a folder that cannot exist stops the server with one line naming BIKESHARE_DB", async () => {
    const file = join(dir, "plain-file");
    await writeFile(file, "not a folder");
    const lines = await serveFails(join(file, "data", "bikeshare.duckdb"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("BIKESHARE_DB");
    expect(lines[0]).toContain("does not exist");
  }, 120_000);
});
