import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.js";

export interface TestRedis {
  url: string;
  port: number;
  /** Stops the server (its data stays on disk: append-only file, as in production). */
  stop(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

/** A real Debian redis-server on a free loopback port, with its own data folder. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-redis-"));
  const port = await freePort();
  const pidfile = join(dir, "redis.pid");
  const start = async () => {
    execFileSync("redis-server", [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--daemonize",
      "yes",
      "--pidfile",
      pidfile,
    ]);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        if (
          execFileSync("redis-cli", ["-p", String(port), "ping"])
            .toString()
            .trim() === "PONG"
        )
          return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not answer on port ${port}`);
  };
  const stop = async () => {
    const pid = Number((await readFile(pidfile, "utf8").catch(() => "")).trim());
    if (!pid) return;
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      return;
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
      } catch {
        return; // gone
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server ${pid} did not stop`);
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    async destroy() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
