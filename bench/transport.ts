/**
 * Each protocol against its transport's ceiling (issue 14), in one run, with the load tools in their own
 * processes: wrk (HTTP/1.1 closed loop), ghz (gRPC, closed loop and fixed rate) and bench/loadgen (HTTP/1.1
 * open loop at a fixed rate). Ceilings: a bare Node http server that parses the JSON body and answers a
 * constant (bench/ceilings/http-server.ts) and a bare @grpc/grpc-js server with a constant handler
 * (bench/ceilings/grpc-server.ts, also with protobuf decode/encode). The machine is shared and noisy, so
 * every target runs beside its ceiling in the same round, rounds alternate, and each figure is given as a
 * ratio to its ceiling and as server CPU per request (from /proc: steadier than req/s when other work runs).
 *
 *   npx tsx bench/transport.ts      (needs dist/, wrk and ghz: scripts/bench-tools.sh installs them)
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { projectRoot } from "../services/config.js";
import { modelInput, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { freePort } from "../tests/helpers/ports.js";
import { docSection } from "./doc-section.js";
import { buildLoadgen, fixedRateLoad } from "./fixed-rate.js";
import { waitReady } from "./server-ready.js";
import { wrk } from "./wrk.js";

const section = docSection("transport");
const root = projectRoot();
const run = promisify(execFile);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = 8;
const FIXED_RATE = 1000;
const TOOLS = process.env.BIKESHARE_TOOLS_DIR ?? join(os.homedir(), ".cache/bikeshare-tools");

interface Sample {
  rps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  /** Server CPU per answered request, µs (user + system of the server process during the run). */
  cpuUs: number;
}

function tool(name: string): string {
  const dirs = [join(TOOLS, "bin"), "/usr/bin", "/usr/local/bin", join(os.homedir(), "go/bin")];
  const found = dirs.map((d) => join(d, name)).find((p) => existsSync(p));
  if (!found) throw new Error(`${name} not found: run scripts/bench-tools.sh`);
  return found;
}

/** utime + stime of one process, in µs (Linux clock ticks are 10 ms). */
async function cpuUs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Runs `load` and charges the server's CPU during it to the requests it answered. */
async function measured(pid: number, load: () => Promise<Omit<Sample, "cpuUs">>): Promise<Sample> {
  const before = await cpuUs(pid);
  const r = await load();
  const used = (await cpuUs(pid)) - before;
  return { ...r, cpuUs: used / Math.max(1, r.rps * SECONDS) };
}

/** wrk, closed loop over 8 kept-alive HTTP/1.1 connections, one POST in flight on each. */
async function wrkLoad(url: string, body: string): Promise<Omit<Sample, "cpuUs">> {
  const r = await wrk(url, body, { seconds: SECONDS, connections: CONNECTIONS });
  return { rps: r.requestsPerSecond, p50ms: r.p50ms, p99ms: r.p99ms, errors: r.errors };
}

/** ghz over 8 HTTP/2 connections: closed loop with 8 workers, or paced at `rate` req/s. */
async function ghz(
  port: number,
  protoset: string,
  data: string,
  rate?: number,
): Promise<Omit<Sample, "cpuUs">> {
  const args = [
    "--insecure",
    "--protoset",
    protoset,
    "--call",
    "bikeshare.v1.PredictService.Predict",
    "-d",
    data,
    "--connections",
    String(CONNECTIONS),
    "-z",
    `${SECONDS}s`,
    "--format",
    "json",
    ...(rate === undefined ? ["-c", String(CONNECTIONS)] : ["-c", "64", "--rps", String(rate), "--async"]),
    `127.0.0.1:${port}`,
  ];
  const { stdout } = await run(tool("ghz"), args, { maxBuffer: 64 << 20 });
  const r = JSON.parse(stdout) as {
    count: number;
    rps: number;
    latencyDistribution: { percentage: number; latency: number }[] | null;
    errorDistribution?: Record<string, number>;
  };
  const at = (p: number) =>
    (r.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? Number.NaN) / 1e6;
  // ghz ends the calls still in flight when its time is up (Canceled, or Unavailable "transport is
  // closing"): those are not the server's failures.
  const atTheEnd = (error: string) => /code = Canceled|transport is closing/.test(error);
  const errors = Object.entries(r.errorDistribution ?? {})
    .filter(([error]) => !atTheEnd(error))
    .reduce((sum, [, n]) => sum + n, 0);
  return { rps: r.rps, p50ms: at(50), p99ms: at(99), errors };
}

