/**
 * The Airflow DAGs (pipelines/airflow/dags) under a real, pinned Apache Airflow (the venv from
 * `bash scripts/airflow-venv.sh`) against a real bikeshare server: the DagBag loads all three DAGs
 * with no import error, and `airflow dags test` runs training_pipeline and monitoring_pipeline as
 * child processes, each with its own SQLite metadata DB in a temp AIRFLOW_HOME. Without the venv
 * every test fails with a hint; none is skipped.
 */

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, QUICK_REQUEST, startTestServer, type TestServer } from "../helpers/server.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const AIRFLOW = join(ROOT, ".cache/airflow-venv/bin/airflow");
const PYTHON = join(ROOT, ".cache/airflow-venv/bin/python");
const DAGS = join(ROOT, "pipelines/airflow/dags");
const SETUP_HINT = "run `bash scripts/airflow-venv.sh` (creates .cache/airflow-venv with the pinned Airflow)";
const MODEL = "bike-demand";
// `airflow dags test` spends 15–30 s of each run building its in-process execution API (more on a busy
// machine), and the training runs come on top.
const RUN_TIMEOUT_MS = 480_000;
const TEST_TIMEOUT_MS = 600_000;

interface Ran {
  code: number | null;
  output: string;
  seconds: number;
}

let t: TestServer;
let airflowHome: string;

function run(command: string, args: string[], env: Record<string, string>, timeoutMs = RUN_TIMEOUT_MS) {
  if (!existsSync(command)) throw new Error(`${command} is missing: ${SETUP_HINT}`);
  return new Promise<Ran>((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, {
      cwd: airflowHome,
      env: airflowEnv(env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => chunks.push(c));
    child.stderr.on("data", (c: Buffer) => chunks.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({
        code,
        output: Buffer.concat(chunks).toString("utf8"),
        seconds: (performance.now() - started) / 1000,
      });
    });
  });
}

/** Only what Airflow needs from this process's environment, so that no stray BIKESHARE_* or AIRFLOW_* leaks in. */
function airflowEnv(extra: Record<string, string>): Record<string, string> {
  const keep = ["PATH", "HOME", "LANG", "TZ", "SSL_CERT_FILE"];
  const base = Object.fromEntries(
    keep.flatMap((k) => (process.env[k] ? [[k, process.env[k] as string]] : [])),
  );
  return {
    ...base,
    AIRFLOW_HOME: airflowHome,
    AIRFLOW__CORE__DAGS_FOLDER: DAGS,
    AIRFLOW__CORE__LOAD_EXAMPLES: "False",
    PYTHONDONTWRITEBYTECODE: "1", // no __pycache__ in the work tree
    ...extra,
  };
}

async function dagsTest(dagId: string, logicalDate: string, conf: object, env: Record<string, string>) {
  const ran = await run(AIRFLOW, ["dags", "test", dagId, logicalDate, "-c", JSON.stringify(conf)], env);
  const states = await run(AIRFLOW, ["tasks", "states-for-dag-run", dagId, logicalDate, "-o", "json"], {});
  const json = states.output.split("\n").find((l) => l.startsWith("["));
  if (states.code !== 0 || !json) throw new Error(`states-for-dag-run failed:\n${states.output}`);
  const taskStates = Object.fromEntries(
    (JSON.parse(json) as { task_id: string; state: string }[]).map((s) => [s.task_id, s.state]),
  );
  // What the tasks said, without Airflow's own lines.
  const said = ran.output
    .split("\n")
    .filter((l) => l.includes("[bikeshare]"))
    .map((l) => `  ${l.replace(/^\S+\s+\[\w+\s*\]\s+/, "").replace(/\s+\[bikeshare\].*$/, "")}`);
  console.log(
    `airflow dags test ${dagId}: exit ${ran.code} in ${ran.seconds.toFixed(1)} s\n${said.join("\n")}`,
  );
  return { ...ran, taskStates };
}

