import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Registry } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";

const ROOT = resolve(import.meta.dirname, "../..");
const CHILD = join(ROOT, "tests/helpers/registry-crash-child.ts");

let dir: string;
let dbPath: string;
let artifactsDir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-registry-crash-"));
  dbPath = join(dir, "bikeshare.duckdb");
  artifactsDir = join(dir, "artifacts");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Child {
  process: ChildProcess;
  lines: string[];
  stderr: string[];
  /** Resolves with the first line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<NodeJS.Signals | number | null>;
}

function startChild(mode: string, db: string, artifacts: string): Child {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode, db, artifacts], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (data: string) => {
    buffered += data;
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      for (const w of waiters.filter((w) => w.pattern.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (data: string) => stderr.push(data));
  const exited = new Promise<NodeJS.Signals | number | null>((done) => {
    child.on("exit", (code, signal) => done(signal ?? code));
  });
  return {
    process: child,
    lines,
    stderr,
    exited,
    waitFor(pattern, timeoutMs = 30_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child never printed ${pattern}; stderr: ${stderr.join("")}`)),
          timeoutMs,
        );
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(() => {
          if (!lines.some((l) => pattern.test(l))) {
            clearTimeout(timer);
            reject(new Error(`child exited before printing ${pattern}; stderr: ${stderr.join("")}`));
          }
        });
      });
    },
  };
}

const lastNumber = (lines: readonly string[], prefix: string): number =>
  Math.max(
    0,
    ...lines.filter((l) => l.startsWith(`${prefix} `)).map((l) => Number(l.slice(prefix.length + 1))),
  );

describe("crash safety (SIGKILL)", () => {
  it("keeps a transaction committed right before the kill and nothing of one killed before COMMIT", async () => {
    const probe = join(dir, "probe.duckdb");
    const committed = startChild("die-after-commit", probe, join(dir, "probe-artifacts"));
    await committed.waitFor(/^committed$/);
    expect(await committed.exited).toBe("SIGKILL");

    const torn = startChild("die-in-transaction", probe, join(dir, "probe-artifacts"));
    await torn.waitFor(/^inside$/);
    expect(await torn.exited).toBe("SIGKILL");

    const db = await Database.open(probe);
    try {
      expect(await db.all("SELECT label, n FROM crash_probe ORDER BY n")).toEqual([
        { label: "committed", n: 1 },
        { label: "committed", n: 2 },
      ]);
    } finally {
      await db.close();
    }
  });

  it("leaves a consistent registry after being killed at a random moment, three times over", async () => {
    let previousVersions = 0;
    for (let round = 1; round <= 3; round++) {
      const child = startChild("loop", dbPath, artifactsDir);
      await child.waitFor(/^ready$/);
      await child.waitFor(/^a \d+$/); // at least one full iteration in this round
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
      child.process.kill("SIGKILL");
      expect(await child.exited).toBe("SIGKILL");
      const reportedVersion = lastNumber(child.lines, "v");
      const reportedAlias = lastNumber(child.lines, "a");

      const db = await Database.open(dbPath);
      try {
        const registry = await Registry.open(db, artifactsDir);
        expect(await readdir(join(artifactsDir, "tmp"))).toEqual([]);

        // Version numbers are contiguous from 1, and nothing the child saw committed was lost.
        const versions = await registry.listModelVersions("crash-model");
        const numbers = versions.map((v) => Number(v.version));
        expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
        expect(numbers.length).toBeGreaterThanOrEqual(reportedVersion);
        expect(numbers.length).toBeGreaterThan(previousVersions);
        previousVersions = numbers.length;

        // Every version has all of its run's artifacts, on disk, with the recorded sha256.
        for (const v of versions) {
          const run = await registry.getRun(v.runId);
          expect(run?.status).toBe("finished");
          expect(v.artifacts.map((a) => a.path)).toEqual(["card.json", "model.onnx", "shared.bin"]);
          expect(v.artifacts).toEqual(run?.artifacts);
          for (const a of v.artifacts) {
            const bytes = await readFile(registry.blobPath(a.sha256));
            expect(bytes.length).toBe(a.sizeBytes);
            expect(createHash("sha256").update(bytes).digest("hex")).toBe(a.sha256);
          }
        }

        // Every alias points at an existing version, and the audit log agrees with it.
        const model = await registry.getRegisteredModel("crash-model");
        const aliases = Object.entries(model?.aliases ?? {});
        expect(aliases.map(([alias]) => alias)).toEqual(["staging"]);
        for (const [alias, version] of aliases) {
          expect(numbers).toContain(Number(version));
          const history = await registry.aliasHistory("crash-model", alias);
          expect(history.at(-1)?.toVersion).toBe(version);
          expect(history.every((c) => c.actor === "crash-child")).toBe(true);
        }
        expect(Number(model?.aliases.staging)).toBeGreaterThanOrEqual(reportedAlias);
        // Each committed move's audit row chains from the previous one.
        const history = await registry.aliasHistory("crash-model");
        history.forEach((c, i) => {
          expect(c.fromVersion).toBe(i === 0 ? "" : history[i - 1]?.toVersion);
        });

        // The content shared by every run is stored once.
        const shared = versions[0]?.artifacts.find((a) => a.path === "shared.bin")?.sha256;
        expect(versions.every((v) => v.artifacts.some((a) => a.sha256 === shared))).toBe(true);
      } finally {
        await db.close();
      }
    }
  });
});
