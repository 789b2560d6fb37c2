import { execFile } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { Metrics } from "../../services/observability/metrics.js";

/** The shipped Prometheus config and alert rules, checked and unit-tested by the real promtool. */

const ROOT = join(import.meta.dirname, "../..");
const PROMETHEUS = join(ROOT, "ops/prometheus");
const run = promisify(execFile);

async function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run("/usr/bin/promtool", args, { cwd: ROOT });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== "number") throw error; // promtool itself missing: fail, never skip
    return { code: e.code, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

const ruleFiles = async () =>
  (await readdir(join(PROMETHEUS, "rules"))).filter((f) => f.endsWith(".yml")).map((f) => `rules/${f}`);
const ruleTestFiles = async () =>
  (await readdir(join(PROMETHEUS, "tests"))).filter((f) => f.endsWith(".test.yml")).map((f) => `tests/${f}`);
const read = (path: string) => readFile(join(PROMETHEUS, path), "utf8");

async function alertNames(): Promise<string[]> {
  const texts = await Promise.all((await ruleFiles()).map(read));
  return texts.flatMap((t) => [...t.matchAll(/^\s*- alert:\s*(\w+)/gm)].map((m) => m[1] as string));
}

const scratch: string[] = [];
afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

describe("promtool", () => {
  it("accepts prometheus.yml and finds its rule files", async () => {
    const { code, output } = await promtool("check", "config", "ops/prometheus/prometheus.yml");
    expect(output).toContain("SUCCESS: 1 rule files found");
    expect(output).toContain("is valid prometheus config file syntax");
    expect(code).toBe(0);
  });

  it("accepts every rule file", async () => {
    const files = (await ruleFiles()).map((f) => `ops/prometheus/${f}`);
    const { code, output } = await promtool("check", "rules", ...files);
    expect(output).toContain(`SUCCESS: ${(await alertNames()).length} rules found`);
    expect(code).toBe(0);
  });

  it("passes the rule unit tests", async () => {
    const files = (await ruleTestFiles()).map((f) => `ops/prometheus/${f}`);
    expect(files.length).toBeGreaterThan(0);
    const { code, output } = await promtool("test", "rules", ...files);
    expect(output).toContain("SUCCESS");
    expect(output).not.toContain("FAILED");
    expect(code).toBe(0);
  });

  it("the unit tests catch a broken rule", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bikeshare-rules-"));
    scratch.push(dir);
    await cp(PROMETHEUS, dir, { recursive: true });
    const file = join(dir, "rules/bikeshare.yml");
    const rules = await readFile(file, "utf8");
    const broken = rules
      .replace("> on (job, instance, model_version) bikeshare_live_rmse_threshold", "> 1e9")
      .replace('{outcome="failed"}', '{outcome="succeeded"}');
    expect(broken).not.toBe(rules);
    await writeFile(file, broken);
    const { code, output } = await promtool(
      "test",
      "rules",
      ...(await ruleTestFiles()).map((f) => join(dir, f)),
    );
    expect(code).not.toBe(0);
    expect(output).toContain("alertname: BikeshareLiveRmseHigh");
    expect(output).toContain("alertname: BikeshareJobFailed");
  });
});

describe("alert rules", () => {
  it("cover every condition the operations runbook names, each with a unit test and a runbook section", async () => {
    const names = await alertNames();
    expect(names).toEqual(
      expect.arrayContaining([
        "BikeshareApiDown",
        "BikeshareHighErrorRatio",
        "BikeshareHighPredictLatency",
        "BikeshareDatasetDrift",
        "BikeshareLiveRmseHigh",
        "BikeshareJobFailed",
        "BikesharePredictionLogDrops",
        "BikesharePredictionLogUnspooled",
        "BikeshareStoreNotWritable",
        "BikeshareQueueErrors",
        "BikeshareConnectionsRejected",
        "BikeshareStateStale",
        "BikeshareNoControlLeader",
      ]),
    );
    const tests = (await Promise.all((await ruleTestFiles()).map(read))).join("\n");
    const untested = names.filter(
      (n) => !new RegExp(`alertname: ${n}\\n\\s+exp_alerts:\\n\\s+- exp_labels`).test(tests),
    );
    expect(untested, "alerts without a unit test in which they fire").toEqual([]);

    const runbook = await readFile(join(ROOT, "docs/operations.md"), "utf8");
    const anchors = new Set(
      [...runbook.matchAll(/^#+\s+(.+)$/gm)].map((m) =>
        (m[1] as string)
          .trim()
          .toLowerCase()
          .replace(/[^\w\- ]/g, "")
          .replace(/ /g, "-"),
      ),
    );
    const rules = (await Promise.all((await ruleFiles()).map(read))).join("\n");
    const links = [...rules.matchAll(/runbook: docs\/operations\.md#([\w-]+)/g)].map((m) => m[1]);
    expect(links.length).toBe(names.length);
    expect(links.filter((a) => !anchors.has(a as string))).toEqual([]);
  });
});

describe("metric names", () => {
  it("every bikeshare_ metric that a rule or a dashboard uses is exported by Metrics", async () => {
    const exported = new Set<string>();
    for (const m of await new Metrics().registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === "histogram")
        for (const suffix of ["_bucket", "_sum", "_count"]) exported.add(`${m.name}${suffix}`);
    }
    const dashboards = join(ROOT, "ops/grafana/dashboards");
    const texts = [
      ...(await Promise.all((await ruleFiles()).map(read))),
      ...(await Promise.all((await readdir(dashboards)).map((f) => readFile(join(dashboards, f), "utf8")))),
    ];
    const used = new Set(texts.flatMap((t) => t.match(/\bbikeshare_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(20);
    expect([...used].filter((name) => !exported.has(name)).sort()).toEqual([]);
  });
});

describe("Metrics", () => {
  it("starts job outcomes and alert rules at zero, so that increase() counts the first event", async () => {
    const text = await new Metrics().registry.metrics();
    for (const kind of ["train", "score"])
      for (const outcome of ["succeeded", "failed", "cancelled"])
        expect(text).toContain(`bikeshare_job_duration_seconds_count{kind="${kind}",outcome="${outcome}"} 0`);
    for (const rule of ["dataset_drift", "live_rmse", "prediction_drift"])
      expect(text).toContain(`bikeshare_alerts_total{rule="${rule}"} 0`);
  });

  it("reads queue depths at scrape time, async ones too; one that fails is left out, not the scrape", async () => {
    const metrics = new Metrics();
    let waiting = 3;
    metrics.trackQueueDepth("train", () => waiting);
    metrics.trackQueueDepth("bikeshare-jobs", async () => 7);
    metrics.trackQueueDepth("broken", async () => {
      throw new Error("redis is down");
    });
    waiting = 4;
    const text = await metrics.registry.metrics();
    expect(text).toContain('bikeshare_queue_depth{queue="train"} 4');
    expect(text).toContain('bikeshare_queue_depth{queue="bikeshare-jobs"} 7');
    expect(text).not.toContain('queue="broken"');
  });

  it("keeps live accuracy for the production version only", async () => {
    const metrics = new Metrics();
    metrics.setLiveAccuracy("1", 80, 168, 99);
    metrics.setLiveAccuracy("2", 70, 24);
    const text = await metrics.registry.metrics();
    expect(text).toContain('bikeshare_live_rmse{model_version="2"} 70');
    expect(text).toContain('bikeshare_live_labelled_hours{model_version="2"} 24');
    expect(text).not.toContain('model_version="1"');
    expect(text).not.toMatch(/bikeshare_live_rmse_threshold\{/); // version 2 has no test RMSE
  });
});
