/**
 * Load generator run as its own process: POST /predict at a fixed rate for a fixed time,
 * then print one JSON line with every response's outcome in completion order.
 * Usage: tsx load-child.ts <baseUrl> <requestsPerSecond> <seconds>
 */
const [baseUrl, rateArg, secondsArg] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const body = JSON.stringify({
  season: 3,
  yr: 1,
  mnth: 7,
  hr: 17,
  holiday: 0,
  weekday: 3,
  workingday: 1,
  weathersit: 1,
  temp: 0.72,
  atemp: 0.66,
  hum: 0.5,
  windspeed: 0.2,
});

const outcomes: { at: number; version: string | null; error?: string }[] = [];
const started = performance.now();
const inFlight: Promise<void>[] = [];
const total = Math.round(rate * seconds);
for (let i = 0; i < total; i++) {
  const due = started + (i * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  inFlight.push(
    fetch(`${baseUrl}/predict`, { method: "POST", headers: { "content-type": "application/json" }, body })
      .then(async (res) => {
        const json = (await res.json()) as { model_version?: string };
        outcomes.push({
          at: performance.now() - started,
          version: res.ok ? (json.model_version ?? null) : null,
          ...(res.ok ? {} : { error: `HTTP ${res.status}` }),
        });
      })
      .catch((error: unknown) => {
        outcomes.push({ at: performance.now() - started, version: null, error: String(error) });
      }),
  );
}
await Promise.all(inFlight);
const elapsed = (performance.now() - started) / 1000;
process.stdout.write(`${JSON.stringify({ elapsed, outcomes })}\n`);
