/**
 * The scaling ceiling of `--workers` in bench/scale-out.ts: a bare node:cluster HTTP server whose handler
 * parses the JSON body and then burns a fixed amount of CPU, set to what one bikeshare request costs in the
 * same run. Its req/s with 2 workers over 1 is what a second core can give a server of that cost on this
 * machine while the load generator shares the cores; no server doing that work can scale better here.
 * Usage: cluster-server.ts <port> <workers> <cpu µs per request>. Prints its port once every worker listens.
 */
import cluster from "node:cluster";
import http from "node:http";

const [port = 0, workers = 1, burnMicros = 0] = process.argv.slice(2).map(Number);
const ANSWER = JSON.stringify({ prediction: 187.25, model_version: "1" });

/** Busy work until this process has used `micros` more CPU time (user + system). */
function burn(micros: number): void {
  const start = process.cpuUsage();
  let x = 0;
  for (;;) {
    for (let i = 0; i < 200; i++) x += Math.sqrt(i + x);
    const used = process.cpuUsage(start);
    if (used.user + used.system >= micros) break;
  }
  if (Number.isNaN(x)) throw new Error("unreachable: keeps the loop from being optimised away");
}

if (cluster.isPrimary && workers > 1) {
  let listening = 0;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("listening", (_worker, address) => {
    if (++listening === workers) console.log(address.port);
  });
  process.on("SIGTERM", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  });
} else {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      JSON.parse(Buffer.concat(chunks).toString("utf8"));
      burn(burnMicros);
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(ANSWER) });
      res.end(ANSWER);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, "127.0.0.1", () => {
    const address = server.address();
    if (cluster.isPrimary && address !== null && typeof address === "object") console.log(address.port);
  });
}
