/**
 * Load generator run as its own process: `concurrency` clients each POST /predict in a loop, one
 * request after the other, until stdin closes; then it finishes the requests in flight and exits.
 * Prints one JSON line per response, in completion order: `{ n, sentAfter, version, error? }` where
 * `n` counts completions and `sentAfter` is how many had completed when the request was sent, so a
 * reader can tell which requests started after a given response arrived. No rate and no duration:
 * the test decides when it has seen enough.
 * Usage: tsx load-child.ts <baseUrl> <concurrency>
 */
import { SUMMER_EVENING } from "./hour-csv.js";

const [baseUrl, concurrencyArg] = process.argv.slice(2);
const concurrency = Number(concurrencyArg);
if (!baseUrl || !Number.isInteger(concurrency) || concurrency < 1) {
  process.stderr.write("usage: load-child.ts <baseUrl> <concurrency>\n");
  process.exit(2);
}
const body = JSON.stringify(SUMMER_EVENING);

let stopping = false;
process.stdin.on("data", () => {});
process.stdin.on("end", () => {
  stopping = true;
});

let completed = 0;
async function client(): Promise<void> {
  while (!stopping) {
    const sentAfter = completed;
    let version: string | null = null;
    let error: string | undefined;
    try {
      const res = await fetch(`${baseUrl}/predict`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const text = await res.text();
      if (res.ok) version = (JSON.parse(text) as { model_version?: string }).model_version ?? null;
      if (version === null) error = `HTTP ${res.status}: ${text.slice(0, 200)}`;
    } catch (e) {
      error = String(e);
    }
    completed += 1;
    process.stdout.write(
      `${JSON.stringify({ n: completed, sentAfter, version, ...(error ? { error } : {}) })}\n`,
    );
  }
}

await Promise.all(Array.from({ length: concurrency }, client));
