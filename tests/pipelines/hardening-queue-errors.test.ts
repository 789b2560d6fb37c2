import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../services/observability/log.js";
import { type RunningServer, startServer } from "../../services/server.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { testConfig, writeTokens } from "../helpers/server.js";

let dir: string;
let redis: TestRedis;
let server: RunningServer;
const logs: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-queue-errors-"));
  redis = await startRedis();
  const config = await testConfig(dir, { redisUrl: redis.url });
  await writeTokens(config);
  server = await startServer(
    config,
    createLogger({}, "debug", (line) => logs.push(line)),
    { bootstrap: false },
  );
}, 120_000);

afterAll(async () => {
  await redis.start();
  // Closing BullMQ clients that are still reconnecting can hang: give them time to reconnect.
  await new Promise((r) => setTimeout(r, 3000));
  await server?.close();
  await redis?.destroy();
  await rm(dir, { recursive: true, force: true });
}, 90_000);

const troubleLines = () =>
  logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "job queue trouble");

async function queueErrors(): Promise<Map<string, number>> {
  const text = await server.metrics.registry.metrics();
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/^bikeshare_queue_errors_total\{component="([a-z_]+)"\} (\d+)/gm)) {
    counts.set(m[1] as string, Number(m[2]));
  }
  return counts;
}

describe("a Redis outage seen by the server", () => {
  it("is logged, rate-limited, and counted by component", async () => {
    expect(troubleLines()).toEqual([]);
    await redis.stop();
    const deadline = Date.now() + 20_000;
    while (troubleLines().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const [first] = troubleLines();
    expect(first, "no log line during the Redis outage").toBeDefined();
    expect(first?.level).toBe("warn");
    expect(String(first?.component)).toMatch(/^queue|cancel_publisher/);
    expect(JSON.stringify(first?.error)).toMatch(/ECONNREFUSED|Connection is closed|connect/i);

    // ioredis retries every few hundred milliseconds; each client's errors are all counted, but
    // each client logs at most one line per 10 s.
    await new Promise((r) => setTimeout(r, 4000));
    const counts = await queueErrors();
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const lines = troubleLines();
    const perComponent = new Map<string, number>();
    for (const l of lines)
      perComponent.set(String(l.component), (perComponent.get(String(l.component)) ?? 0) + 1);
    expect(total).toBeGreaterThan(lines.length);
    for (const [component, n] of perComponent) {
      expect(n, `${component} logged ${n} lines in under 10 s`).toBe(1);
      expect(counts.get(component) ?? 0).toBeGreaterThanOrEqual(1);
    }
  }, 120_000);
});
