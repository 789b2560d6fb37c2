/**
 * wrk (Debian; scripts/bench-tools.sh installs it) as a closed-loop load generator in its own process:
 * POSTs of one JSON body over kept-alive HTTP/1.1 connections, one request in flight on each. The
 * generator's own CPU comes from the shell's `times` (its child's user + system time), so a benchmark can
 * say what the load cost the machine it shares with the server.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export interface WrkResult {
  tool: string;
  requestsPerSecond: number;
  p50ms: number;
  p99ms: number;
  /** Non-2xx answers and socket errors. */
  errors: number;
  total: number;
  /** CPU wrk used, in cores. */
  generatorCores: number;
}

const TOOLS = process.env.BIKESHARE_TOOLS_DIR ?? join(os.homedir(), ".cache/bikeshare-tools");

const seconds = (text: string) => {
  const m = /^(\d+)m([\d.]+)s$/.exec(text);
  return m ? Number(m[1]) * 60 + Number(m[2]) : Number.NaN;
};

export async function wrk(
  url: string,
  body: string,
  options: { seconds: number; connections: number; threads?: number },
): Promise<WrkResult> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-wrk-"));
  try {
    const script = join(dir, "post.lua");
    await writeFile(
      script,
      `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\nwrk.headers["Content-Type"] = "application/json"\n`,
    );
    const threads = String(options.threads ?? 2);
    const args = ["-t", threads, "-c", String(options.connections), "-d", `${options.seconds}s`, "--latency"];
    const { stdout } = await promisify(execFile)(
      "bash",
      [
        "-c",
        'PATH="$1:$PATH"; shift; wrk "$@" && times',
        "wrk",
        join(TOOLS, "bin"),
        ...args,
        "-s",
        script,
        url,
      ],
      { maxBuffer: 1 << 20 },
    ).catch((error: Error) => {
      throw new Error(`wrk failed (scripts/bench-tools.sh installs it): ${error.message}`);
    });
    const ms = (label: string) => {
      const m = stdout.match(new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)\\s*$`, "m"));
      if (!m) throw new Error(`wrk printed no ${label}th percentile:\n${stdout}`);
      return Number(m[1]) * { us: 1e-3, ms: 1, s: 1e3 }[m[2] as "us" | "ms" | "s"];
    };
    const total = Number(stdout.match(/(\d+) requests in/)?.[1]);
    const non2xx = Number(stdout.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
    const socket = stdout.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
    // `times` prints the shell's user and system time, then its children's: wrk's.
    const [user = "", system = ""] = stdout.trim().split("\n").at(-1)?.split(" ") ?? [];
    return {
      tool: `wrk -t ${threads}, ${options.connections} connections, HTTP/1.1`,
      requestsPerSecond: Number(stdout.match(/Requests\/sec:\s+([\d.]+)/)?.[1]),
      p50ms: ms("50"),
      p99ms: ms("99"),
      errors: non2xx + (socket ? socket.slice(1).reduce((s, n) => s + Number(n), 0) : 0),
      total,
      generatorCores: (seconds(user) + seconds(system)) / options.seconds,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
