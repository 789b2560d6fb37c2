/**
 * Issue 13's figures (the "Scale-out" section of docs/benchmarks.md), all in one session on one
 * PostgreSQL cluster (tests/helpers/postgres.ts) and one database, with a real trained model:
 * - `POST /predict` throughput (closed loop, 8 connections) of `serve --workers 1` and `--workers 2`;
 * - through HAProxy (the shipped ops/haproxy/haproxy.cfg, addresses rewritten) in front of two
 *   `--role predict` replicas and one `--role control` process: throughput, and latency at a fixed
 *   1,000 req/s (bench/loadgen);
 * - predict latency at a fixed 500 req/s of one `serve` on PostgreSQL and one on embedded DuckDB.
 * Servers run from the sources (tests/helpers/serve-process.ts), each in its own process; the servers
 * compared in each part run in turns, round after round, so a shared machine's drift hits all of them.
 * Usage: npx tsx bench/scale-out.ts, or npm run bench:scale-out (also a step of `npm run bench` unless
 * BENCH_SCALE_OUT=0).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { startHaproxy } from "../tests/helpers/haproxy.js";
import { modelInput, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { startPostgres } from "../tests/helpers/postgres.js";
import {
  freePort,
  predictOnce,
  type ServeProcess,
  serveEnv,
  startServe,
} from "../tests/helpers/serve-process.js";
import { seedModels, testConfig } from "../tests/helpers/server.js";
import { docSection } from "./doc-section.js";
import { buildLoadgen, fixedRateLoad, type LoadResult } from "./fixed-rate.js";
import { wrk } from "./wrk.js";

const section = docSection("scale-out");
const { start: START, end: END } = section;
const CONNECTIONS = 8;
/** Also more connections than 8, so that the figure is not only the round trip of 8 requests in flight. */
const MORE_CONNECTIONS = 32;
const THROUGHPUT_SECONDS = 10;
const LATENCY_SECONDS = 15;
const ROUNDS = 3;
const LB_RATE = 1000;
const BACKEND_RATE = 500;
const SHIPPED = "haproxy.cfg as shipped";
const DIRECT = "1 predict replica, direct";
const CEILING = "bare node:cluster ceiling, workers";

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface ClosedLoopResult extends LoadResult {
  /** CPU the load generator itself used, in cores: it runs on the same 2 cores. */
  generatorCores: number;
}

/** wrk in its own process (as the issue asks), closed loop, plus what the generator cost the machine. */
async function closedLoop(
  url: string,
  body: string,
  seconds: number,
  connections = CONNECTIONS,
): Promise<ClosedLoopResult> {
  return wrk(url, body, { seconds, connections });
}

/** `serve` ready to predict: `processes` "serving" log lines (one per worker), then /readyz 200. */
async function serve(args: string[], env: NodeJS.ProcessEnv, processes = 1): Promise<ServeProcess> {
  const p = await startServe(args, env, (p) =>
    p.waitForLog(() => p.logs.filter((l) => l.msg === "serving").length >= processes, 120_000),
  );
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    // Refused until the port opens: polled again until the deadline, which then fails loudly.
    if ((await fetch(`${p.baseUrl}/readyz`).catch(() => undefined))?.status === 200) return p;
    await sleep(100);
  }
  await p.stop();
  throw new Error(`serve ${args.join(" ")} on port ${p.port} was not ready within 60 s: ${p.stderr()}`);
}

/** bench/ceilings/cluster-server.ts with `workers` processes burning `burnMicros` of CPU a request. */
async function startCeiling(
  workers: number,
  burnMicros: number,
): Promise<{ child: ChildProcess; baseUrl: string }> {
  const script = join(import.meta.dirname, "ceilings/cluster-server.ts");
  const args = ["--import", "tsx", script, "0", String(workers), String(Math.round(burnMicros))];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`cluster-server.ts exited with ${code}`)));
    child.stdout?.once("data", (chunk: Buffer) => resolve(Number(String(chunk).trim().split("\n")[0])));
  });
  return { child, baseUrl: `http://127.0.0.1:${port}` };
}

/** Server CPU per request (µs) of one closed-loop run against `baseUrl`, the server being `pid` and its children. */
async function cpuPerRequest(pid: number, baseUrl: string, body: string): Promise<number> {
  const before = await cpuSnapshot([pid]);
  const r = await closedLoop(`${baseUrl}/predict`, body, 5);
  const used = coresUsed(before, await cpuSnapshot([pid]));
  return ((used.trees[0] ?? 0) * 1e6) / r.requestsPerSecond;
}

