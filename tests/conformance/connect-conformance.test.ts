/**
 * The Connect conformance suite (connectrpc.com/conformance, built by scripts/ops-tools.sh) against
 * tests/conformance/server.ts: first with connect-node alone (the baseline the lean path must match),
 * then with unary calls served by services/http/connect-unary.ts. Every case must pass both ways, and the
 * lean run must have been answered by the lean handler (a silent fallback to connect-node would pass the
 * suite and prove nothing).
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const here = import.meta.dirname;
let binary: string;
const scratch = mkdtempSync(join(tmpdir(), "connect-conformance-"));

beforeAll(async () => {
  const tools = await run("bash", ["scripts/ops-tools.sh", "--print-dir"], { timeout: 900_000 });
  binary = join(tools.stdout.trim().split("\n").at(-1) as string, "bin", "connectconformance");
  if (!existsSync(binary)) throw new Error(`${binary} is missing (${tools.stderr.trim()})`);
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs the suite; returns the case counts it printed and its whole output. */
async function conformance(mode: "--lean" | "--baseline", env: Record<string, string> = {}) {
  const args = ["--mode", "server", "--conf", join(here, "config.yaml"), "--", "node", "--import", "tsx"];
  args.push(join(here, "server.ts"), mode);
  // The suite exits non-zero when a case fails: its report is what the assertion shows.
  const { stdout, stderr } = await run(binary, args, {
    env: { ...process.env, ...env },
    timeout: 300_000,
    maxBuffer: 64 * 1024 * 1024,
  }).catch((error: { stdout?: string; stderr?: string }) => ({
    stdout: error.stdout ?? "",
    stderr: error.stderr ?? String(error),
  }));
  const output = `${stdout}\n${stderr}`;
  const total = /Total cases: (\d+)/.exec(output);
  const tally = /(\d+) passed, (\d+) failed/.exec(output);
  return {
    total: Number(total?.[1] ?? 0),
    passed: Number(tally?.[1] ?? 0),
    failed: Number(tally?.[2] ?? -1),
    output,
  };
}

describe("Connect conformance, server mode (Connect protocol, unary, JSON and proto, identity and gzip, HTTP/1.1 and h2c)", () => {
  let baseline: Awaited<ReturnType<typeof conformance>>;

  it("connect-node alone passes every case", async () => {
    baseline = await conformance("--baseline");
    expect(baseline.failed, baseline.output).toBe(0);
    expect(baseline.total, baseline.output).toBeGreaterThan(300);
    expect(baseline.passed).toBe(baseline.total);
  });

  it("the lean unary handler passes the same cases, and answered them itself", async () => {
    const answered = join(scratch, "lean.log");
    const lean = await conformance("--lean", { CONFORMANCE_LEAN_LOG: answered });
    expect(lean.failed, lean.output).toBe(0);
    expect(lean.total).toBe(baseline.total);
    expect(lean.passed).toBe(lean.total);
    // A few cases send what connect-node refuses (a content type or HTTP method it answers 415 or 405
    // to): those are left to it. Everything else is the lean handler's.
    const calls = readFileSync(answered, "utf8").split("\n").filter(Boolean).length;
    expect(calls).toBeGreaterThan(lean.total * 0.9);
  });
});
