import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServerConfig } from "../../services/config.js";
import { Database } from "../../services/storage/database.js";
import { freePort } from "../helpers/ports.js";
import { seedModels, testConfig, writeTokens } from "../helpers/server.js";

const ROOT = join(import.meta.dirname, "../..");
const KILLS = 5;
/** Acknowledged rows to wait for before each kill, so that it lands while the load is running. */
const ACKS_BEFORE_KILL = 150;

let dir: string;
let config: ServerConfig;
let port: number;
let server: ChildProcess | undefined;

/** The real CLI as its own process, on the test's database: `serve` replays the spool before it listens. */
async function startServer(): Promise<void> {
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "cli/bikeshare.ts"), "serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      BIKESHARE_DB: config.dbPath,
      BIKESHARE_MODELS_DIR: config.modelsDir,
      BIKESHARE_TOKENS_FILE: config.tokensPath,
      BIKESHARE_ADMIN_TOKEN_FILE: config.adminTokenPath,
      BIKESHARE_CHECK_INTERVAL_SECONDS: "0",
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  server = child;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server not ready within 120 s");
}

async function stopServer(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
  const child = server;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

interface Load {
  /** Resolves once `count` rows have been acknowledged. */
  acknowledged(count: number): Promise<void>;
  /** Every acknowledged key and the load's own count line, once the load process has ended. */
  done: Promise<{ keys: number[]; summary: string }>;
}

/** tests/helpers/ack-load-child.ts as its own process, so the server's kill does not stall the client. */
function startLoad(firstKey: number): Load {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "tests/helpers/ack-load-child.ts"),
      `http://127.0.0.1:${port}`,
      "200",
      "60",
      String(firstKey),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const keys: number[] = [];
  let summary = "";
  const waiters: { count: number; resolve: () => void }[] = [];
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (line.startsWith("ack ")) keys.push(Number(line.slice(4)));
    else if (line.startsWith("done ")) summary = line;
    for (const w of waiters.filter((w) => keys.length >= w.count)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const done = new Promise<{ keys: number[]; summary: string }>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve({ keys, summary }) : reject(new Error(`load process exited with ${code}`)),
    );
  });
  return {
    acknowledged: (count) =>
      keys.length >= count
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((resolve) => waiters.push({ count, resolve })),
            done.then(() => {
              throw new Error(`the load ended after ${keys.length} acknowledged rows, before ${count}`);
            }),
          ]),
    done,
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-spool-"));
  config = await testConfig(dir);
  await writeTokens(config);
  await seedModels(config, 1);
  port = await freePort();
});
afterAll(async () => {
  await stopServer("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("prediction log across SIGKILL", () => {
  it(`keeps every acknowledged prediction (legacy and Connect) over ${KILLS} kills under load, each exactly once`, async () => {
    const acknowledged: number[] = [];
    for (let kill = 0; kill < KILLS; kill++) {
      await startServer();
      const load = startLoad(kill * 1_000_000);
      await load.acknowledged(ACKS_BEFORE_KILL);
      await stopServer("SIGKILL");
      const { keys, summary } = await load.done;
      expect(summary, "the load process's last line").toMatch(/^done \d+ \d+ [1-9]\d*$/);
      acknowledged.push(...keys);
    }
    // The last start replays what the last kill left; a clean stop writes what it served itself.
    await startServer();
    await stopServer("SIGTERM");

    const db = await Database.open(config.dbPath);
    try {
      const rows = await db.all<{ key: number; n: number }>(
        `SELECT round(temp * 1e7)::INTEGER AS key, count(*)::INTEGER AS n FROM predictions GROUP BY key`,
      );
      const logged = new Map(rows.map((r) => [r.key, r.n]));
      const lost = acknowledged.filter((k) => !logged.has(k));
      expect(lost, `acknowledged rows missing from the log (of ${acknowledged.length})`).toEqual([]);
      const twice = rows.filter((r) => r.n > 1).map((r) => r.key);
      expect(twice, "rows logged more than once").toEqual([]);
    } finally {
      await db.close();
    }
  }, 600_000);
});