/** Rows this server has predicted (bikeshare_predictions_total over every version and worker). */
async function predicted(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("bikeshare_predictions_total"))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

/** CPU time of processes, from Linux /proc (clock ticks of 10 ms). */
interface CpuSnapshot {
  at: number;
  /** Per root pid: ticks of it and its descendants. */
  trees: number[];
  machine: number;
}

async function cpuSnapshot(roots: number[]): Promise<CpuSnapshot> {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    if (stat === "") continue; // it exited meanwhile
    // Fields after the command name (which may hold spaces): state, ppid, …, utime, stime, cutime, cstime.
    const f = stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
    procs.set(Number(entry), {
      ppid: f[1] as number,
      ticks: (f[11] as number) + (f[12] as number) + (f[13] as number) + (f[14] as number),
    });
  }
  const tree = (root: number): number => {
    let ticks = procs.get(root)?.ticks ?? 0;
    for (const [pid, p] of procs) if (p.ppid === root && pid !== root) ticks += tree(pid);
    return ticks;
  };
  const [, ...cpu] = ((await readFile("/proc/stat", "utf8")).split("\n")[0] as string).trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = cpu.map(Number) as number[];
  return {
    at: performance.now(),
    trees: roots.map(tree),
    machine: (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0),
  };
}

/** Cores used between two snapshots: per root, then the whole machine. */
function coresUsed(before: CpuSnapshot, after: CpuSnapshot): { trees: number[]; machine: number } {
  const seconds = (after.at - before.at) / 1000;
  const cores = (ticks: number) => ticks / 100 / seconds;
  return {
    trees: after.trees.map((t, i) => cores(t - (before.trees[i] ?? 0))),
    machine: cores(after.machine - before.machine),
  };
}

/** The PostgreSQL postmaster on `port` (its backends are its children). */
async function postmasterPid(port: number): Promise<number> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    const p = argv.indexOf("-p");
    if (argv[0]?.endsWith("postgres") && p >= 0 && argv[p + 1] === String(port)) return Number(entry);
  }
  throw new Error(`no postmaster listens on port ${port}`);
}

type Measured<R> = R & {
  /** Cores used during the run by the server (with its workers), PostgreSQL, and the machine as a whole. */
  serverCores: number;
  postgresCores: number;
  machineCores: number;
};

