/**
 * What the prediction log's spool costs and what it guarantees (the "Prediction-log spool" section of
 * docs/benchmarks.md):
 * - predict latency at a fixed rate (bench/loadgen, legacy REST) against three servers on copies of the same
 *   database: without the spool (`BIKESHARE_SPOOL_DIR=off`, the memory-only log that came before it), with
 *   write-only group commits (`BIKESHARE_SPOOL_SYNC=none`) and with synced ones (O_DSYNC, the default), loaded
 *   in turns in one session, so a shared machine's drift hits all three;
 * - SIGKILL under load, five times per spool mode: rows acknowledged to tests/helpers/ack-load-child.ts that the log lacks
 *   after a restart.
 * Servers run from the sources (`node --import tsx cli/bikeshare.ts serve`), each in its own process.
 * Usage: npx tsx bench/spool.ts (also the last step of `npm run bench` unless BENCH_SPOOL=0).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { cp, mkdtemp, open, readFile, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { projectRoot } from "../services/config.js";
import { Database } from "../services/storage/database.js";
import { modelInput, readHourCsvRecords } from "../tests/helpers/hour-csv.js";
import { freePort } from "../tests/helpers/ports.js";
import { seedModels, testConfig } from "../tests/helpers/server.js";
import { docSection } from "./doc-section.js";
import { buildLoadgen, fixedRateLoad, type LoadResult } from "./fixed-rate.js";

const section = docSection("spool");
const { start: START, end: END } = section;
const root = projectRoot();
const SECONDS = 15;
const RUNS_200 = 5;
const RUNS_500 = 3;
const KILLS = 5;
const KILL_RATE = 500;

interface Server {
  url: string;
  /** The end of the server's log (JSON lines), to tell why requests failed. */
  logTail(): Promise<string>;
  start(): Promise<void>;
  stop(signal: "SIGKILL" | "SIGTERM"): Promise<void>;
}

function server(dir: string, port: number, env: Record<string, string>): Server {
  let child: ChildProcess | undefined;
  const url = `http://127.0.0.1:${port}`;
  const logPath = join(dir, "server.log");
  return {
    url,
    logTail: async () => (await readFile(logPath, "utf8")).split("\n").slice(-20).join("\n"),
    async start() {
      const out = openSync(logPath, "a");
      const c = spawn(process.execPath, ["--import", "tsx", join(root, "cli/bikeshare.ts"), "serve"], {
        env: {
          ...process.env,
          PORT: String(port),
          BIKESHARE_DB: join(dir, "bikeshare.duckdb"),
          BIKESHARE_MODELS_DIR: join(dir, "models"),
          BIKESHARE_TOKENS_FILE: join(dir, "tokens.json"),
          BIKESHARE_ADMIN_TOKEN_FILE: join(dir, "admin-token"),
          BIKESHARE_CHECK_INTERVAL_SECONDS: "0",
          LOG_LEVEL: "warn",
          ...env,
        },
        stdio: ["ignore", out, "inherit"],
      });
      closeSync(out);
      child = c;
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        if (c.exitCode !== null) throw new Error(`server in ${dir} exited with ${c.exitCode}`);
        try {
          if ((await fetch(`${url}/readyz`)).ok) return;
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`server in ${dir} not ready within 120 s`);
    },
    async stop(signal) {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once("exit", () => resolve());
        c.kill(signal);
      });
    },
  };
}

/** One kill: load from ack-load-child until `acks` rows are acknowledged, SIGKILL, and the keys acknowledged. */
async function killUnderLoad(s: Server, firstKey: number, acks: number): Promise<number[]> {
  const load = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(root, "tests/helpers/ack-load-child.ts"),
      s.url,
      String(KILL_RATE),
      "120",
      String(firstKey),
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  const keys: number[] = [];
  let killing: Promise<void> | undefined;
  createInterface({ input: load.stdout }).on("line", (line) => {
    if (!line.startsWith("ack ")) return;
    keys.push(Number(line.slice(4)));
    if (keys.length >= acks && !killing) killing = s.stop("SIGKILL");
  });
  const code = await new Promise<number | null>((resolve) => load.on("exit", resolve));
  if (!killing) throw new Error(`the load ended (exit ${code}) after ${keys.length} acknowledged rows`);
  await killing;
  return keys;
}

/** One small write + fdatasync at a time, 200 a second, on the spool's disk: the floor under the default's latency. */
async function fdatasyncLatency(dir: string): Promise<{ p50ms: number; p99ms: number; count: number }> {
  const file = await open(join(dir, "fdatasync-probe"), "a");
  const record = Buffer.alloc(400, 1);
  const times: number[] = [];
  try {
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      await file.write(record);
      await file.datasync();
      times.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    await file.close();
  }
  times.sort((a, b) => a - b);
  return { p50ms: times[500] as number, p99ms: times[990] as number, count: times.length };
}

