import { spawn } from "node:child_process";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({}, { seedVersions: 2 });
});
afterAll(async () => {
  await t?.stop();
});

interface LoadReport {
  elapsed: number;
  outcomes: { at: number; version: string | null; error?: string }[];
}

function runLoad(rate: number, seconds: number): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(import.meta.dirname, "../helpers/load-child.ts"),
        t.baseUrl,
        String(rate),
        String(seconds),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0
        ? resolve(JSON.parse(out) as LoadReport)
        : reject(new Error(`load generator exited ${code}`)),
    );
  });
}

describe("hot reload when the production alias moves", () => {
  it("switches versions under ≥ 200 req/s from another process with no failed request", async () => {
    const registry = createClient(
      RegistryService,
      createConnectTransport({
        baseUrl: t.baseUrl,
        httpVersion: "1.1",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${t.tokens.admin}`);
            return next(req);
          },
        ],
      }),
    );
    const { version: before } = await registry.getModelVersion({
      modelName: "bike-demand",
      versionOrAlias: "production",
    });
    const from = before?.version as string;
    const to = from === "1" ? "2" : "1";

    const load = runLoad(300, 6);
    await new Promise((r) => setTimeout(r, 2500));
    await registry.setAlias({
      modelName: "bike-demand",
      alias: "production",
      version: to,
      reason: "test: hot reload",
      force: true,
    });
    const report = await load;

    const failures = report.outcomes.filter((o) => o.version === null);
    expect(failures).toEqual([]);
    expect(report.outcomes.length / report.elapsed).toBeGreaterThanOrEqual(200);
    const versions = report.outcomes.map((o) => o.version);
    expect(versions[0]).toBe(from);
    expect(versions.at(-1)).toBe(to);
    // Once the new version answered, requests sent after the swap never see the old one again.
    const firstNew = versions.indexOf(to);
    const late = report.outcomes.slice(firstNew + 50);
    expect(late.length).toBeGreaterThan(200);
    expect(late.every((o) => o.version === to)).toBe(true);
  });
});