/** Every load in `loads`, in turns, `ROUNDS` times; each load's results in order, with the CPU it took. */
async function inTurns<R extends LoadResult>(
  postmaster: number,
  loads: { name: string; pids: number[]; run: () => Promise<R> }[],
): Promise<Map<string, Measured<R>[]>> {
  const results = new Map<string, Measured<R>[]>(loads.map((l) => [l.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const { name, pids, run } of loads) {
      const roots = [postmaster, ...pids];
      const before = await cpuSnapshot(roots);
      const r = await run();
      const used = coresUsed(before, await cpuSnapshot(roots));
      if (r.errors > 0) throw new Error(`${name}: ${r.errors} of ${r.total} requests failed`);
      const [postgresCores = 0, ...servers] = used.trees;
      const serverCores = servers.reduce((a, b) => a + b, 0);
      results.get(name)?.push({ ...r, serverCores, postgresCores, machineCores: used.machine });
      console.log(
        `${name}: ${Math.round(r.requestsPerSecond)} req/s, p50 ${f2(r.p50ms)} ms, p99 ${f2(r.p99ms)} ms; cores: server ${f2(serverCores)}, PostgreSQL ${f2(postgresCores)}, machine ${f2(used.machine)}`,
      );
    }
  }
  return results;
}

export async function scaleOutBenchmark(): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-bench-scale-out-"));
  const postgres = await startPostgres();
  const running: ServeProcess[] = [];
  const children: ChildProcess[] = [];
  const stopAll = async () => {
    for (const b of children.splice(0)) b.kill("SIGTERM");
    await Promise.all(running.splice(0).map((p) => p.stop()));
  };
  try {
    const url = await postgres.createDatabase();
    const duckDir = join(dir, "duckdb");
    await Promise.all([mkdir(join(dir, "models"), { recursive: true }), mkdir(duckDir)]);
    // A real model on each backend: the quickest real training job (one gradient-boosted candidate).
    const seedStarted = performance.now();
    await seedModels(await testConfig(join(dir, "seed"), { databaseUrl: url }), 1);
    await seedModels(await testConfig(duckDir), 1);
    console.log(`seeded both backends in ${f1((performance.now() - seedStarted) / 1000)} s`);
    await buildLoadgen();
    const body = JSON.stringify(modelInput(readHourCsvRecords()[5000] as Record<string, number>));
    const on = async (name: string, args: string[], databaseUrl: string | undefined, processes = 1) => {
      const port = await freePort();
      const extra: Record<string, string> =
        databaseUrl === undefined
          ? { BIKESHARE_DB: join(duckDir, "bikeshare.duckdb"), BIKESHARE_MODELS_DIR: join(duckDir, "models") }
          : { BIKESHARE_MODELS_DIR: join(dir, "models") };
      const p = await serve(args, serveEnv(join(dir, name), databaseUrl, port, extra), processes);
      running.push(p);
      return p;
    };
    const warm = (baseUrl: string) => closedLoop(`${baseUrl}/predict`, body, 3);
    const postmaster = await postmasterPid(postgres.port);
    const pids = (...ps: (ServeProcess | ChildProcess)[]) =>
      ps.map((p) => ("child" in p ? p.child.pid : p.pid) as number);

    // 1. --workers 1 vs --workers 2, one port each, on the same database.
    const w1 = await on("workers-1", [], url);
    const w2 = await on("workers-2", ["--workers", "2"], url, 2);
    for (const p of [w1, w2]) await warm(p.baseUrl);
    // Each new connection goes to the next worker: a load on one connection only would prove nothing.
    const answered = new Set<string | undefined>();
    for (let i = 0; i < 4; i++) answered.add((await predictOnce(w2.baseUrl)).worker);
    if (answered.size !== 2) throw new Error(`--workers 2 answered from workers ${[...answered].join(", ")}`);
    // The ceiling: a bare cluster server that costs what one bikeshare request costs, measured here.
    const bikeshareMicros = await cpuPerRequest(pids(w1)[0] as number, w1.baseUrl, body);
    const bare = await startCeiling(1, 0);
    children.push(bare.child);
    const bareMicros = await cpuPerRequest(bare.child.pid as number, bare.baseUrl, body);
    const burnMicros = Math.max(0, bikeshareMicros - bareMicros);
    const ceilings = [await startCeiling(1, burnMicros), await startCeiling(2, burnMicros)];
    children.push(...ceilings.map((c) => c.child));
    for (const c of ceilings) await warm(c.baseUrl);
    const workerLoads = [
      ...[CONNECTIONS, MORE_CONNECTIONS].flatMap((connections) =>
        [w1, w2].map((w, i) => ({
          name: `--workers ${i + 1}, ${connections} connections`,
          pids: pids(w),
          run: () => closedLoop(`${w.baseUrl}/predict`, body, THROUGHPUT_SECONDS, connections),
        })),
      ),
      ...ceilings.map((c, i) => ({
        name: `${CEILING} ${i + 1}`,
        pids: pids(c.child),
        run: () => closedLoop(`${c.baseUrl}/predict`, body, THROUGHPUT_SECONDS, CONNECTIONS),
      })),
    ];
    const workers = await inTurns(postmaster, workerLoads);
    await stopAll();

    // 2. Two predict replicas and a control process behind HAProxy; one replica alone for reference.
    const control = await on("control", ["--role", "control"], url);
    const replicas = [
      await on("predict-1", ["--role", "predict"], url),
      await on("predict-2", ["--role", "predict"], url),
    ];
    const ports = replicas.map((r) => r.port);
    const shipped = await startHaproxy({
      dir,
      name: "shipped",
      predictPorts: ports,
      controlPort: control.port,
      log: false,
    });
    children.push(shipped.child);
    const lbs = [{ name: SHIPPED, ...shipped }];
    for (const p of [...lbs.map((l) => l.url), replicas[0]?.baseUrl as string]) await warm(p);
    const behind = (lb: { child: ChildProcess }) => pids(...replicas, control, lb.child);
    const lbThroughput = await inTurns(postmaster, [
      ...lbs.map((lb) => ({
        name: lb.name,
        pids: behind(lb),
        run: () => closedLoop(`${lb.url}/predict`, body, THROUGHPUT_SECONDS),
      })),
      {
        name: DIRECT,
        pids: pids(replicas[0] as ServeProcess),
        run: () => closedLoop(`${replicas[0]?.baseUrl}/predict`, body, THROUGHPUT_SECONDS),
      },
    ]);
    const servedBefore = await Promise.all(replicas.map((r) => predicted(r.baseUrl)));
    const lbFixed = await inTurns(
      postmaster,
      lbs.map((lb) => ({
        name: lb.name,
        pids: behind(lb),
        run: () => fixedRateLoad(`${lb.url}/predict`, body, LB_RATE, LATENCY_SECONDS),
      })),
    );
    const served = await Promise.all(
      replicas.map(async (r, i) => (await predicted(r.baseUrl)) - (servedBefore[i] ?? 0)),
    );
    await stopAll();

    // 3. One `serve` per backend at a fixed rate.
    const pg = await on("backend-postgres", [], url);
    const duck = await on("backend-duckdb", [], undefined);
    for (const p of [pg, duck]) await fixedRateLoad(`${p.baseUrl}/predict`, body, BACKEND_RATE, 3);
    const backends = await inTurns(postmaster, [
      {
        name: "PostgreSQL",
        pids: pids(pg),
        run: () => fixedRateLoad(`${pg.baseUrl}/predict`, body, BACKEND_RATE, LATENCY_SECONDS),
      },
      {
        name: "DuckDB (embedded)",
        pids: pids(duck),
        run: () => fixedRateLoad(`${duck.baseUrl}/predict`, body, BACKEND_RATE, LATENCY_SECONDS),
      },
    ]);
    await stopAll();

    type Runs = Measured<LoadResult & { generatorCores?: number }>[] | undefined;
    const med = (runs: Runs, pick: (r: NonNullable<Runs>[number]) => number) =>
      median((runs ?? []).map(pick));
    const each = (runs: Runs, pick: (r: NonNullable<Runs>[number]) => string) =>
      (runs ?? []).map(pick).join(", ");
    const cores = (runs: Runs) =>
      `${f2(med(runs, (r) => r.serverCores))} | ${f2(med(runs, (r) => r.postgresCores))} | ${runs?.[0]?.generatorCores === undefined ? "" : `${f2(med(runs, (r) => r.generatorCores ?? 0))} | `}${f2(med(runs, (r) => r.machineCores))}`;
    const throughputRow = (name: string, runs: Runs, base: number) =>
      `| ${name} | ${each(runs, (r) => String(Math.round(r.requestsPerSecond)))} | **${Math.round(med(runs, (r) => r.requestsPerSecond))}** | ${(med(runs, (r) => r.requestsPerSecond) / base).toFixed(2)}× | ${f2(med(runs, (r) => r.p99ms))} | ${cores(runs)} |`;
    const latencyRow = (name: string, runs: Runs, base?: number) =>
      `| ${name} | ${each(runs, (r) => f2(r.p99ms))} | **${f2(med(runs, (r) => r.p99ms))}** | ${base === undefined ? "" : `${(med(runs, (r) => r.p99ms) / base).toFixed(2)}× | `}${f2(med(runs, (r) => r.p50ms))} | ${each(runs, (r) => String(Math.round(r.requestsPerSecond)))} | ${cores(runs)} |`;
    const workerRps = (n: number, connections: number) =>
      med(workers.get(`--workers ${n}, ${connections} connections`), (r) => r.requestsPerSecond);
    const workerRows = [CONNECTIONS, MORE_CONNECTIONS]
      .flatMap((c) =>
        [1, 2].map((n) =>
          throughputRow(
            `\`serve --workers ${n}\`, ${c} connections`,
            workers.get(`--workers ${n}, ${c} connections`),
            workerRps(1, c),
          ),
        ),
      )
      .join("\n");
    const ceilingRps = (n: number) => med(workers.get(`${CEILING} ${n}`), (r) => r.requestsPerSecond);
    const ceilingRows = [1, 2]
      .map((n) =>
        throughputRow(
          `bare cluster server burning ${Math.round(burnMicros)} µs a request, ${n} worker${n > 1 ? "s" : ""}, ${CONNECTIONS} connections`,
          workers.get(`${CEILING} ${n}`),
          ceilingRps(1),
        ),
      )
      .join("\n");
    const directRps = med(lbThroughput.get(DIRECT), (r) => r.requestsPerSecond);
    const duckP99 = med(backends.get("DuckDB (embedded)"), (r) => r.p99ms);
    const summary = {
      workersRatio: [CONNECTIONS, MORE_CONNECTIONS].map((c) => workerRps(2, c) / workerRps(1, c)),
      ceilingRatio: ceilingRps(2) / ceilingRps(1),
      lb: lbs.map((lb) => ({
        name: lb.name,
        rps: med(lbThroughput.get(lb.name), (r) => r.requestsPerSecond),
        p99AtRate: med(lbFixed.get(lb.name), (r) => r.p99ms),
      })),
      postgresP99: med(backends.get("PostgreSQL"), (r) => r.p99ms),
      duckdbP99: duckP99,
    };
    console.log(JSON.stringify(summary));
    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(", ");
    return `${START}
## Scale-out: workers, replicas behind HAProxy, PostgreSQL vs DuckDB

Generated by \`npm run bench:scale-out\` (bench/scale-out.ts; also the last step of \`npm run bench\`) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${os.cpus()[0]?.model ?? "unknown CPU"}, \`nproc\` ${os.availableParallelism()}, Linux ${os.release()}, Node ${process.version};
load average at the end ${load}. A shared machine: other work may run beside it, so absolute figures are
noisy; the servers compared in each table ran in one session, loaded in turns (${ROUNDS} rounds), and the
ratios between them are what carries over. Everything shares the same cores: servers, PostgreSQL, HAProxy and
load generators; the CPU columns (cores used during the run, from /proc) say where the time went: where
"machine" is well above the columns before it, other work had part of the cores, and those runs say little
about what a second core gives. Servers run
from the sources (\`node --import tsx cli/bikeshare.ts serve\`); the request is legacy \`POST /predict\` with
one row; the model is real, from the quickest real training job (one gradient-boosted candidate, no search).
PostgreSQL is a throwaway cluster (tests/helpers/postgres.ts) with \`fsync=off\`: its commits cost no disk
flush here, a production server's would. Every server's prediction-log spool syncs, as by default.

**\`--workers\`** (one port, node:cluster), both on the same PostgreSQL database, closed loop
(${THROUGHPUT_SECONDS} s per run; all four loaded in turns). The load generator (wrk -t 2) runs in its own process;
the "generator" column is its CPU use.

| server, load | req/s of each run | median req/s | / 1 worker | median p99 ms | server, cores | PostgreSQL, cores | generator, cores | machine, cores |
|---|---|---|---|---|---|---|---|---|
${workerRows}
${ceilingRows}

The last two rows are the machine's own limit for this figure (bench/ceilings/cluster-server.ts): a bare
node:cluster server that parses the JSON body and then burns ${Math.round(burnMicros)} µs of CPU, which with its
HTTP work makes what one \`--workers 1\` request cost in this run (${Math.round(bikeshareMicros)} µs of server CPU).
Loaded the same way, in the same turns, its 2-worker/1-worker ratio is what a second core gives a server of
that cost on this machine while wrk and PostgreSQL take their share of the same two cores; a ratio of
bikeshare below it is bikeshare's own loss, and the part of the issue's 1.5× above it is the machine's.

**Behind HAProxy**: two \`serve --role predict\` replicas and one \`serve --role control\` on one PostgreSQL
database, ops/haproxy/haproxy.cfg with only its addresses changed (as tests/services/scale-out.test.ts runs it)
and its per-request log line removed; \`balance leastconn\`, HTTP/2 to the replicas.
Closed loop with ${CONNECTIONS} connections, through HAProxy and, in turns, straight to one of the replicas; the "server" column
adds up both replicas, the control process and HAProxy (one replica alone for the direct row):

| target | req/s of each run | median req/s | / 1 replica direct | median p99 ms | server, cores | PostgreSQL, cores | generator, cores | machine, cores |
|---|---|---|---|---|---|---|---|---|
${lbs.map((lb) => throughputRow(lb.name, lbThroughput.get(lb.name), directRps)).join("\n")}
${throughputRow(DIRECT, lbThroughput.get(DIRECT), directRps)}

At a fixed ${LB_RATE} req/s through HAProxy (bench/loadgen: open loop in its own process, ${LATENCY_SECONDS} s per run,
latency counted from each request's due time):

| HAProxy | p99 ms of each run | median p99 ms | median p50 ms | achieved req/s | server, cores | PostgreSQL, cores | machine, cores |
|---|---|---|---|---|---|---|---|
${lbs.map((lb) => latencyRow(lb.name, lbFixed.get(lb.name))).join("\n")}

HAProxy split these fixed-rate runs ${served.join(" / ")} rows between the two replicas (their
\`bikeshare_predictions_total\`).

**PostgreSQL vs embedded DuckDB**: one \`serve\` (role \`all\`, one worker) on each, the same kind of model
registered on each, at a fixed ${BACKEND_RATE} req/s (bench/loadgen, ${LATENCY_SECONDS} s per run):

| backend | p99 ms of each run | median p99 ms | / DuckDB | median p50 ms | achieved req/s | server, cores | PostgreSQL, cores | machine, cores |
|---|---|---|---|---|---|---|---|---|
${latencyRow("PostgreSQL", backends.get("PostgreSQL"), duckP99)}
${latencyRow("DuckDB (embedded)", backends.get("DuckDB (embedded)"), duckP99)}

No request failed in any run.
${END}
`;
  } finally {
    await stopAll();
    await postgres.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

export const currentScaleOutSection = section.current;
export const writeScaleOutSection = section.write;

section.runIfMain(import.meta.url, scaleOutBenchmark);
