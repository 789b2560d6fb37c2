/**
 * A fixed-rate load generator for `POST /predict`, run in its own process so that the load never
 * competes with the servers under test for the test runner's event loop:
 *
 *   node --import tsx tests/helpers/fixed-rate-load.ts URL RATE SECONDS OUT.json
 *
 * With LOAD_TOKEN set, each request carries it as a bearer token.
 * Each request carries its own `X-Request-Id`; the summary written to OUT.json lists every
 * acknowledged request with the model version that answered it, and every failure with its cause,
 * so a test can check them against the shared prediction log. SIGTERM ends the run early (the
 * requests in flight are awaited and counted); SIGUSR2 prints the number of requests in flight.
 */
import { writeFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { performance } from "node:perf_hooks";
import { SUMMER_EVENING } from "./hour-csv.js";

export interface LoadSummary {
  sent: number;
  acknowledged: { id: string; at: number; version: string; ms: number }[];
  failures: { id: string; at: number; error: string }[];
  /** Requests still unanswered when the run ended (none after a normal end). */
  unanswered: number;
}

const [url, rateArg, secondsArg, out] = process.argv.slice(2);
if (!url || !rateArg || !secondsArg || !out) {
  console.error("usage: fixed-rate-load.ts URL RATE SECONDS OUT.json");
  process.exit(2);
}
const rate = Number(rateArg);
const target = new URL(url);
// Open-loop load: enough sockets that a request never waits in the agent's queue behind slower ones,
// which would be the client's delay, not the servers'.
const agent = new Agent({ keepAlive: true, maxSockets: 256 });
const body = JSON.stringify(SUMMER_EVENING);
const runId = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const summary: LoadSummary = { sent: 0, acknowledged: [], failures: [], unanswered: 0 };
const inFlight = new Set<Promise<void>>();

function send(n: number): Promise<void> {
  const id = `load-${runId}-${n}`;
  const sentAt = performance.now();
  summary.sent++;
  return new Promise<void>((resolve) => {
    const fail = (error: string) => {
      summary.failures.push({ id, at: Date.now(), error });
      resolve();
    };
    const req = request(
      target,
      {
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          "x-request-id": id,
          ...(process.env.LOAD_TOKEN ? { authorization: `Bearer ${process.env.LOAD_TOKEN}` } : {}),
        },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => fail(`response: ${e.message}`));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
          try {
            const parsed = JSON.parse(text) as { model_version?: string };
            summary.acknowledged.push({
              id,
              at: Date.now(),
              version: String(parsed.model_version),
              ms: performance.now() - sentAt,
            });
            resolve();
          } catch {
            fail(`unparseable body: ${text.slice(0, 200)}`);
          }
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out after 10 s")));
    req.on("error", (e) => fail(e.message));
    req.end(body);
  });
}

let stopped = false;
process.on("SIGTERM", () => {
  stopped = true;
});
// A snapshot for a test that kills a server: how many requests were unanswered at that moment.
process.on("SIGUSR2", () => {
  process.stdout.write(`${JSON.stringify({ inFlight: inFlight.size, at: Date.now() })}\n`);
});

const started = performance.now();
const endAt = started + Number(secondsArg) * 1000;
let n = 0;
while (!stopped && performance.now() < endAt) {
  // Catch up to the schedule rather than drift: request n is due at n / rate seconds.
  const due = Math.floor(((performance.now() - started) / 1000) * rate);
  while (n < due) {
    const p = send(n++);
    inFlight.add(p);
    void p.then(() => inFlight.delete(p));
  }
  await new Promise((r) => setTimeout(r, 5));
}
await Promise.race([Promise.all(inFlight), new Promise((r) => setTimeout(r, 12_000))]);
summary.unanswered = inFlight.size;
agent.destroy();
await writeFile(out, JSON.stringify(summary));
process.exit(0);
