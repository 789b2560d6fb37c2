import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "./ports.js";

export interface TestPostgres {
  port: number;
  /** A new, empty database on the cluster; its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server (an outage: clients see refused connections) and starts it again, data kept. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its folder. */
  destroy(): Promise<void>;
}

/** The Debian layout: /usr/lib/postgresql/<major>/bin. Absent means the machine lacks `postgresql`. */
function binDir(): string {
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((d) => existsSync(join(root, d, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (majors.length === 0) {
    throw new Error(
      "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/setup.sh (Debian package postgresql)",
    );
  }
  return join(root, majors[0] as string, "bin");
}

/**
 * A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp folder, on a free loopback port, trust
 * authentication, fsync off (its data dies with the test). initdb refuses to run as root, so as root
 * the cluster belongs to the `postgres` user.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = binDir();
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-pg-"));
  const data = join(dir, "data");
  const port = await freePort();
  const root = process.getuid?.() === 0;
  const run = (tool: string, args: string[]) => {
    const cmd = [join(bin, tool), ...args];
    if (root) {
      const quoted = cmd.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
      return execFileSync("su", ["postgres", "-s", "/bin/sh", "-c", quoted], { stdio: "pipe" });
    }
    return execFileSync(cmd[0] as string, cmd.slice(1), { stdio: "pipe" });
  };
  if (root) {
    await chmod(dir, 0o755);
    execFileSync("chown", ["postgres:postgres", dir]);
  }
  const pgStart = () =>
    run("pg_ctl", [
      "-D",
      data,
      "-l",
      join(dir, "server.log"),
      "-w",
      "-o",
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
      "start",
    ]);
  try {
    // C collation: strings sort by code point, as in DuckDB (docs/deployment.md says to create it so).
    run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]);
    pgStart();
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? "";
    await rm(dir, { recursive: true, force: true });
    throw new Error(`could not start PostgreSQL: ${stderr || String(error)}`, { cause: error });
  }
  // A test process that ends without its teardown (a timeout, an uncaught error) must not leave a server running.
  const stopAtExit = () => {
    try {
      run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
    } catch {
      // Already stopped.
    }
  };
  process.once("exit", stopAtExit);
  let admin = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
  await admin.connect();
  let n = 0;
  return {
    port,
    async createDatabase() {
      n += 1;
      const name = `test_${n}`;
      await admin.query(`CREATE DATABASE ${name}`);
      return `postgres://postgres:secret@127.0.0.1:${port}/${name}`;
    },
    async stop() {
      await admin.end().catch(() => undefined);
      run("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]);
    },
    async start() {
      pgStart();
      admin = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
      await admin.connect();
    },
    async destroy() {
      process.removeListener("exit", stopAtExit);
      await admin.end().catch(() => undefined);
      try {
        run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
