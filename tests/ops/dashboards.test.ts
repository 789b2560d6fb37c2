import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { QUICK_REQUEST, startTestServer, type TestServer } from "../helpers/server.js";

/**
 * The shipped Grafana dashboards against a real Prometheus (Debian's /usr/bin/prometheus) that
 * scrapes a real bikeshare server with the shipped prometheus.yml and alert rules: every panel's
 * query must parse and return data, with template variables substituted the way Grafana does.
 */

const ROOT = join(import.meta.dirname, "../..");
const DASHBOARDS = join(ROOT, "ops/grafana/dashboards");
const PROVISIONING = join(ROOT, "ops/grafana/provisioning");
const SCRAPE_SECONDS = 1;
/** The dashboards' default time range (now-6h) and a panel about 1,000 points wide. */
const RANGE_SECONDS = 6 * 3600;
const MAX_DATA_POINTS = 1000;

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid?: string };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string;
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

async function loadDashboards(): Promise<{ file: string; dashboard: Dashboard }[]> {
  const files = (await readdir(DASHBOARDS)).filter((f) => f.endsWith(".json")).sort();
  return Promise.all(
    files.map(async (file) => ({
      file,
      dashboard: JSON.parse(await readFile(join(DASHBOARDS, file), "utf8")) as Dashboard,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// Grafana's interpolation, for the variables these dashboards use.

/** Grafana's interval for a panel: range / max data points, never below the scrape interval. */
const intervalSeconds = Math.max(SCRAPE_SECONDS, Math.ceil(RANGE_SECONDS / MAX_DATA_POINTS));
const BUILTINS: Record<string, string> = {
  __interval: `${intervalSeconds}s`,
  // Grafana: max($__interval + scrape interval, 4 × scrape interval).
  __rate_interval: `${Math.max(intervalSeconds + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)}s`,
  __range: `${RANGE_SECONDS}s`,
};

/** Grafana's prometheusSpecialRegexEscape: values of multi-value variables go into =~ regexes. */
function regexEscape(value: string): string {
  return value.replace(/\\/g, "\\\\\\\\").replace(/[$^*{}[\]'+?.()|]/g, "\\\\$&");
}

/** Grafana replaces $name, ${name} and [[name]] of known variables and leaves anything else ($1). */
function interpolate(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$(\w+)|\$\{(\w+)\}|\[\[(\w+)\]\]/g, (match, a, b, c) => {
    const name = (a ?? b ?? c) as string;
    return values[name] ?? match;
  });
}

function variableQuery(v: Variable): string {
  return typeof v.query === "string" ? v.query : v.query.query;
}

/** Value of a variable set to "All", or to one of its values, as Grafana writes it into a query. */
function variableValue(v: Variable, selected: string[] | "all", options: string[]): string {
  if (selected === "all") {
    if (v.allValue) return v.allValue;
    selected = options;
  }
  if (!v.multi && !v.includeAll) return selected[0] as string;
  const escaped = selected.map(regexEscape);
  return escaped.length === 1 ? (escaped[0] as string) : `(${escaped.join("|")})`;
}

// ---------------------------------------------------------------------------------------------
// Real processes on free loopback ports: Prometheus, Redis and a `bikeshare worker`.

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

interface Running {
  stop(): Promise<void>;
}

/**
 * Starts a process and waits until `ready` says so; stops it (TERM, then KILL) on failure, on
 * stop(), and as a last resort when the test process exits, so that nothing is left behind.
 */
async function startProcess(
  name: string,
  command: string,
  args: string[],
  ready: () => Promise<boolean>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Running> {
  const child: ChildProcess = spawn(command, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const stop = async () => {
    process.off("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    const deadline = Date.now() + 60_000;
    while (!(await ready().catch(() => false))) {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${output}`);
      if (Date.now() > deadline) throw new Error(`${name} not ready after 60 s: ${output}`);
      await sleep(200);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop };
}

const answers = (url: string) => async () => (await fetch(url)).ok;

async function startRedis(): Promise<Running & { url: string }> {
  const port = await freePort();
  const redis = await startProcess(
    "redis-server",
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    () =>
      new Promise((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => {
          socket.end();
          resolve(true);
        });
        socket.once("error", () => resolve(false));
      }),
  );
  return { ...redis, url: `redis://127.0.0.1:${port}` };
}

/** `bikeshare worker`, the CLI command run from source, as docker-compose runs the built one. */
async function startWorker(redisUrl: string): Promise<Running & { port: number }> {
  const port = await freePort();
  const worker = await startProcess(
    "bikeshare worker",
    process.execPath,
    ["--import", "tsx", join(ROOT, "cli/bikeshare.ts"), "worker"],
    answers(`http://127.0.0.1:${port}/metrics`),
    { ...process.env, REDIS_URL: redisUrl, WORKER_METRICS_PORT: String(port), LOG_LEVEL: "warn" },
  );
  return { ...worker, port };
}

interface Prometheus extends Running {
  query(expr: string): Promise<PromResult>;
  api<T>(path: string): Promise<T>;
}

interface PromSample {
  metric: Record<string, string>;
  value?: [number, string];
  values?: [number, string][];
}
type PromResult =
  | { resultType: "vector" | "matrix"; result: PromSample[] }
  | { resultType: "scalar" | "string"; result: [number, string] };

function replaceOnce(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`ops/prometheus/prometheus.yml no longer contains ${from}`);
  return text.replaceAll(from, to);
}

/**
 * Runs the shipped prometheus.yml with only its targets and intervals changed; the rule files
 * are the shipped ones (a `rules` link next to the temporary config, as in the container).
 */
async function startPrometheus(targets: { server: number; worker: number }): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), "bikeshare-prometheus-"));
  const port = await freePort();
  let config = await readFile(join(ROOT, "ops/prometheus/prometheus.yml"), "utf8");
  config = replaceOnce(config, "scrape_interval: 15s", `scrape_interval: ${SCRAPE_SECONDS}s`);
  config = replaceOnce(config, "evaluation_interval: 15s", `evaluation_interval: ${SCRAPE_SECONDS}s`);
  config = replaceOnce(
    config,
    '"bikeshare:8080", "predict-1:8080", "predict-2:8080"',
    `"127.0.0.1:${targets.server}"`,
  );
  config = replaceOnce(config, '"worker:9465"', `"127.0.0.1:${targets.worker}"`);
  config = replaceOnce(config, '"localhost:9090"', `"127.0.0.1:${port}"`);
  await writeFile(join(dir, "prometheus.yml"), config);
  await symlink(join(ROOT, "ops/prometheus/rules"), join(dir, "rules"));

  const url = `http://127.0.0.1:${port}`;
  let prometheus: Running;
  try {
    prometheus = await startProcess(
      "prometheus",
      "/usr/bin/prometheus",
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      answers(`${url}/-/ready`),
    );
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  return {
    api,
    query: (expr) => api<PromResult>(`/api/v1/query?query=${encodeURIComponent(expr)}`),
    async stop() {
      await prometheus.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

function samples(result: PromResult): number[] {
  if (result.resultType === "scalar") return [Number(result.result[1])];
  if (result.resultType === "string") return [];
  return (result.result as PromSample[]).flatMap((s) =>
    s.value ? [Number(s.value[1])] : (s.values ?? []).map(([, v]) => Number(v)),
  );
}

// ---------------------------------------------------------------------------------------------

describe("Grafana provisioning and dashboard files", () => {
  it("every panel has a position, a provisioned datasource and queries; ids and uids are unique", async () => {
    const datasources = await readFile(join(PROVISIONING, "datasources/datasources.yml"), "utf8");
    const uids = [...datasources.matchAll(/^\s+uid:\s*(\S+)/gm)].map((m) => m[1]);
    expect(uids).toEqual(["prometheus", "tempo"]);
    const provider = await readFile(join(PROVISIONING, "dashboards/bikeshare.yml"), "utf8");
    expect(provider).toMatch(/path: \/var\/lib\/grafana\/dashboards/);

    const dashboards = await loadDashboards();
    expect(dashboards.map((d) => d.file)).toEqual([
      "bikeshare-drift.json",
      "bikeshare-jobs.json",
      "bikeshare-model-quality.json",
      "bikeshare-overview.json",
    ]);
    expect(new Set(dashboards.map((d) => d.dashboard.uid)).size).toBe(dashboards.length);
    for (const { file, dashboard } of dashboards) {
      expect(`${file}: ${dashboard.uid}`).toBe(`${file}: ${file.replace(/\.json$/, "")}`);
      const ids = dashboard.panels.map((p) => p.id);
      expect(new Set(ids).size, `${file}: panel ids`).toBe(ids.length);
      for (const panel of dashboard.panels) {
        const where = `${file} panel "${panel.title}"`;
        const { x, w, h } = panel.gridPos;
        expect(x >= 0 && w > 0 && h > 0 && x + w <= 24, `${where}: gridPos`).toBe(true);
        if (panel.type === "row") continue;
        expect(uids, `${where}: datasource`).toContain(panel.datasource?.uid);
        expect(panel.targets?.length, `${where}: targets`).toBeGreaterThan(0);
        for (const target of panel.targets ?? []) {
          expect(target.expr.trim(), `${where}: expr`).not.toBe("");
          expect(uids, `${where}: target datasource`).toContain(target.datasource?.uid);
        }
      }
    }
  });
});

describe("dashboards against a real Prometheus scraping a running bikeshare", () => {
  let t: TestServer;
  let redis: Running | undefined;
  let worker: Running | undefined;
  let prom: Prometheus | undefined;
  let trafficRunning = true;
  let traffic: Promise<void> = Promise.resolve();
  let trafficError: unknown;

  const rows = readHourCsvRecords();
  const hourOf = (r: Record<string, number | string>) =>
    instantOfLocalHour(dayNumber(r.dteday as string), r.hr as number).getTime();
  const day = (iso: string) => instantOfLocalHour(dayNumber(iso), 0).getTime();
  const conditions = Object.fromEntries(MODEL_FIELDS.map((f) => [f, rows[5000]?.[f] as number]));

  function transportOf(kind: "connect" | "grpc" | "grpc-web", token: string): Transport {
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    };
    const options = { baseUrl: t.baseUrl, interceptors: [auth] };
    if (kind === "grpc") return createGrpcTransport(options);
    if (kind === "grpc-web") return createGrpcWebTransport({ ...options, httpVersion: "1.1" });
    return createConnectTransport({ ...options, httpVersion: "1.1" });
  }

  /** Light steady traffic on every protocol, as a live service has: rate() windows never go empty. */
  async function steadyTraffic(predictors: Client<typeof PredictService>[]): Promise<void> {
    while (trafficRunning) {
      for (const p of predictors) await p.predict({ conditions });
      const res = await fetch(`${t.baseUrl}/predict`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(conditions),
      });
      await res.text();
      await sleep(100);
    }
  }

  beforeAll(async () => {
    // A real worker on Redis, scraped as in docker-compose. The server keeps its jobs in process
    // here: the job metrics then come from one place, and this test does not depend on BullMQ.
    const r = await startRedis();
    redis = r;
    const w = await startWorker(r.url);
    worker = w;
    // A model whose data ends before the August week the check looks at.
    const server = await startTestServer({}, { seedRequest: { ...QUICK_REQUEST, dataUntil: "2012-06-01" } });
    t = server;
    const p = await startPrometheus({ server: server.server.port, worker: w.port });
    prom = p;
    await until("the first scrape of bikeshare and of the worker", async () => {
      const up = await p.query("up == 1");
      const jobs = up.resultType === "vector" ? up.result.map((s) => s.metric.job) : [];
      return jobs.includes("bikeshare") && jobs.includes("bikeshare-worker") ? true : undefined;
    });

    const trainer = (kind: "connect" | "grpc" | "grpc-web") => transportOf(kind, t.tokens.trainer);
    const predictors = (["connect", "grpc", "grpc-web"] as const).map((k) =>
      createClient(PredictService, trainer(k)),
    );
    const monitor = createClient(MonitorService, trainer("connect"));
    const train = createClient(TrainService, trainer("connect"));
    traffic = steadyTraffic(predictors).catch((error: unknown) => {
      trafficError = error;
    });

    // Errors of both kinds of caller: invalid_argument over Connect, 422 on the legacy route.
    await expect(predictors[0]?.predict({ conditions: { ...conditions, hr: 30 } })).rejects.toThrow(/hr/);
    expect((await fetch(`${t.baseUrl}/predict`, { method: "POST", body: "{}" })).status).toBe(422);

    // A training job, so that job durations and outcomes have a sample. It runs before the check:
    // if the gate promotes it, live RMSE must be that of the version then served.
    const { job } = await train.startTraining({
      families: [ModelFamily.GBTREE],
      searchTrials: 0,
      reason: "test: dashboards",
    });
    for await (const _ of train.watchJob({ jobId: job?.id as string })) {
      // until the job ends
    }
    const done = (await train.getJob({ jobId: job?.id as string })).job;
    expect(done?.state, `training job: ${done?.error}`).toBe(JobState.SUCCEEDED);
    const production = done?.promoted ? done.modelVersion : "1";
    await until("the production version to serve", async () =>
      (await predictors[0]?.predict({ conditions }))?.modelVersion === production ? true : undefined,
    );

    // A drifted, inaccurate August week, its actuals, and a check: drift and live RMSE gauges. The
    // dataset_drift rule weighs features by importance (docs/monitoring.md): storm weather with no
    // working day all week, so that features the model leans on (temp, workingday_hr) drift too.
    const week = rows.filter(
      (r) => (r.dteday as string) >= "2012-08-01" && (r.dteday as string) < "2012-08-08",
    );
    await predictors[1]?.predictBatch({
      rows: week.map((r) => ({
        ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
        weathersit: 4,
        hum: 1,
        windspeed: 0.85,
        temp: 0.98,
        atemp: 1,
        workingday: 0,
        hour: timestampFromMs(hourOf(r)),
      })),
    });
    await monitor.reportActuals({
      actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
    });
    const check = await monitor.runCheck({
      window: { from: timestampFromMs(day("2012-08-01")), to: timestampFromMs(day("2012-08-08")) },
      allowRetrain: false,
    });
    expect(check.report?.datasetDrift).toBe(true);

    // Prometheus has scraped the job's end and has a full rate window of steady traffic after it.
    await until("the training job in Prometheus", async () => {
      const r = await p.query(
        'bikeshare_job_duration_seconds_count{job="bikeshare", kind="train", outcome="succeeded"} == 1',
      );
      return samples(r).length > 0 ? true : undefined;
    });
    await sleep((Number.parseInt(BUILTINS.__rate_interval as string, 10) + 2) * 1000);
  });

  afterAll(async () => {
    trafficRunning = false;
    await traffic;
    await prom?.stop();
    await t?.stop();
    await worker?.stop();
    await redis?.stop();
  });

  it("loads the shipped rules and evaluates every one without error on real metrics", async () => {
    const p = prom as Prometheus;
    const { groups } = await p.api<{
      groups: { name: string; rules: { name: string; health: string; lastError?: string }[] }[];
    }>("/api/v1/rules");
    expect(groups.map((g) => g.name)).toEqual([
      "bikeshare-availability",
      "bikeshare-model",
      "bikeshare-pipeline",
    ]);
    const rules = groups.flatMap((g) => g.rules);
    expect(rules.length).toBe(18);
    expect(rules.filter((r) => r.health !== "ok").map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);

    // The check above found dataset drift and a live RMSE far above its threshold.
    const active = await until("alerts to become active", async () => {
      const names = await alertNames(p);
      return ["BikeshareDatasetDrift", "BikeshareLiveRmseHigh"].every((n) => names.includes(n))
        ? names
        : undefined;
    });
    for (const quiet of [
      "BikeshareApiDown",
      "BikeshareWorkerDown",
      "BikeshareHighErrorRatio",
      "BikeshareJobFailed",
      "BikesharePredictionLogDrops",
      "BikesharePredictionLogUnspooled",
      // The worker's gauge reads 0 (it never writes to the database): the rule must not see it.
      "BikeshareStoreNotWritable",
      "BikeshareQueueErrors",
      // The worker exports the leader gauge at 0 too: only the server's (1, the embedded backend leads) counts.
      "BikeshareNoControlLeader",
      "BikeshareStateStale",
      "BikeshareConnectionsRejected",
    ])
      expect(active).not.toContain(quiet);
  });

  it("Prometheus holds the monitoring gauges as the check computed them, and the worker's metrics", async () => {
    const p = prom as Prometheus;
    const one = async (expr: string) => {
      const values = samples(await p.query(expr));
      expect(values, expr).toHaveLength(1);
      return values[0] as number;
    };
    expect(await one('bikeshare_live_labelled_hours{job="bikeshare"}')).toBe(168);
    // The threshold is BIKESHARE_RMSE_FACTOR × the served version's test RMSE.
    const ratio = await one(
      'bikeshare_live_rmse_threshold / on (job, instance, model_version) label_replace(bikeshare_model_test_rmse, "model_version", "$1", "version", "(.+)")',
    );
    expect(ratio).toBeCloseTo(t.config.rmseFactor, 9);
    expect(await one("bikeshare_live_rmse > bikeshare_live_rmse_threshold")).toBeGreaterThan(0);
    const share = await one('bikeshare_drift_share{job="bikeshare"}');
    expect(await one("avg(bikeshare_feature_drifted)")).toBeCloseTo(share, 9);
    expect(await one("count(bikeshare_feature_drifted)")).toBe(
      await one("count(bikeshare_feature_drift_statistic)"),
    );
    expect(await one('time() - bikeshare_drift_check_timestamp_seconds{job="bikeshare"}')).toBeLessThan(600);
    // The worker's registry reaches Prometheus: its job series (zero here) and process metrics.
    expect(
      samples(await p.query('bikeshare_job_duration_seconds_count{job="bikeshare-worker"}')).length,
    ).toBe(6);
    expect(await one('sum(bikeshare_process_resident_memory_bytes{job="bikeshare-worker"})')).toBeGreaterThan(
      0,
    );
  });

  it("every panel query of every dashboard parses and returns data, for All and for each value of each variable", async () => {
    const p = prom as Prometheus;
    const failures: string[] = [];
    let queries = 0;
    const run = async (where: string, expr: string): Promise<number[] | undefined> => {
      queries++;
      if (/\$\w|\[\[/.test(expr.replace(/"\$\d"/g, ""))) {
        failures.push(`${where}: a variable was left in: ${expr}`);
        return undefined;
      }
      try {
        return samples(await p.query(expr));
      } catch (error) {
        failures.push(`${where}: ${(error as Error).message}: ${expr}`);
        return undefined;
      }
    };
    for (const { file, dashboard } of await loadDashboards()) {
      const variables = dashboard.templating.list;
      // Each variable's own query, as Grafana runs it to fill the drop-down.
      const options: Record<string, string[]> = {};
      for (const v of variables) {
        expect(v.type, `${file} variable ${v.name}`).toBe("query");
        const m = /^label_values\((.*),\s*(\w+)\)$/.exec(variableQuery(v).trim());
        if (!m) throw new Error(`${file} variable ${v.name}: expected label_values(selector, label)`);
        const values = await p.api<string[]>(
          `/api/v1/label/${m[2]}/values?match[]=${encodeURIComponent(m[1] as string)}`,
        );
        if (values.length === 0) failures.push(`${file} variable ${v.name}: no values`);
        options[v.name] = values;
      }
      // What Grafana shows on opening a dashboard: every variable at "All".
      const all = Object.fromEntries(variables.map((v) => [v.name, variableValue(v, "all", [])]));
      for (const panel of dashboard.panels) {
        for (const target of panel.targets ?? []) {
          const where = `${file} "${panel.title}" ${target.refId}`;
          const values = await run(where, interpolate(target.expr, { ...BUILTINS, ...all }));
          if (values?.length === 0) failures.push(`${where}: no data`);
          else if (values && !values.some(Number.isFinite)) failures.push(`${where}: only NaN`);
          // One value picked in a drop-down: every value must give a valid query, and at least
          // one must select data (a job kind that never ran rightly shows nothing).
          for (const v of variables.filter((v) => target.expr.includes(`$${v.name}`))) {
            let found = false;
            for (const option of options[v.name] ?? []) {
              const vars = { ...all, [v.name]: variableValue(v, [option], options[v.name] ?? []) };
              const picked = await run(
                `${where} ${v.name}=${option}`,
                interpolate(target.expr, { ...BUILTINS, ...vars }),
              );
              found ||= picked?.some(Number.isFinite) ?? false;
            }
            if (!found) failures.push(`${where}: no value of ${v.name} selects data`);
          }
        }
      }
    }
    expect(failures).toEqual([]);
    expect(queries).toBeGreaterThan(80);
    expect(trafficError, "steady traffic failed").toBeUndefined();
  });
});

async function alertNames(p: Prometheus): Promise<string[]> {
  const r = await p.query("ALERTS");
  return r.resultType === "vector" ? (r.result as PromSample[]).map((s) => s.metric.alertname as string) : [];
}
