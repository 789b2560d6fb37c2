import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "../../services/config.js";
import { AdvisoryJobOwnership } from "../../services/control/job-ownership.js";
import { AdvisoryLockLeadership } from "../../services/control/leadership.js";
import { createLogger } from "../../services/observability/log.js";
import { testPostgres } from "../helpers/backends.js";
import { runCli } from "../helpers/cli.js";
import {
  freePort,
  predictOnce,
  type ServeProcess,
  seedTinyVersions,
  serveEnv,
  startServe,
} from "../helpers/serve-process.js";
import { connectClient, type Tokens, writeTokens } from "../helpers/server.js";

/**
 * `bikeshare serve --role …` as real processes on one real PostgreSQL server (docs/deployment.md,
 * "Roles"): leader election between control processes, a predict replica following promotions made
 * elsewhere, and the refusals.
 */

let dir: string;
let tokens: Tokens;
const running: ServeProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-roles-"));
  await mkdir(join(dir, "models"), { recursive: true });
  tokens = await writeTokens({ tokensPath: join(dir, "tokens.json") } as ServerConfig);
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function serve(args: string[], url: string | undefined, extra: Record<string, string> = {}) {
  const p = await startServe(args, serveEnv(dir, url, await freePort(), extra));
  running.push(p);
  return p;
}

