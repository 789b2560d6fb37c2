import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;

// Two versions are registered before any test runs, so that each test finds what it needs without
// another test's training or alias move; tests that change the registry read it first.
beforeAll(async () => {
  t = await startTestServer({}, { seedVersions: 2 });
});
afterAll(async () => {
  await t?.stop();
});

function run(args: string[], token = t.tokens.admin): Promise<CliResult> {
  return runCli(args, { ...process.env, BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: token });
}

const registry = () => connectClient(t.baseUrl, RegistryService, t.tokens.reader);

async function registeredVersions(): Promise<{ version: string; aliases: string[] }[]> {
  const { versions } = await registry().listModelVersions({ modelName: "bike-demand" });
  return versions.map((v) => ({ version: v.version, aliases: [...v.aliases] }));
}

describe("bikeshare CLI", () => {
  it("trains through the server, showing progress, and registers the next version", async () => {
    const before = await registeredVersions();
    const trained = await run(
      ["train", "--families", "gbtree", "--trials", "0", "--reason", "cli test"],
      t.tokens.trainer,
    );
    expect(trained.code, trained.stderr).toBe(0);
    expect(trained.stderr).toContain("[load]");
    const next = String(before.length + 1);
    expect(trained.stdout).toMatch(new RegExp(`^version ${next} registered`, "m"));
    expect((await registeredVersions()).map((v) => v.version)).toEqual([
      ...before.map((v) => v.version),
      next,
    ]);
  });

  it("lists the versions with their aliases, as JSON and as a table", async () => {
    const expected = await registeredVersions();
    expect(expected.length).toBeGreaterThanOrEqual(2);
    const list = await run(["models", "list", "--json"], t.tokens.reader);
    expect(list.code, list.stderr).toBe(0);
    const versions = JSON.parse(list.stdout) as { version: string; aliases?: string[] }[];
    expect(versions.map((v) => ({ version: v.version, aliases: v.aliases ?? [] }))).toEqual(expected);

    const table = await run(["models", "list"], t.tokens.reader);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^version\s+aliases\s+created\s+test_rmse/);
    expect(lines[1]).toMatch(/^-+\s/);
    expect(lines.slice(2).map((l) => l.split(/\s+/)[0])).toEqual(expected.map((v) => v.version));
  });

  it("searches runs with a filter", async () => {
    const { versions } = await registry().listModelVersions({ modelName: "bike-demand" });
    const search = await run(
      ["runs", "search", "tags.role = 'final' and metrics.test_rmse > 0", "--json"],
      t.tokens.reader,
    );
    expect(search.code, search.stderr).toBe(0);
    const found = JSON.parse(search.stdout) as { id: string }[];
    // Every registered version comes from one final run.
    expect(found.map((r) => r.id).sort()).toEqual(versions.map((v) => v.runId).sort());
    const none = await run(["runs", "search", "metrics.test_rmse < 0", "--json"], t.tokens.reader);
    expect(none.code, none.stderr).toBe(0);
    expect(JSON.parse(none.stdout)).toEqual([]);
  });

  it("prints the run status by name and control characters escaped in the runs table", async () => {
    const trainer = connectClient(t.baseUrl, RegistryService, t.tokens.trainer);
    const { run: created } = await trainer.createRun({
      experiment: "cli-escapes",
      name: "escapes",
      tags: { family: "\u001b[31mred\u0007" },
    });
    const table = await run(["runs", "search", `attributes.run_id = '${created?.id}'`], t.tokens.reader);
    expect(table.code, table.stderr).toBe(0);
    // The terminal would have turned red and rung: the table shows the characters instead.
    expect([...table.stdout].filter((c) => c.charCodeAt(0) < 32 && c !== "\n")).toEqual([]);
    expect(table.stdout).toContain("\\u001b[31mred\\u0007");
    expect(table.stdout).toMatch(/escapes\s+running\s/);
  });

  it("promotes a version by force with a reason, and the audit history shows who did it", async () => {
    const versions = await registeredVersions();
    const current = versions.find((v) => v.aliases.includes("production"))?.version;
    const other = versions.find((v) => v.version !== current)?.version as string;
    const promoted = await run(["models", "promote", other, "--reason", "cli test", "--force"]);
    expect(promoted.code, promoted.stderr).toBe(0);
    expect(promoted.stdout).toContain(`production: ${current} -> ${other} (forced)`);
    const history = await run(["models", "history", "--alias", "production", "--json"], t.tokens.reader);
    expect(history.code, history.stderr).toBe(0);
    expect(
      (JSON.parse(history.stdout) as { fromVersion?: string; toVersion: string; actor: string }[]).at(-1),
    ).toMatchObject({ fromVersion: current, toVersion: other, actor: "test-admin", reason: "cli test" });
    const { version } = await registry().getModelVersion({
      modelName: "bike-demand",
      versionOrAlias: "production",
    });
    expect(version?.version).toBe(other);
  });

  it("fails with a clear message and a non-zero exit code", async () => {
    const badFilter = await run(["runs", "search", "metrics.rmse lt 60"], t.tokens.reader);
    expect(badFilter.code).toBe(1);
    expect(badFilter.stderr).toContain("position");

    const noReason = await run(["models", "promote", "1"]);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("--reason");

    const denied = await run(["models", "promote", "1", "--reason", "x"], t.tokens.reader);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("PermissionDenied");
    expect(denied.stderr).not.toContain(t.tokens.reader);

    const unknown = await run(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
  });
});
