import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({}, { seedVersions: 2 });
});
afterAll(async () => {
  await t?.stop();
});

interface Outcome {
  /** Completions so far, this one included. */
  n: number;
  /** Completions when this request was sent. */
  sentAfter: number;
  version: string | null;
  error?: string;
}

/** Clients in another process posting /predict in a loop until `stop()`; `until` waits for what they saw. */
function startLoad(concurrency: number) {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(import.meta.dirname, "../helpers/load-child.ts"),
      t.baseUrl,
      String(concurrency),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const outcomes: Outcome[] = [];
  let check: (() => void) | undefined;
  createInterface({ input: child.stdout }).on("line", (line) => {
    outcomes.push(JSON.parse(line) as Outcome);
    check?.();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => resolve(code));
  });
  return {
    outcomes,
    /** Resolves once `done(outcomes)` holds; fails if the load generator exits first. */
    until(what: string, done: (o: readonly Outcome[]) => boolean): Promise<void> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const seen = [...new Set(outcomes.map((o) => o.version))].join(", ");
          reject(new Error(`no ${what} within 60 s: ${outcomes.length} answers, versions ${seen}`));
        }, 60_000);
        check = () => {
          if (done(outcomes)) {
            check = undefined;
            clearTimeout(timer);
            resolve();
          }
        };
        exited.then((code) => reject(new Error(`the load generator exited (${code}) before ${what}`)));
        check();
      });
    },
    async stop(): Promise<number | null> {
      child.stdin.end();
      return exited;
    },
  };
}

describe("hot reload when the production alias moves", () => {
  it("switches versions under load from another process with no failed request", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.admin);
    const { version: before } = await registry.getModelVersion({
      modelName: "bike-demand",
      versionOrAlias: "production",
    });
    const from = before?.version as string;
    const to = from === "1" ? "2" : "1";

    const load = startLoad(4);
    try {
      // Enough answers from the old version to know the load runs, whatever the machine's speed.
      await load.until("100 answers", (o) => o.length >= 100);
      await registry.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: to,
        reason: "test: hot reload",
        force: true,
      });
      await load.until(
        `100 answers from version ${to}`,
        (o) => o.filter((x) => x.version === to).length >= 100,
      );
    } finally {
      expect(await load.stop()).toBe(0);
    }
    const { outcomes } = load;

    expect(outcomes.filter((o) => o.version === null)).toEqual([]);
    // Every answer came from a version that was production at the time: the old one, then the new one.
    expect(new Set(outcomes.map((o) => o.version))).toEqual(new Set([from, to]));
    expect(outcomes.slice(0, 100).every((o) => o.version === from)).toBe(true);
    // Once the new version answered, a request sent after that never sees the old one again.
    const firstNew = outcomes.find((o) => o.version === to) as Outcome;
    const late = outcomes.filter((o) => o.sentAfter >= firstNew.n);
    expect(late.length).toBeGreaterThan(0);
    expect(late.filter((o) => o.version !== to)).toEqual([]);
  });
});