async function startProcess(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{
  child: ChildProcess;
  port: number;
}> {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}`)));
    child.stdout?.once("data", (chunk: Buffer) => resolve(Number(String(chunk).trim().split("\n")[0])));
  });
  return { child, port };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

export async function transportBenchmark(): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-transport-"));
  const children: ChildProcess[] = [];
  try {
    const protoset = join(dir, "bikeshare.binpb");
    await run(join(root, "node_modules/.bin/buf"), ["build", "-o", protoset], { cwd: root });
    await buildLoadgen();
    const tsx = ["--import", "tsx"];
    const httpCeiling = await startProcess([...tsx, join(root, "bench/ceilings/http-server.ts")]);
    const grpcCeiling = await startProcess([...tsx, join(root, "bench/ceilings/grpc-server.ts")]);
    const grpcPb = await startProcess([...tsx, join(root, "bench/ceilings/grpc-server.ts"), "--protobuf"]);
    children.push(httpCeiling.child, grpcCeiling.child, grpcPb.child);

    // The server as `make start` runs it: it trains its first model, then serves with the prediction log on.
    // Spool synced (the default: an acknowledged prediction survives a power loss) and not synced
    // (BIKESHARE_SPOOL_SYNC=none: it survives a crash of the process), each with its own state.
    const startServer = async (name: string, env: Record<string, string>) => {
      const port = await freePort();
      const state = join(dir, name);
      const child = spawn(process.execPath, [join(root, "dist/cli/bikeshare.js"), "serve"], {
        env: {
          ...process.env,
          ...env,
          PORT: String(port),
          BIKESHARE_MODELS_DIR: join(state, "models"),
          BIKESHARE_DB: join(state, "bikeshare.duckdb"),
          BIKESHARE_TOKENS_FILE: join(state, "tokens.json"),
          BIKESHARE_ADMIN_TOKEN_FILE: join(state, "admin-token"),
          LOG_LEVEL: "warn",
        },
        stdio: ["ignore", "inherit", "inherit"],
      });
      children.push(child);
      const base = `http://127.0.0.1:${port}`;
      await waitReady(base, child, 300_000);
      return { port, base, pid: child.pid as number };
    };
    const [synced, unsynced] = await Promise.all([
      startServer("synced", {}),
      startServer("unsynced", { BIKESHARE_SPOOL_SYNC: "none" }),
    ]);
    const { port, base, pid } = synced;

    const one = readHourCsvRecords().map((r) => modelInput(r))[5000] as Record<string, number>;
    const rest = JSON.stringify(one);
    const connect = JSON.stringify({ conditions: one });
    const targets = {
      httpCeiling: () =>
        measured(httpCeiling.child.pid as number, () =>
          wrkLoad(`http://127.0.0.1:${httpCeiling.port}/`, rest),
        ),
      rest: () => measured(pid, () => wrkLoad(`${base}/predict`, rest)),
      connect: () => measured(pid, () => wrkLoad(`${base}/bikeshare.v1.PredictService/Predict`, connect)),
      grpcCeiling: () =>
        measured(grpcCeiling.child.pid as number, () => ghz(grpcCeiling.port, protoset, connect)),
      grpcPb: () => measured(grpcPb.child.pid as number, () => ghz(grpcPb.port, protoset, connect)),
      grpc: () => measured(pid, () => ghz(port, protoset, connect)),
      restUnsynced: () => measured(unsynced.pid, () => wrkLoad(`${unsynced.base}/predict`, rest)),
      grpcUnsynced: () => measured(unsynced.pid, () => ghz(unsynced.port, protoset, connect)),
    };
    const samples = Object.fromEntries(Object.keys(targets).map((k) => [k, [] as Sample[]])) as Record<
      keyof typeof targets,
      Sample[]
    >;
    // Warm-up (JIT, connection pools), then rounds in alternating order so a slow minute hits both sides.
    for (const load of Object.values(targets)) await load();
    const names = Object.keys(targets) as (keyof typeof targets)[];
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of round % 2 ? [...names].reverse() : names) {
        const s = await targets[name]();
        samples[name].push(s);
        console.log(
          `round ${round + 1} ${name}: ${Math.round(s.rps)} req/s, p50 ${s.p50ms.toFixed(2)} ms, ${Math.round(s.cpuUs)} µs CPU/req`,
        );
      }
    }

    const fixed = {
      rest: await fixedRateLoad(`${base}/predict`, rest, FIXED_RATE, 15),
      connect: await fixedRateLoad(`${base}/bikeshare.v1.PredictService/Predict`, connect, FIXED_RATE, 15),
      grpc: await ghz(port, protoset, connect, FIXED_RATE),
    };

    const m = (name: keyof typeof targets, key: keyof Sample) => median(samples[name].map((s) => s[key]));
    const pct = (x: number) => `${Math.round(x * 100)}%`;
    const row = (label: string, name: keyof typeof targets, ceiling?: keyof typeof targets, goal = "") =>
      `| ${label} | ${samples[name].map((s) => Math.round(s.rps)).join(", ")} | ${Math.round(m(name, "rps"))} | ${
        ceiling ? pct(m(name, "rps") / m(ceiling, "rps")) : "ceiling"
      } | ${ceiling ? pct(m(ceiling, "cpuUs") / m(name, "cpuUs")) : "100%"} | ${Math.round(m(name, "cpuUs"))} | ${m(name, "p50ms").toFixed(2)} | ${m(name, "p99ms").toFixed(2)} | ${samples[name].reduce((s, x) => s + x.errors, 0)} | ${goal} |`;
    const fixedRow = (
      label: string,
      r: { p50ms: number; p99ms: number; errors: number; requestsPerSecond?: number; rps?: number },
      how: string,
    ) =>
      `| ${label} | ${Math.round(r.requestsPerSecond ?? r.rps ?? 0)} | ${r.p50ms.toFixed(2)} | ${r.p99ms.toFixed(2)} | ${r.errors} | ${how} |`;
    const machine = `${os.cpus()[0]?.model ?? "unknown CPU"}, \`nproc\` ${os.availableParallelism()}, Linux ${os.release()}, Node ${process.version}`;
    return `${section.start}
## Transport ceilings (issue 14)

Generated by \`npx tsx bench/transport.ts\` (part of \`npm run bench\`) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${machine}, shared with the load tools. Single-row \`Predict\` (the legacy body for REST), ${CONNECTIONS}
connections, ${SECONDS} s per run, ${ROUNDS} rounds in alternating order after a warm-up; each load tool runs in its own
process (wrk -t 2, ghz). Ceilings: a bare Node \`http\` server that parses the JSON body and answers a constant, and a bare
\`@grpc/grpc-js\` server whose handler answers constant bytes (the issue's trivial handlers); "bare grpc-js + protobuf"
also decodes the request and encodes the answer with protobuf-es, which any real handler must do.
"CPU ratio" = ceiling's server CPU per request / this one's (from /proc; steadier than req/s on a shared machine).
The bikeshare server is \`node dist/cli/bikeshare.js serve\` with the model its first training job made, prediction log on;
by default every answer waits for its prediction to be synced to the spool on disk (it survives a power loss), and the
last two rows are a second server with \`BIKESHARE_SPOOL_SYNC=none\` (an answered prediction survives a crash of the
process, not of the machine): the difference is what durability costs per request.

| path | req/s of each run | median req/s | / ceiling | CPU ratio | server CPU µs/req | p50 ms | p99 ms | errors | goal |
|---|---|---|---|---|---|---|---|---|---|
${row("bare Node http, JSON (HTTP/1.1 ceiling), wrk", "httpCeiling")}
${row("legacy REST `POST /predict`, wrk", "rest", "httpCeiling", "≥ 50%")}
${row("Connect JSON over HTTP/1.1, wrk", "connect", "httpCeiling", "≥ 42%")}
${row("bare grpc-js, constant bytes (gRPC ceiling), ghz", "grpcCeiling")}
${row("bare grpc-js + protobuf, ghz", "grpcPb", "grpcCeiling")}
${row("gRPC `PredictService/Predict`, ghz", "grpc", "grpcCeiling", "≥ 75%, p50 < 2 ms")}
${row("legacy REST, spool not synced (`BIKESHARE_SPOOL_SYNC=none`), wrk", "restUnsynced", "httpCeiling")}
${row("gRPC, spool not synced, ghz", "grpcUnsynced", "grpcCeiling")}

At a fixed ${FIXED_RATE} req/s (15 s for REST and Connect through bench/loadgen, open loop, latency from each request's due
time; ${SECONDS} s for gRPC through ghz \`--rps ${FIXED_RATE} --async\`), prediction log on. Goal: p99 < 5 ms on every protocol.

| protocol | achieved req/s | p50 ms | p99 ms | errors | load |
|---|---|---|---|---|---|
${fixedRow("legacy REST", fixed.rest, "bench/loadgen")}
${fixedRow("Connect JSON, HTTP/1.1", fixed.connect, "bench/loadgen")}
${fixedRow("gRPC", fixed.grpc, "ghz")}
${section.end}
`;
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1000));
    await rm(dir, { recursive: true, force: true });
  }
}

export const currentTransportSection = () => section.current();
export const writeTransportSection = (s: string) => section.write(s);

section.runIfMain(import.meta.url, transportBenchmark);
