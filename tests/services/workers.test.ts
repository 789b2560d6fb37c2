import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServerConfig } from "../../services/config.js";
import { testPostgres } from "../helpers/backends.js";
import { runCli } from "../helpers/cli.js";
import {
  freePort,
  type LogLine,
  predictOnce,
  type ServeProcess,
  seedTinyVersions,
  serveEnv,
  startServe,
} from "../helpers/serve-process.js";
import { writeTokens } from "../helpers/server.js";

/** `bikeshare serve --workers N` as a real process tree on a real PostgreSQL server (docs/deployment.md, "Workers"). */

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-workers-"));
  await mkdir(join(dir, "models"), { recursive: true });
  await writeTokens({ tokensPath: join(dir, "tokens.json") } as ServerConfig);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const servingLines = (p: ServeProcess) => p.logs.filter((l) => l.msg === "serving");
/** Waits until `count` workers have logged "serving" since the process started. */
const workersServing = (count: number) => (p: ServeProcess) =>
  p.waitForLog(() => servingLines(p).length >= count, 90_000);

async function spread(baseUrl: string, requests: number): Promise<Map<string, number>> {
  const byWorker = new Map<string, number>();
  for (let i = 0; i < requests; i++) {
    const answer = await predictOnce(baseUrl);
    expect(answer.status).toBe(200);
    byWorker.set(String(answer.worker), (byWorker.get(String(answer.worker)) ?? 0) + 1);
  }
  return byWorker;
}

async function metric(baseUrl: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const found = pattern.exec(text);
  if (!found) throw new Error(`no ${pattern} in /metrics`);
  return Number(found[1]);
}

describe("bikeshare serve --workers", () => {
  it("refuses more than one worker on the embedded database, and a count that is not one", async () => {
    const embedded = await runCli(["serve", "--workers", "2"], serveEnv(dir, undefined, await freePort()));
    expect(embedded.code).toBe(2);
    expect(embedded.stderr).toContain("--workers 2 needs BIKESHARE_DATABASE_URL");
    const bad = await runCli(["serve", "--workers", "two"], serveEnv(dir, undefined, await freePort()));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--workers must be an integer in 0..256 (0 = one per core), got two");
  });

  it("a worker that keeps dying at start is restarted later each time", async () => {
    // Nothing migrated this database: a predict worker refuses to start, every time.
    const url = await (await testPostgres()).createDatabase();
    const deaths = (p: ServeProcess) =>
      p.logs.filter((l) => l.msg === "a serving worker died: starting it again" && l.worker === 0);
    const server = await startServe(
      ["--workers", "2", "--role", "predict"],
      serveEnv(dir, url, await freePort()),
      (p) => p.waitForLog(() => deaths(p).length >= 3, 60_000),
    );
    try {
      expect(deaths(server).map((l) => l.restart_in_ms)).toEqual([500, 1000, 2000]);
      expect(deaths(server).every((l) => l.code === 1)).toBe(true);
      expect(server.logs.some((l) => l.msg === "the worker could not start")).toBe(true);
    } finally {
      server.child.kill("SIGTERM");
    }
    expect(await server.exited).toBe(0);
  });

  it("two workers share one port, /metrics adds both up, a killed worker comes back, SIGTERM drains them", async () => {
    const url = await (await testPostgres()).createDatabase();
    await seedTinyVersions(url, join(dir, "models"), 1);
    const server = await startServe(
      ["--workers", "2"],
      serveEnv(dir, url, await freePort()),
      workersServing(2),
    );
    try {
      const first = await spread(server.baseUrl, 40);
      expect([...first.keys()].sort()).toEqual(["0", "1"]);
      expect(await metric(server.baseUrl, /^bikeshare_serving_processes (\d+)/m)).toBe(2);
      // Each worker counts its own predictions; the scrape, whichever worker answers it, sums them.
      expect(await metric(server.baseUrl, /^bikeshare_predictions_total\{model_version="1"\} (\d+)/m)).toBe(
        40,
      );

      const worker1 = servingLines(server).find((l) => l.worker === 1) as LogLine;
      process.kill(Number(worker1.pid), "SIGKILL");
      await server.waitForLog(
        (l) => l.msg === "a serving worker died: starting it again" && l.worker === 1,
        10_000,
      );
      await server.waitForLog((l) => l.msg === "serving" && l.worker === 1 && l.pid !== worker1.pid, 60_000);
      const after = await spread(server.baseUrl, 20);
      expect([...after.keys()].sort()).toEqual(["0", "1"]);
      // The restarted worker's counter starts again at 0: the sum is the survivors' 20-odd plus its own.
      expect(await metric(server.baseUrl, /^bikeshare_serving_processes (\d+)/m)).toBe(2);
    } finally {
      server.child.kill("SIGTERM");
    }
    expect(await server.exited).toBe(0);
    expect(server.logs.filter((l) => l.msg === "shutting down").length).toBe(2);
  });
});
