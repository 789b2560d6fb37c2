import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { projectRoot } from "../services/config.js";

export interface LoadResult {
  tool: string;
  requestsPerSecond: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  total: number;
}

const LOADGEN = join(projectRoot(), "bench/out/loadgen");

/** Builds bench/loadgen (Go, no dependencies) into bench/out. */
export async function buildLoadgen(): Promise<void> {
  const path = `${process.env.PATH}:/usr/local/go/bin`;
  await promisify(execFile)("go", ["build", "-trimpath", "-o", LOADGEN, "."], {
    cwd: join(projectRoot(), "bench/loadgen"),
    env: { ...process.env, PATH: path },
  }).catch((error: unknown) => {
    throw new Error(`cannot build bench/loadgen (needs the Go toolchain): ${(error as Error).message}`);
  });
}

/** Open-loop requests at a fixed rate, latency counted from each request's due time (bench/loadgen). */
export async function fixedRateLoad(
  url: string,
  body: string,
  rate: number,
  seconds: number,
): Promise<LoadResult> {
  const { stdout } = await promisify(execFile)(LOADGEN, [
    "-url",
    url,
    "-body",
    body,
    "-rate",
    String(rate),
    "-duration",
    `${seconds}s`,
  ]);
  const r = JSON.parse(stdout) as {
    requests: number;
    errors: number;
    requests_per_second: number;
    p50_ms: number;
    p99_ms: number;
  };
  return {
    tool: `bench/loadgen, open loop at ${rate} req/s, HTTP/1.1`,
    requestsPerSecond: r.requests_per_second,
    p50ms: r.p50_ms,
    p99ms: r.p99_ms,
    errors: r.errors,
    total: r.requests,
  };
}