const f2 = (x: number) => x.toFixed(2);
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export async function spoolBenchmark(): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), "bikeshare-bench-spool-"));
  try {
    const seed = join(dir, "seed");
    await seedModels(await testConfig(seed), 1);
    // Each server and each kill series gets its own copy of the seeded database.
    const copy = async (name: string) => {
      await cp(seed, join(dir, name), { recursive: true });
      return join(dir, name);
    };
    const modes = [
      { name: "off", env: { BIKESHARE_SPOOL_DIR: "off" } },
      { name: "write", env: { BIKESHARE_SPOOL_SYNC: "none" } },
      { name: "fdatasync", env: {} },
    ] as const;
    const servers = await Promise.all(
      modes.map(async (m) => ({ ...m, server: server(await copy(m.name), await freePort(), m.env) })),
    );
    for (const { server: s } of servers) await s.start();
    await buildLoadgen();
    const body = JSON.stringify(modelInput(readHourCsvRecords()[5000] as Record<string, number>));
    // Warm each up (JIT, ONNX session, DuckDB) before anything is measured.
    for (const { server: s } of servers) await fixedRateLoad(`${s.url}/predict`, body, 200, 3);

    const runs = new Map<string, LoadResult[]>();
    const sample = async (rate: number, count: number) => {
      for (let i = 0; i < count; i++) {
        for (const { name, server: s } of servers) {
          const r = await fixedRateLoad(`${s.url}/predict`, body, rate, SECONDS);
          if (r.errors > 0) {
            throw new Error(
              `${r.errors} of ${r.total} requests failed (spool ${name}); server log:\n${await s.logTail()}`,
            );
          }
          runs.set(`${rate} ${name}`, [...(runs.get(`${rate} ${name}`) ?? []), r]);
          console.log(`${rate} req/s, spool ${name}: p50 ${f2(r.p50ms)} ms, p99 ${f2(r.p99ms)} ms`);
        }
      }
    };
    await sample(200, RUNS_200);
    await sample(500, RUNS_500);
    for (const { server: s } of servers) await s.stop("SIGTERM");
    const disk = await fdatasyncLatency(dir);
    console.log(`fdatasync alone: p50 ${f2(disk.p50ms)} ms, p99 ${f2(disk.p99ms)} ms`);

    const kills = new Map<string, { lost: number; acknowledged: number; twice: number }>();
    for (const m of modes.filter((m) => m.name !== "off")) {
      const killDir = await copy(`kill-${m.name}`);
      const killed = server(killDir, await freePort(), m.env);
      const acknowledged: number[] = [];
      for (let kill = 0; kill < KILLS; kill++) {
        await killed.start();
        // Two seconds' worth of acknowledged rows before each kill (more arrive while the kill is on its way).
        const keys = await killUnderLoad(killed, kill * 1_000_000, 2 * KILL_RATE);
        acknowledged.push(...keys);
        console.log(`spool ${m.name}, kill ${kill + 1}: ${keys.length} rows acknowledged`);
      }
      await killed.start(); // replays what the last kill left
      await killed.stop("SIGTERM");
      const db = await Database.open(join(killDir, "bikeshare.duckdb"));
      const rows = await db.all<{ key: number; n: number }>(
        `SELECT round(temp * 1e7)::INTEGER AS key, count(*)::INTEGER AS n FROM predictions GROUP BY key`,
      );
      await db.close();
      const logged = new Map(rows.map((r) => [r.key, r.n]));
      const result = {
        lost: acknowledged.filter((k) => !logged.has(k)).length,
        acknowledged: acknowledged.length,
        twice: rows.filter((r) => r.n > 1).length,
      };
      kills.set(m.name, result);
      console.log(`spool ${m.name}, kills: ${JSON.stringify(result)}`);
    }

    const line = (rate: number, name: string) => {
      const r = runs.get(`${rate} ${name}`) ?? [];
      const p99 = (x: LoadResult[]) => median(x.map((l) => l.p99ms));
      const base = p99(runs.get(`${rate} off`) ?? []);
      return `| ${rate} | ${name} | ${r.map((l) => f2(l.p99ms)).join(", ")} | ${f2(p99(r))} | ${(p99(r) / base).toFixed(2)}× | ${f2(median(r.map((l) => l.p50ms)))} |`;
    };
    const rows = [200, 500].flatMap((rate) => modes.map((m) => line(rate, m.name))).join("\n");
    const killLine = (name: string) => {
      const k = kills.get(name);
      return `${k?.lost} of ${k?.acknowledged} acknowledged rows lost, ${k?.twice} logged twice`;
    };
    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(", ");
    const machine = `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, Linux ${os.release()}, Node ${process.version}`;
    return `${START}
## Prediction-log spool

Generated by \`npx tsx bench/spool.ts\` (also the last step of \`npm run bench\`) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${machine}; load average at the end ${load}. A shared machine: other work ran beside it, on the
same CPU and disk, so absolute figures are noisy; the ratios to the spool-off server, measured in runs taken in
turns in one session, are what carries over.

A prediction is answered only after its log entry is in the local spool (docs/operations.md, "Prediction log
durability"). Cost, as predict latency at a fixed rate (bench/loadgen, legacy \`POST /predict\`, ${SECONDS} s per run,
open loop) against three servers on copies of one database, loaded in turns: spool off (\`BIKESHARE_SPOOL_DIR=off\`,
the memory-only log as it was before), spool with write only (\`BIKESHARE_SPOOL_SYNC=none\`), and the default,
one \`O_DSYNC\` write (as write + \`fdatasync\`) per group commit. On the same disk, in the same session, one 400-byte write + \`fdatasync\`
alone took p50 ${f2(disk.p50ms)} ms, p99 ${f2(disk.p99ms)} ms (${disk.count} at 200/s).

| req/s | spool | p99 ms of each run | median p99 ms | / off | median p50 ms |
|---|---|---|---|---|---|
${rows}

No request failed. Kills: ${KILLS} SIGKILLs at ${KILL_RATE} req/s per mode (tests/helpers/ack-load-child.ts: legacy single and
two-row batch, Connect Predict, in turns; a row counts as acknowledged once its 200 reply was read whole), each after
at least ${2 * KILL_RATE} acknowledged rows, restarting on the same database in between. fdatasync: **${killLine("fdatasync")}**;
write only: **${killLine("write")}**. Before the spool, the same kind of kill lost the entries of the last ≤ 250 ms
(the memory buffer's flush interval): 20–100 rows per kill in issue 11's review.
${END}
`;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const currentSpoolSection = section.current;
export const writeSpoolSection = section.write;

section.runIfMain(import.meta.url, spoolBenchmark);