async function freshDatabase(versions: number): Promise<string> {
  const url = await (await testPostgres()).createDatabase();
  await seedTinyVersions(url, join(dir, "models"), versions);
  return url;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("bikeshare serve --role", () => {
  it("refuses --role predict and --role control without BIKESHARE_DATABASE_URL, and an empty one", async () => {
    for (const role of ["predict", "control"]) {
      const result = await runCli(["serve", "--role", role], serveEnv(dir, undefined, await freePort()));
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`--role ${role} needs BIKESHARE_DATABASE_URL`);
      expect(result.stderr).toContain("can be opened by one process only");
    }
    // An empty secret must not quietly fall back to a private embedded database.
    const empty = await runCli(
      ["serve", "--role", "control"],
      serveEnv(dir, undefined, await freePort(), { BIKESHARE_DATABASE_URL: "" }),
    );
    expect(empty.code).not.toBe(0);
    expect(empty.stderr).toContain("BIKESHARE_DATABASE_URL must be a URL like postgres://");
  });

  it("refuses an unknown role, naming the flag and the allowed values", async () => {
    const result = await runCli(["serve", "--role", "replica"], serveEnv(dir, undefined, await freePort()));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--role must be one of all, control, predict, got "replica"');
    const fromEnv = await runCli(
      ["serve"],
      serveEnv(dir, undefined, await freePort(), { BIKESHARE_ROLE: "replica" }),
    );
    expect(fromEnv.code).toBe(1);
    expect(fromEnv.stderr).toContain('BIKESHARE_ROLE must be one of all, control, predict, got "replica"');
  });

  it("a predict replica never changes the schema: before any control process migrated it, it refuses to start", async () => {
    const url = await freshDatabase(1); // the registry's tables only, as a control process of an older build might leave
    const result = await runCli(["serve", "--role", "predict"], serveEnv(dir, url, await freePort()));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("the predictions schema");
    expect(result.stderr).toContain("start a control process of this build first");
    const control = await serve(["--role", "control"], url);
    await control.stop();
    const predict = await serve(["--role", "predict"], url);
    expect(await predictOnce(predict.baseUrl)).toMatchObject({ status: 200, version: "1" });
  });

  it("a predict replica serves a promotion made on the control process within 2 s, with no failed request", async () => {
    const url = await freshDatabase(2);
    const control = await serve(["--role", "control"], url);
    const predict = await serve(["--role", "predict"], url);
    expect(await predictOnce(predict.baseUrl)).toMatchObject({ status: 200, version: "1" });

    // Requests keep going to the replica during the swap: none may fail.
    const statuses: number[] = [];
    let loading = true;
    const load = (async () => {
      while (loading) statuses.push((await predictOnce(predict.baseUrl)).status);
    })();
    await sleep(200);
    const registry = connectClient(control.baseUrl, RegistryService, tokens.admin);
    const moved = Date.now();
    await registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: "2",
      reason: "roles test",
      force: true,
    });
    let version: string | undefined;
    while (Date.now() - moved < 5000) {
      version = (await predictOnce(predict.baseUrl)).version;
      if (version === "2") break;
      await sleep(20);
    }
    const swapMs = Date.now() - moved;
    await sleep(200);
    loading = false;
    await load;
    expect(version).toBe("2");
    expect(swapMs).toBeLessThan(2000);
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  });

  it("a predict replica answers the control plane's RPCs with unimplemented, naming the control plane", async () => {
    const url = await freshDatabase(1);
    await serve(["--role", "control"], url); // applies the migrations a replica only checks
    const predict = await serve(["--role", "predict"], url, { BIKESHARE_CONTROL_URL: "http://control:8080" });
    const train = connectClient(predict.baseUrl, TrainService, tokens.admin);
    const error = await train
      .startTraining({ reason: "roles test" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unimplemented);
    expect((error as ConnectError).rawMessage).toContain("not served by this predict replica");
    expect((error as ConnectError).rawMessage).toContain(
      "the control plane serves it at http://control:8080",
    );
    const registry = connectClient(predict.baseUrl, RegistryService, tokens.admin);
    const history = await registry
      .listAliasHistory({ modelName: "bike-demand" })
      .catch((e: unknown) => ConnectError.from(e));
    expect((history as ConnectError).code).toBe(Code.Unimplemented);
    // A streaming method is refused the same way, at its first message.
    const watch = async () => {
      for await (const _ of train.watchJob({ jobId: "j" })) break;
    };
    const watched = await watch().catch((e: unknown) => ConnectError.from(e));
    expect((watched as ConnectError).code).toBe(Code.Unimplemented);
    expect((watched as ConnectError).rawMessage).toContain("bikeshare.v1.TrainService/WatchJob");
    // Predict and the probes are served.
    expect((await fetch(`${predict.baseUrl}/readyz`)).status).toBe(200);
  });

  it("a predict replica cut off from the database keeps serving, says its state is stale once, and catches up", async () => {
    const url = await freshDatabase(2);
    const name = new URL(url).pathname.slice(1);
    const control = await serve(["--role", "control"], url);
    const predict = await serve(["--role", "predict"], url);
    const admin = new pg.Client({ host: "127.0.0.1", port: (await testPostgres()).port, user: "postgres" });
    await admin.connect();
    const stale = async () => {
      const text = await (await fetch(`${predict.baseUrl}/metrics`)).text();
      return Number(/^bikeshare_state_stale (\d)/m.exec(text)?.[1]);
    };
    try {
      expect(await stale()).toBe(0);
      // Unreachable as far as bikeshare can tell: sessions cut, new ones refused.
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
      await sleep(3000);
      expect(await predictOnce(predict.baseUrl)).toMatchObject({ status: 200, version: "1" });
      expect((await fetch(`${predict.baseUrl}/readyz`)).status).toBe(200);
      expect(await stale()).toBe(1);
      const staleLines = predict.logs.filter((l) =>
        l.msg.startsWith("could not load the model behind the alias"),
      );
      expect(staleLines).toHaveLength(1);

      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
      await predict.waitForLog((l) => l.msg.endsWith("caught up"), 10_000);
      expect(await stale()).toBe(0);
      // A move made after the outage reaches the replica (its LISTEN session came back, or the poll saw it).
      const registry = connectClient(control.baseUrl, RegistryService, tokens.admin);
      await registry.setAlias({
        modelName: "bike-demand",
        alias: "production",
        version: "2",
        reason: "after the outage",
        force: true,
      });
      const moved = Date.now();
      while (Date.now() - moved < 5000 && (await predictOnce(predict.baseUrl)).version !== "2")
        await sleep(50);
      expect(Date.now() - moved).toBeLessThan(2000);
    } finally {
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`).catch(() => undefined);
      await admin.end();
    }
  });

  it("a job runs in one process at a time: another skips it while its owner lives, and runs it once the owner is gone", async () => {
    const url = await (await testPostgres()).createDatabase();
    const owner = new AdvisoryJobOwnership(url, () => {});
    const other = new AdvisoryJobOwnership(url, () => {});
    try {
      let started!: () => void;
      const running = new Promise<void>((r) => {
        started = r;
      });
      let finish!: () => void;
      const ownerRun = owner.run("job-1", () => {
        started();
        return new Promise<void>((r) => {
          finish = r;
        });
      });
      await running;
      let ranTwice = false;
      const skipped = await other.run("job-1", async () => {
        ranTwice = true;
      });
      expect(skipped).toBe(false);
      expect(ranTwice).toBe(false);
      expect(await other.run("job-2", async () => {})).toBe(true);
      // The owner's session ends (as when its process dies): the job is free for whoever resumes it.
      await owner.close();
      let resumed = false;
      expect(
        await other.run("job-1", async () => {
          resumed = true;
        }),
      ).toBe(true);
      expect(resumed).toBe(true);
      finish();
      await ownerRun.catch(() => undefined);
    } finally {
      await owner.close();
      await other.close();
    }
  });

  it("a leader whose session the server dropped knows it before acting: confirm() is false at once", async () => {
    const url = await (await testPostgres()).createDatabase();
    const quiet = createLogger({}, "error", () => {});
    // No periodic try during the test: only confirm() can find out.
    const a = await AdvisoryLockLeadership.start(url, quiet, { retryMs: 60_000 });
    const b = await AdvisoryLockLeadership.start(url, quiet, { retryMs: 60_000 });
    const admin = new pg.Client({ host: "127.0.0.1", port: (await testPostgres()).port, user: "postgres" });
    await admin.connect();
    try {
      expect([a.isLeader, b.isLeader]).toEqual([true, false]);
      expect(await a.confirm()).toBe(true);
      await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1651075941 AND objid = 1 AND granted",
      );
      expect(a.isLeader).toBe(true); // not told yet
      expect(await a.confirm()).toBe(false);
      expect(a.isLeader).toBe(false);
    } finally {
      await admin.end();
      await a.close();
      await b.close();
    }
  });

  it("two control processes: one leader runs the scheduled checks; SIGKILL it and the other takes over within 10 s", async () => {
    const url = await freshDatabase(1);
    const every = { BIKESHARE_CHECK_INTERVAL_SECONDS: "1" };
    const a = await serve(["--role", "control"], url, every);
    const b = await serve(["--role", "control"], url, every);
    const leaderGauge = async (p: ServeProcess) => {
      const text = await (await fetch(`${p.baseUrl}/metrics`)).text();
      return Number(/^bikeshare_control_leader (\d)/m.exec(text)?.[1]);
    };
    expect([await leaderGauge(a), await leaderGauge(b)].sort()).toEqual([0, 1]);
    const [leader, follower] = (await leaderGauge(a)) === 1 ? [a, b] : [b, a];

    const checks = (p: ServeProcess) => p.logs.filter((l) => l.msg === "scheduled monitoring check").length;
    const before = [checks(leader), checks(follower)];
    await sleep(4500);
    const during = [checks(leader) - (before[0] ?? 0), checks(follower) - (before[1] ?? 0)];
    // Once per 1 s interval, by the leader only.
    expect(during[1]).toBe(0);
    expect(during[0]).toBeGreaterThanOrEqual(3);
    expect(during[0]).toBeLessThanOrEqual(5);

    leader.child.kill("SIGKILL");
    await leader.exited;
    const killed = Date.now();
    await follower.waitForLog((l) => l.msg === "leading the control plane", 10_000);
    expect(Date.now() - killed).toBeLessThan(10_000);
    await follower.waitForLog((l) => l.msg === "scheduled monitoring check" && checks(follower) > 0, 5000);
    expect(await leaderGauge(follower)).toBe(1);
  });
});
