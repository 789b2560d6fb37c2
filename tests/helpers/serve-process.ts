import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { Registry } from "../../services/registry/registry.js";
import { openDatabase } from "../../services/storage/open.js";
import { HOUR_CSV, SUMMER_EVENING } from "./hour-csv.js";
import { freePort } from "./ports.js";
import { registerTinyModel } from "./tiny-model.js";

const CLI = join(import.meta.dirname, "../../cli/bikeshare.ts");

export type LogLine = Record<string, unknown> & { msg: string };

/** `bikeshare serve` as its own process (from the TypeScript sources), its JSON log lines collected. */
export interface ServeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly baseUrl: string;
  readonly logs: LogLine[];
  readonly stderr: () => string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** SIGTERM, then SIGKILL after 10 s; resolves once it has exited. */
  stop(): Promise<void>;
}

/** The environment of a server on a shared PostgreSQL database, with files of its own under `dir`. */
export function serveEnv(
  dir: string,
  databaseUrl: string | undefined,
  port: number,
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PORT: String(port),
    HOST: "127.0.0.1",
    ...(databaseUrl ? { BIKESHARE_DATABASE_URL: databaseUrl } : {}),
    BIKESHARE_MODELS_DIR: join(dir, "models"),
    // Each process's spool lives next to its own (unused with PostgreSQL) database path.
    BIKESHARE_DB: join(dir, `serve-${port}.duckdb`),
    BIKESHARE_TOKENS_FILE: join(dir, "tokens.json"),
    BIKESHARE_ADMIN_TOKEN_FILE: join(dir, "admin-token"),
    BIKESHARE_DATA: HOUR_CSV,
    BIKESHARE_CHECK_INTERVAL_SECONDS: "0",
    BIKESHARE_AUTO_RETRAIN: "false",
    SCORING_DIR: join(dir, "scoring"),
    ...extra,
  };
}

export async function startServe(
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: (p: ServeProcess) => Promise<unknown> = (p) => p.waitForLog((l) => l.msg === "serving"),
): Promise<ServeProcess> {
  const port = Number(env.PORT);
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "serve", ...args], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: LogLine[] = [];
  const waiters = new Set<() => void>();
  let partial = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ msg: line });
      }
    }
    for (const wake of [...waiters]) wake();
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let done = false;
  const exited = new Promise<number | string>((resolve) =>
    child.on("exit", (code, signal) => {
      // Before waking the waiters: each checks `done` to stop waiting for a line that cannot come.
      done = true;
      for (const wake of [...waiters]) wake();
      resolve(code ?? signal ?? -1);
    }),
  );
  const proc: ServeProcess = {
    child,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    logs,
    stderr: () => stderr,
    exited,
    waitForLog(match, timeoutMs = 60_000) {
      return new Promise<LogLine>((resolve, reject) => {
        const check = () => {
          const found = logs.find(match);
          if (found) finish(() => resolve(found));
          else if (done) finish(() => reject(new Error(`the server exited before the log line: ${stderr}`)));
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`no such log line within ${timeoutMs} ms: ${stderr}`))),
          timeoutMs,
        );
        const finish = (then: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          then();
        };
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (done) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  try {
    await ready(proc);
  } catch (error) {
    await proc.stop();
    throw error;
  }
  return proc;
}

/** Registers `count` tiny models (versions 1..count) on the database at `url`, `production` on version 1. */
export async function seedTinyVersions(url: string, modelsDir: string, count: number): Promise<void> {
  const db = await openDatabase({ dbPath: "", databaseUrl: url });
  try {
    const registry = await Registry.open(db, modelsDir);
    for (let i = 0; i < count; i++) await registerTinyModel(registry, "bike-demand");
    await registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: "1",
      actor: "test",
      reason: "seed",
      force: true,
    });
  } finally {
    await db.close();
  }
}

/** POST /predict with a valid record; the version that answered, or the HTTP status when it failed. */
export async function predictOnce(
  baseUrl: string,
): Promise<{ status: number; version?: string; worker?: string }> {
  const res = await fetch(`${baseUrl}/predict`, {
    method: "POST",
    headers: { "content-type": "application/json", connection: "close" },
    body: JSON.stringify(SUMMER_EVENING),
  });
  const body = (await res.json()) as { model_version?: string };
  const worker = res.headers.get("x-bikeshare-worker") ?? undefined;
  return {
    status: res.status,
    ...(body.model_version !== undefined ? { version: String(body.model_version) } : {}),
    ...(worker !== undefined ? { worker } : {}),
  };
}

export { freePort };