function clients(token: string) {
  return {
    registry: connectClient(t.baseUrl, RegistryService, token),
    predict: connectClient(t.baseUrl, PredictService, token),
    monitor: connectClient(t.baseUrl, MonitorService, token),
  };
}

async function versions() {
  const { registry } = clients(t.tokens.reader);
  return (await registry.listModelVersions({ modelName: MODEL })).versions;
}

async function productionVersion() {
  const { registry } = clients(t.tokens.reader);
  return (await registry.getModelVersion({ modelName: MODEL, versionOrAlias: "production" })).version
    ?.version;
}

async function forcedMoves() {
  const { registry } = clients(t.tokens.reader);
  return (await registry.listAliasHistory({ modelName: MODEL })).changes.filter((c) => c.forced);
}

function expectNoSecrets(output: string) {
  for (const token of Object.values(t.tokens)) expect(output).not.toContain(token);
}

beforeAll(async () => {
  airflowHome = await mkdtemp(join(tmpdir(), "bikeshare-airflow-"));
  // A production model whose data ends 2012-06-01: a model trained on all the data beats it at the gate.
  // No cool-down: the week judged follows the DAG-trained version's data by days, and what is under test
  // is the DAG's branch on the retraining the check starts, not the pacing of retrainings.
  t = await startTestServer(
    { retrainCooldownDays: 0 },
    { seedRequest: { ...QUICK_REQUEST, dataUntil: "2012-06-01" } },
  );
  const migrate = await run(AIRFLOW, ["db", "migrate"], {});
  if (migrate.code !== 0) throw new Error(`airflow db migrate failed:\n${migrate.output}`);
  console.log(`airflow db migrate (fresh SQLite): ${migrate.seconds.toFixed(1)} s`);
});

afterAll(async () => {
  await t?.stop();
  if (airflowHome) await rm(airflowHome, { recursive: true, force: true });
});

