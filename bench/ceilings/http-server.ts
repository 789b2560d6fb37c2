/**
 * The HTTP/1.1 ceiling of bench/transport.ts: a bare Node http server that reads and parses the JSON body
 * of each request and answers a constant, i.e. what any JSON route on this machine costs before it does
 * any work. Prints its port once it listens.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

const ANSWER = JSON.stringify({ prediction: 187.25, model_version: "1" });

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    JSON.parse(Buffer.concat(chunks).toString("utf8"));
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(ANSWER) });
    res.end(ANSWER);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log((server.address() as AddressInfo).port);
});
