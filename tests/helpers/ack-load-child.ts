/**
 * Load generator run as its own process for the prediction-log kill test. Sends predictions at a fixed
 * rate, in turns a legacy `POST /predict`, a Connect `PredictService/Predict` and a two-row legacy
 * `POST /predict/batch`. Every row carries its own key as `temp` = key / 1e7, so the test can find its
 * logged row (the legacy replies carry no request id). A row counts as acknowledged only when its
 * 200 reply has been read whole: then one line `ack <key>` is printed at once, so acknowledgements made
 * just before the server is killed are not lost with this process's buffers. Stops sending at the first
 * failed request (the server was killed) or after `seconds`, waits for what is in flight, and prints
 * `done <sent> <acknowledged> <failed>`.
 * Usage: tsx ack-load-child.ts <baseUrl> <requestsPerSecond> <seconds> <firstKey>
 */
import { SUMMER_EVENING } from "./hour-csv.js";

const [baseUrl, rateArg, secondsArg, firstArg] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const firstKey = Number(firstArg);
if (!baseUrl || !(rate > 0) || !(seconds > 0) || !Number.isInteger(firstKey)) {
  throw new Error("usage: ack-load-child.ts <baseUrl> <requestsPerSecond> <seconds> <firstKey>");
}

const conditions = (key: number) => ({ ...SUMMER_EVENING, temp: key / 1e7 });

/** The request for the i-th send: its path, body and the keys of its rows. */
function request(i: number): { path: string; body: unknown; keys: number[] } {
  const key = firstKey + 2 * i;
  switch (i % 3) {
    case 0:
      return { path: "/predict", body: conditions(key), keys: [key] };
    case 1:
      return {
        path: "/bikeshare.v1.PredictService/Predict",
        body: { conditions: conditions(key) },
        keys: [key],
      };
    default:
      return {
        path: "/predict/batch",
        body: { inputs: [conditions(key), conditions(key + 1)] },
        keys: [key, key + 1],
      };
  }
}

let sent = 0;
let acknowledged = 0;
let failed = 0;
let stopped = false;
const inFlight = new Set<Promise<void>>();
const started = performance.now();
const total = Math.round(rate * seconds);

for (let i = 0; i < total && !stopped; i++) {
  const wait = started + (i * 1000) / rate - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  if (stopped) break;
  const { path, body, keys } = request(i);
  sent++;
  const call: Promise<void> = fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  })
    .then(async (res) => {
      const text = await res.text();
      if (res.status !== 200) throw new Error(`${path} answered ${res.status}: ${text.slice(0, 200)}`);
      acknowledged += keys.length;
      process.stdout.write(keys.map((k) => `ack ${k}\n`).join(""));
    })
    .catch((error: unknown) => {
      failed++;
      if (!stopped) process.stderr.write(`first failed request (${path}): ${String(error)}\n`);
      stopped = true;
    })
    .finally(() => inFlight.delete(call));
  inFlight.add(call);
}
await Promise.all(inFlight);
process.stdout.write(`done ${sent} ${acknowledged} ${failed}\n`);