describe("Airflow DAGs", () => {
  it("all three DAGs load into a DagBag with no import error; the shared client is not parsed as a DAG", async () => {
    const script = [
      "import json, sys",
      "from pathlib import Path",
      "from airflow.dag_processing.dagbag import BundleDagBag",
      "folder = Path(sys.argv[1])",
      "bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name='dags-folder')",
      "print('DAGBAG ' + json.dumps({'dags': {d: sorted(t.task_id for t in bag.dags[d].tasks) for d in bag.dags},",
      "  'errors': bag.import_errors, 'files': sorted(s.file for s in bag.dagbag_stats)}))",
    ].join("\n");
    const ran = await run(PYTHON, ["-c", script, DAGS], {});
    const line = ran.output.split("\n").find((l) => l.startsWith("DAGBAG "));
    expect(line, ran.output).toBeDefined();
    const bag = JSON.parse((line as string).slice("DAGBAG ".length));
    expect(bag.errors).toEqual({});
    expect(bag.files).toEqual(["batch_scoring.py", "monitoring_pipeline.py", "training_pipeline.py"]);
    expect(bag.dags).toEqual({
      training_pipeline: ["check_data", "evaluate", "notify", "promote_if_better", "train"],
      monitoring_pipeline: ["decide", "no_retraining", "run_check", "wait_for_retraining"],
      batch_scoring: ["check_output", "score"],
    });
  });

  it(
    "training_pipeline trains through the server, which registers and promotes a better version",
    async () => {
      expect((await versions()).map((v) => v.version)).toEqual(["1"]);
      const { port } = new URL(t.baseUrl);
      // Base URL and token from an Airflow Connection (URI form) this time.
      const ran = await dagsTest(
        "training_pipeline",
        "2026-11-01T00:00:00+00:00",
        { families: ["gbtree"], search_trials: 0 },
        { AIRFLOW_CONN_BIKESHARE_DEFAULT: `http://:${t.tokens.trainer}@127.0.0.1:${port}` },
      );
      expect(ran.code, ran.output).toBe(0);
      expect(ran.taskStates).toEqual({
        check_data: "success",
        train: "success",
        evaluate: "success",
        promote_if_better: "success",
        notify: "success",
      });
      expect(ran.output).toContain("from Airflow connection bikeshare_default");

      const all = await versions();
      expect(all.map((v) => v.version)).toEqual(["1", "2"]);
      expect(all[1]?.description).toMatch(/^airflow training_pipeline manual__/);
      expect(all[1]?.metrics.test_rmse).toBeLessThan(all[0]?.metrics.test_rmse as number);
      expect(await productionVersion()).toBe("2");
      expect(await forcedMoves()).toEqual([]);
      expect(ran.output).toContain("version 2 promoted to production");
      expectNoSecrets(ran.output);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "monitoring_pipeline branches to the retraining the server's check started after a drifted, inaccurate week",
    async () => {
      const { predict, monitor } = clients(t.tokens.trainer);
      const local = (iso: string, hr = 0) => instantOfLocalHour(dayNumber(iso), hr).getTime();
      // The monitor test's recipe: August hours under conditions far from any training hour, with true counts.
      const week = readHourCsvRecords().filter(
        (r) => (r.dteday as string) >= "2012-08-01" && (r.dteday as string) < "2012-08-08",
      );
      await predict.predictBatch({
        rows: week.map((r) => ({
          ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
          weathersit: 4,
          hum: 1,
          windspeed: 0.85,
          temp: 0.98,
          atemp: 1,
          hour: timestampFromMs(local(r.dteday as string, r.hr as number)),
        })),
      });
      await monitor.reportActuals({
        actuals: week.map((r) => ({
          hour: timestampFromMs(local(r.dteday as string, r.hr as number)),
          cnt: r.cnt as number,
        })),
      });

      // Base URL and token from the environment this time.
      const ran = await dagsTest(
        "monitoring_pipeline",
        "2026-11-02T00:00:00+00:00",
        { check_time: new Date(local("2012-08-08")).toISOString() },
        { BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: t.tokens.trainer },
      );
      expect(ran.code, ran.output).toBe(0);
      expect(ran.taskStates).toEqual({
        run_check: "success",
        decide: "success",
        wait_for_retraining: "success",
        no_retraining: "skipped",
      });
      expect(ran.output).toMatch(/alert (ALERT_RULE_DATASET_DRIFT|ALERT_RULE_LIVE_RMSE)/);

      const all = await versions();
      expect(all.map((v) => v.version)).toEqual(["1", "2", "3"]);
      expect(all[2]?.description).toMatch(/^auto: (performance|drift)/);
      // Whatever the gate decided, the DAG forced nothing.
      expect(await forcedMoves()).toEqual([]);
      expect(await productionVersion()).toBe(all[2]?.aliases.includes("production") ? "3" : "2");
      expectNoSecrets(ran.output);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "a token without the trainer role fails the train task at once, with the server's reason",
    async () => {
      const before = (await versions()).length;
      const ran = await dagsTest(
        "training_pipeline",
        "2026-11-03T00:00:00+00:00",
        { families: ["gbtree"], search_trials: 0 },
        { BIKESHARE_URL: t.baseUrl, BIKESHARE_TOKEN: t.tokens.reader },
      );
      expect(ran.code).not.toBe(0);
      expect(ran.taskStates).toEqual({
        check_data: "success", // reading the registry is allowed to a reader
        train: "failed",
        evaluate: "upstream_failed",
        promote_if_better: "upstream_failed",
        notify: "upstream_failed",
      });
      expect(ran.output).toContain(
        "bikeshare.v1.TrainService/StartTraining failed: permission_denied: test-reader has role reader; " +
          "bikeshare.v1.TrainService/StartTraining needs trainer or higher (HTTP 403)",
      );
      // Not retried: a permission error is permanent (the DAG's two retries would take minutes).
      expect(ran.output).not.toMatch(/up_for_retry/i);
      expect((await versions()).length).toBe(before);
      expectNoSecrets(ran.output);
    },
    TEST_TIMEOUT_MS,
  );
});
