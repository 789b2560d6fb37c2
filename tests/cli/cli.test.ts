import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, runCli } from "../helpers/cli.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.stop();
});

function run(args: string[], token = t.tokens.admin): Promise<CliResult> {
  return runCli(args, { ...process.env, BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: token });
}

describe("bikeshare CLI", () => {
  it("trains through the server with progress, then lists, searches and promotes", async () => {
    const trained = await run(
      ["train", "--families", "gbtree", "--trials", "0", "--reason", "cli test"],
      t.tokens.trainer,
    );
    expect(trained.code).toBe(0);
    expect(trained.stderr).toContain("[load]");
    expect(trained.stdout).toMatch(/version 2 registered/);

    const list = await run(["models", "list", "--json"], t.tokens.reader);
    expect(list.code).toBe(0);
    const versions = JSON.parse(list.stdout) as { version: string; aliases?: string[] }[];
    expect(versions.map((v) => v.version)).toEqual(["1", "2"]);

    const table = await run(["models", "list"], t.tokens.reader);
    expect(table.stdout.split("\n")[0]).toMatch(/^version\s+aliases\s+created\s+test_rmse/);

    const search = await run(
      ["runs", "search", "tags.role = 'final' and metrics.test_rmse > 0", "--json"],
      t.tokens.reader,
    );
    expect(search.code).toBe(0);
    expect((JSON.parse(search.stdout) as unknown[]).length).toBe(2);

    // Whichever version the gate left in production, move it to the other one.
    const current = versions.find((v) => v.aliases?.includes("production"))?.version;
    const other = current === "1" ? "2" : "1";
    const promoted = await run(["models", "promote", other, "--reason", "cli test", "--force"]);
    expect(promoted.code).toBe(0);
    expect(promoted.stdout).toContain(`production: ${current} -> ${other}`);
    const history = await run(["models", "history", "--alias", "production", "--json"], t.tokens.reader);
    expect((JSON.parse(history.stdout) as { toVersion: string; actor: string }[]).at(-1)).toMatchObject({
      toVersion: other,
      actor: "test-admin",
    });
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
  });
});
