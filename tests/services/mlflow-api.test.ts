/**
 * MLflow's REST API (docs/mlflow-api.md) through MLflow's own client: mlflow-skinny from the pinned venv
 * of scripts/mlflow-venv.sh runs tests/python/mlflow_notebook.py (what a notebook does) against a real
 * server, and everything it did is then checked through bikeshare's own RegistryService. The reverse
 * too: the runs of a real bikeshare training job are found by mlflow.search_runs. Then the errors,
 * in MLflow's JSON with MLflow's HTTP statuses, straight over HTTP.
 */
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
const PYTHON = ".cache/mlflow-venv/bin/python";
const SCRIPT = "tests/python/mlflow_notebook.py";

type ErrorOutcome = { error_code: string | null; message?: string };
interface Notebook {
  experiment_id: string;
  experiment_name: string;
  runs: Record<"nb-a" | "nb-b", string>;
  run: {
    status: string;
    run_name: string;
    experiment_id: string;
    artifact_uri: string;
    params: Record<string, string>;
    metrics: Record<string, number>;
    tags: Record<string, string>;
    user_tag: string | null;
  };
  history: [number, number][];
  artifacts: [string, boolean][];
  artifacts_in_plots: string[];
  downloaded: string;
  search: string[];
  search_desc: string[];
  search_null: string[];
  search_bad: ErrorOutcome;
  version: { version: string; run_id: string; status: string };
  trainer_alias: ErrorOutcome;
  details: { version: string; run_id: string; description: string; aliases: string[]; status: string };
  by_alias: { version: string; run_id: string };
  model: { name: string; description: string; aliases: Record<string, string> };
  versions_of_run: string[];
  reader_production: ErrorOutcome;
  reader_write: ErrorOutcome;
  trainer_production: ErrorOutcome;
  production: string;
  trained: {
    run_id: string;
    status: string;
    metrics: Record<string, number>;
    params: Record<string, string>;
  }[];
  missing_run: ErrorOutcome;
}

let t: TestServer;
let notebook: Notebook;

function python(job: unknown): Promise<Notebook> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [SCRIPT], {
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        // Fail at once rather than retry: every answer here is final.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES: "0",
        MLFLOW_DISABLE_TELEMETRY: "true",
        DO_NOT_TRACK: "true",
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${SCRIPT} exited ${code}: ${stderr}`));
      try {
        resolve(JSON.parse(stdout) as Notebook);
      } catch (error) {
        reject(new Error(`${SCRIPT} printed no JSON (${error}): ${stdout.slice(0, 500)}`));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

beforeAll(async () => {
  await run("bash", ["scripts/mlflow-venv.sh"], { timeout: 900_000 });
  // One real training job: its runs are what a bikeshare-made run looks like through MLflow.
  t = await startTestServer({}, { seedVersions: 1 });
  notebook = await python({
    uri: t.baseUrl,
    tokens: t.tokens,
    trained_experiment: "tests",
  });
}, 900_000);

afterAll(async () => {
  await t?.stop();
});

describe("a notebook's MLflow calls land in bikeshare's registry", () => {
  const registry = () => connectClient(t.baseUrl, RegistryService, t.tokens.reader);

  it("creates the experiment and the runs with their params, metric history, tags and artifacts", async () => {
    const { experiment } = await registry().getExperiment({ experiment: "notebook" });
    expect(experiment?.id).toBe(notebook.experiment_id);
    expect(notebook.experiment_name).toBe("notebook");

    const a = (await registry().getRun({ runId: notebook.runs["nb-a"] })).run;
    expect(a?.name).toBe("nb-a");
    expect(a?.experimentId).toBe(notebook.experiment_id);
    expect(a?.params).toEqual({ max_depth: "6", eta: "0.1", objective: "squared_error" });
    expect(a?.metrics).toEqual({ rmse: 50, mae: 25, r2: 0.8 });
    expect(a?.tags.family).toBe("gbtree");
    expect(a?.tags.notebook).toBe("yes");
    expect(a?.tags).not.toHaveProperty("to_remove");
    expect(a?.tags["mlflow.user"]).toBe(notebook.run.user_tag);
    expect(a?.artifacts.map((x) => x.path).sort()).toEqual(["notes.txt", "plots/curve.csv"]);

    // RegistryService has no metric-history RPC: the server's registry answers for it.
    const history = await t.server.registry.metricHistory(notebook.runs["nb-a"], "rmse");
    expect(history.map((p) => [p.step, p.value])).toEqual([
      [0, 70],
      [1, 65],
      [2, 60],
      [3, 55],
      [4, 50],
    ]);
    expect(notebook.history).toEqual([
      [0, 70],
      [1, 65],
      [2, 60],
      [3, 55],
      [4, 50],
    ]);

    const download = registry().downloadArtifact({ runId: notebook.runs["nb-a"], path: "notes.txt" });
    let text = "";
    for await (const part of download) text += Buffer.from(part.chunk).toString("utf8");
    expect(text).toBe("run nb-a: depth 6\n");
  });

  it("reads back what it wrote in MLflow's shapes", () => {
    expect(notebook.run).toMatchObject({
      status: "FINISHED",
      run_name: "nb-a",
      experiment_id: notebook.experiment_id,
      artifact_uri: `mlflow-artifacts:/${notebook.experiment_id}/${notebook.runs["nb-a"]}/artifacts`,
      params: { max_depth: "6", eta: "0.1", objective: "squared_error" },
      metrics: { rmse: 50, mae: 25, r2: 0.8 },
    });
    expect(notebook.run.tags).toMatchObject({ family: "gbtree", notebook: "yes", "mlflow.runName": "nb-a" });
    expect(notebook.artifacts).toEqual([
      ["notes.txt", false],
      ["plots", true],
    ]);
    expect(notebook.artifacts_in_plots).toEqual(["plots/curve.csv"]);
    expect(notebook.downloaded).toBe("run nb-a: depth 6\n");
  });

  it("searches with MLflow's grammar and order_by", () => {
    expect(notebook.search).toEqual(["nb-b", "nb-a"]);
    expect(notebook.search_desc).toEqual(["nb-b", "nb-a"]);
    expect(notebook.search_null).toEqual(["nb-b"]);
    expect(notebook.search_bad.error_code).toBe("INVALID_PARAMETER_VALUE");
    expect(notebook.search_bad.message).toContain("== is not an operator; use =");
  });

  it("registers a version from the run, sets aliases and reads the version's details", async () => {
    expect(notebook.version).toEqual({ version: "1", run_id: notebook.runs["nb-a"], status: "READY" });
    expect(notebook.details).toEqual({
      version: "1",
      run_id: notebook.runs["nb-a"],
      description: "first try",
      aliases: ["champion"],
      status: "READY",
    });
    expect(notebook.by_alias).toEqual({ version: "1", run_id: notebook.runs["nb-a"] });
    expect(notebook.model).toEqual({
      name: "notebook-model",
      description: "from a notebook",
      aliases: { champion: "1" },
    });
    expect(notebook.versions_of_run).toEqual(["1"]);

    const { model } = await registry().getRegisteredModel({ name: "notebook-model" });
    expect(model?.aliases).toEqual({ champion: "1", production: "2" });
    const { version } = await registry().getModelVersion({
      modelName: "notebook-model",
      versionOrAlias: "1",
    });
    expect(version?.runId).toBe(notebook.runs["nb-a"]);
    expect(version?.description).toBe("first try");
  });

  it("refuses production to a reader and a trainer; an admin's move is the audited, forced one", async () => {
    expect(notebook.trainer_alias.error_code).toBe("PERMISSION_DENIED");
    expect(notebook.reader_production.error_code).toBe("PERMISSION_DENIED");
    expect(notebook.reader_production.message).toContain("test-reader has role reader");
    expect(notebook.trainer_production.error_code).toBe("PERMISSION_DENIED");
    expect(notebook.reader_write.error_code).toBe("PERMISSION_DENIED");
    expect(notebook.production).toBe("2");

    const { changes } = await registry().listAliasHistory({
      modelName: "notebook-model",
      alias: "production",
    });
    expect(changes.map((c) => [c.fromVersion, c.toVersion, c.actor, c.forced])).toEqual([
      ["", "1", "test-admin", false],
      ["1", "2", "test-admin", true],
    ]);
    expect(changes[1]?.reason).toBe("set through the MLflow API (registered-models/alias)");
  });

  it("shows the runs of a bikeshare training job to mlflow.search_runs", async () => {
    const { runs } = await registry().searchRuns({ experiments: ["tests"], pageSize: 1000 });
    expect(runs.length).toBeGreaterThan(0);
    expect(notebook.trained.map((r) => r.run_id).sort()).toEqual(runs.map((r) => r.id).sort());
    for (const r of runs) {
      const seen = notebook.trained.find((x) => x.run_id === r.id);
      expect(seen?.metrics).toEqual(r.metrics);
      expect(seen?.params).toEqual(r.params);
    }
    expect(notebook.missing_run.error_code).toBe("RESOURCE_DOES_NOT_EXIST");
  });
});

describe("MLflow's errors and the rest of the subset, over plain HTTP", () => {
  const registry = () => connectClient(t.baseUrl, RegistryService, t.tokens.reader);
  const call = async (
    method: string,
    path: string,
    body?: string,
    token: string | null = t.tokens.trainer,
  ) => {
    const res = await fetch(`${t.baseUrl}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body } : {}),
    });
    return { status: res.status, body: (await res.json()) as { error_code?: string; message?: string } };
  };

  it("answers ENDPOINT_NOT_FOUND outside the subset, on both prefixes", async () => {
    for (const path of [
      "/api/2.0/mlflow/runs/log-inputs",
      "/ajax-api/2.0/mlflow/runs/nope",
      "/api/2.0/mlflow-artifacts/mpu/create",
      "/api/3.0/mlflow/traces",
    ]) {
      const res = await call("POST", path, "{}");
      expect(res.status, path).toBe(404);
      expect(res.body.error_code, path).toBe("ENDPOINT_NOT_FOUND");
      expect(res.body.message, path).toContain(path);
    }
    // MLflow's server (Flask) answers 405 for a known path asked with the wrong method.
    const wrongMethod = await call("GET", "/api/2.0/mlflow/runs/create");
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.body.message).toContain("GET is not allowed on /api/2.0/mlflow/runs/create; use POST");
  });

  it("serves the ajax-api alias", async () => {
    const res = await call("GET", "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=notebook");
    expect(res.status).toBe(200);
    expect((res.body as { experiment?: { experiment_id: string } }).experiment?.experiment_id).toBe(
      notebook.experiment_id,
    );
  });

  it("answers UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST and INVALID_PARAMETER_VALUE with MLflow's statuses", async () => {
    const none = await call("GET", "/api/2.0/mlflow/runs/get?run_id=x", undefined, null);
    expect(none).toMatchObject({ status: 401, body: { error_code: "UNAUTHENTICATED" } });
    const forged = await call("GET", "/api/2.0/mlflow/runs/get?run_id=x", undefined, "not-a-token");
    expect(forged).toMatchObject({ status: 401, body: { error_code: "UNAUTHENTICATED" } });
    const reader = await call("POST", "/api/2.0/mlflow/runs/create", "{}", t.tokens.reader);
    expect(reader).toMatchObject({ status: 403, body: { error_code: "PERMISSION_DENIED" } });
    const missing = await call("GET", "/api/2.0/mlflow/runs/get?run_id=nope");
    expect(missing).toMatchObject({ status: 404, body: { error_code: "RESOURCE_DOES_NOT_EXIST" } });
    const badJson = await call("POST", "/api/2.0/mlflow/runs/search", "{not json");
    expect(badJson.status).toBe(400);
    expect(badJson.body.error_code).toBe("INVALID_PARAMETER_VALUE");
    expect(badJson.body.message).toContain("the request body is not valid JSON");
    const badFilter = await call(
      "POST",
      "/api/2.0/mlflow/runs/search",
      JSON.stringify({ filter: "params.a-b = 'x'" }),
    );
    expect(badFilter).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
    expect(badFilter.body.message).toContain('a key with "-" must be quoted');
    const deep = await call("POST", "/api/2.0/mlflow/runs/search", `${"[".repeat(40)}${"]".repeat(40)}`);
    expect(deep.status).toBe(400);
    expect(deep.body.message).toContain("nests deeper than 32 levels");
    const missingField = await call("POST", "/api/2.0/mlflow/experiments/create", "{}");
    expect(missingField).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
    expect(missingField.body.message).toContain("'name'");
    const exists = await call(
      "POST",
      "/api/2.0/mlflow/experiments/create",
      JSON.stringify({ name: "notebook" }),
    );
    expect(exists).toMatchObject({ status: 400, body: { error_code: "RESOURCE_ALREADY_EXISTS" } });
  });

  it("refuses a body over the limit before reading it", async () => {
    const big = JSON.stringify({ filter: "x".repeat(5 * 1024 * 1024) });
    const res = await call("POST", "/api/2.0/mlflow/runs/search", big);
    expect(res.status).toBe(413);
    expect(res.body.error_code).toBe("REQUEST_LIMIT_EXCEEDED");
  });

  it("matches a pathological LIKE pattern in linear time, the event loop free meanwhile", async () => {
    // A RegExp from '%…%x' (`.*` per %) backtracked for 14 s with 21 %; 40 would not end.
    const pattern = `${"%".repeat(40)}x`;
    const started = Date.now();
    const search = call(
      "POST",
      "/api/2.0/mlflow/experiments/search",
      JSON.stringify({ filter: `name LIKE '${pattern}'` }),
    );
    const health = await fetch(`${t.baseUrl}/healthz`);
    expect(health.status).toBe(200);
    const res = await search;
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(2000);
    // No experiment name ends in x; one that has "tebo" in it is still found by the same matcher.
    expect((res.body as { experiments?: unknown[] }).experiments ?? []).toEqual([]);
    const found = await call(
      "POST",
      "/api/2.0/mlflow/experiments/search",
      JSON.stringify({ filter: "name ILIKE '%%TE_O%%k'" }),
    );
    expect((found.body as { experiments: { name: string }[] }).experiments.map((e) => e.name)).toEqual([
      "notebook",
    ]);
    const versions = await call(
      "GET",
      `/api/2.0/mlflow/model-versions/search?filter=${encodeURIComponent(`name LIKE '${pattern}'`)}`,
    );
    expect(versions.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(4000);
    const filter = `name LIKE '${"a".repeat(2000)}'`;
    for (const [method, path, body] of [
      ["POST", "experiments/search", JSON.stringify({ filter })],
      ["GET", `registered-models/search?filter=${encodeURIComponent(filter)}`, undefined],
      ["GET", `model-versions/search?filter=${encodeURIComponent(filter)}`, undefined],
    ] as const) {
      const long = await call(method, `/api/2.0/mlflow/${path}`, body);
      expect(long, path).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
      expect(long.body.message, path).toContain("filter is 2012 characters long; the limit is 1024");
    }
  });

  it("caps order_by, experiment_ids and a batch's metrics, params and tags as MLflow does", async () => {
    const tooManyOrders = await call(
      "POST",
      "/api/2.0/mlflow/runs/search",
      JSON.stringify({ order_by: Array.from({ length: 11 }, (_, i) => `metrics.m${i}`) }),
    );
    expect(tooManyOrders).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
    expect(tooManyOrders.body.message).toContain("order_by: has 11 entries; the limit is 10");
    const tooManyExperiments = await call(
      "POST",
      "/api/2.0/mlflow/runs/search",
      JSON.stringify({ experiment_ids: Array.from({ length: 101 }, (_, i) => `${i}`) }),
    );
    expect(tooManyExperiments).toMatchObject({
      status: 400,
      body: { error_code: "INVALID_PARAMETER_VALUE" },
    });
    expect(tooManyExperiments.body.message).toContain(
      "experiment_ids names 101 experiments; the limit is 100",
    );

    const created = await call(
      "POST",
      "/api/2.0/mlflow/runs/create",
      JSON.stringify({ experiment_id: notebook.experiment_id, run_name: "batches" }),
    );
    const id = (created.body as { run: { info: { run_id: string } } }).run.info.run_id;
    const kv = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: "v" }));
    const metrics = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ key: "m", value: i, timestamp: 1, step: i }));
    for (const [body, text] of [
      [{ metrics: metrics(1001) }, "at most 1000 metrics, got 1001"],
      [{ params: kv(101) }, "at most 100 params, got 101"],
      [{ tags: kv(101) }, "at most 100 tags, got 101"],
      [{ metrics: metrics(950), params: kv(60) }, "at most 1000 metrics, params and tags in all, got 1010"],
    ] as const) {
      const res = await call(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        JSON.stringify({ run_id: id, ...body }),
      );
      expect(res, text).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
      expect(res.body.message).toContain(text);
    }
    const ok = await call(
      "POST",
      "/api/2.0/mlflow/runs/log-batch",
      JSON.stringify({ run_id: id, metrics: metrics(1000) }),
    );
    expect(ok.status).toBe(200);
  });

  it("keeps a __proto__ tag and writes NaN and the infinities as MLflow's JSON does", async () => {
    const created = await call(
      "POST",
      "/api/2.0/mlflow/runs/create",
      JSON.stringify({ experiment_id: notebook.experiment_id, run_name: "odd-values" }),
    );
    const id = (created.body as { run: { info: { run_id: string } } }).run.info.run_id;
    const batch = await call(
      "POST",
      "/api/2.0/mlflow/runs/log-batch",
      JSON.stringify({
        run_id: id,
        tags: [{ key: "__proto__", value: "kept" }],
        metrics: [
          { key: "nan", value: "NaN", timestamp: 1, step: 0 },
          { key: "inf", value: "Infinity", timestamp: 1, step: 0 },
          { key: "ninf", value: "-Infinity", timestamp: 1, step: 0 },
          // Whole numbers past int64 were bound as BIGINT and answered 500.
          { key: "big", value: 1e19, timestamp: 1, step: 0 },
          { key: "huge", value: 1e308, timestamp: 1, step: 0 },
        ],
      }),
    );
    expect(batch.status).toBe(200);
    const got = (await call("GET", `/api/2.0/mlflow/runs/get?run_id=${id}`)).body as {
      run: { data: { tags: { key: string; value: string }[]; metrics: { key: string; value: unknown }[] } };
    };
    expect(got.run.data.tags).toContainEqual({ key: "__proto__", value: "kept" });
    const values = Object.fromEntries(got.run.data.metrics.map((m) => [m.key, m.value]));
    expect(values).toEqual({ nan: "NaN", inf: "Infinity", ninf: "-Infinity", big: 1e19, huge: 1e308 });
    for (const [path, body] of [
      ["runs/create", { experiment_id: notebook.experiment_id, run_name: "esc\u001b[31m" }],
      ["runs/update", { run_id: id, run_name: "bell\u0007" }],
      ["runs/set-tag", { run_id: id, key: "mlflow.runName", value: "bell\u0007" }],
    ] as const) {
      const res = await call("POST", `/api/2.0/mlflow/${path}`, JSON.stringify(body));
      expect(res, path).toMatchObject({ status: 400, body: { error_code: "INVALID_PARAMETER_VALUE" } });
      expect(res.body.message, path).toContain("must not have control characters");
    }
    const history = (await call("GET", `/api/2.0/mlflow/metrics/get-history?run_id=${id}&metric_key=ninf`))
      .body as { metrics: { value: unknown }[] };
    expect(history.metrics.map((m) => m.value)).toEqual(["-Infinity"]);
  });

  it("serves the rest of the subset: a run's life by plain calls, the searches, rename and alias deletion", async () => {
    type Json = Record<string, unknown> & { run?: { info: Record<string, unknown> } };
    const post = async (path: string, body: unknown, token = t.tokens.trainer, method = "POST") => {
      const res = await call(method, `/api/2.0/mlflow/${path}`, JSON.stringify(body), token);
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(200);
      return res.body as Json;
    };
    const get = async (path: string) => {
      const res = await call("GET", `/api/2.0/mlflow/${path}`);
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(200);
      return res.body as Json;
    };

    const created = await post("runs/create", {
      experiment_id: notebook.experiment_id,
      run_name: "plain",
      tags: [{ key: "k", value: "v" }],
    });
    const id = created.run?.info.run_id as string;
    expect(created.run?.info).toMatchObject({
      run_name: "plain",
      status: "RUNNING",
      lifecycle_stage: "active",
    });
    await post("runs/log-metric", {
      run_id: id,
      key: "loss",
      value: 0.5,
      timestamp: 1_700_000_000_000,
      step: 3,
    });
    await post("runs/log-parameter", { run_id: id, key: "lr", value: "0.01" });
    await post("runs/set-tag", { run_id: id, key: "gone", value: "soon" });
    await post("runs/delete-tag", { run_id: id, key: "gone" });
    await post("runs/set-tag", { run_id: id, key: "mlflow.runName", value: "renamed-by-tag" });
    const updated = await post("runs/update", {
      run_id: id,
      status: "KILLED",
      end_time: Date.now(),
      run_name: "plain-2",
    });
    expect(updated.run_info).toMatchObject({ run_name: "plain-2", status: "KILLED" });
    const again = await get(`runs/get?run_id=${id}`);
    expect((again.run as unknown as { data: unknown }).data).toEqual({
      metrics: [{ key: "loss", value: 0.5, timestamp: 1_700_000_000_000, step: 3 }],
      params: [{ key: "lr", value: "0.01" }],
      tags: [
        { key: "k", value: "v" },
        { key: "mlflow.runName", value: "plain-2" },
      ],
    });
    const { run } = await registry().getRun({ runId: id });
    expect([run?.name, run?.params, run?.tags, run?.metrics]).toEqual([
      "plain-2",
      { lr: "0.01" },
      { k: "v" },
      { loss: 0.5 },
    ]);
    const killed = await post("runs/search", {
      experiment_ids: [notebook.experiment_id],
      filter: "status = 'KILLED'",
    });
    expect((killed.runs as { info: { run_id: string } }[]).map((r) => r.info.run_id)).toEqual([id]);
    const logged = await call(
      "POST",
      "/api/2.0/mlflow/runs/log-metric",
      JSON.stringify({ run_id: id, key: "x", value: 1 }),
    );
    // MLflow's ERROR_CODE_TO_HTTP_STATUS (mlflow/exceptions.py) gives INVALID_STATE 500.
    expect(logged).toMatchObject({ status: 500, body: { error_code: "INVALID_STATE" } });

    const history = await get(`metrics/get-history?run_id=${id}&metric_key=loss`);
    expect(history.metrics).toEqual([{ key: "loss", value: 0.5, timestamp: 1_700_000_000_000, step: 3 }]);
    const experiments = await post("experiments/search", { filter: "name LIKE 'note%'" });
    expect((experiments.experiments as { name: string }[]).map((e) => e.name)).toEqual(["notebook"]);
    expect(
      ((await get(`experiments/get?experiment_id=${notebook.experiment_id}`)).experiment as { name: string })
        .name,
    ).toBe("notebook");
    const listed = await get(`artifacts/list?run_id=${notebook.runs["nb-a"]}&path=plots`);
    expect(listed.files).toEqual([
      { path: "plots/curve.csv", is_dir: false, file_size: Buffer.byteLength("step,rmse\n0,1\n") },
    ]);
    const models = await get("registered-models/search?filter=name%20%3D%20'notebook-model'");
    expect(
      (models.registered_models as { name: string; aliases: unknown }[]).map((m) => [m.name, m.aliases]),
    ).toEqual([
      [
        "notebook-model",
        [
          { alias: "champion", version: "1" },
          { alias: "production", version: "2" },
        ],
      ],
    ]);
    const versions = await get("model-versions/search?filter=name%3D'notebook-model'");
    expect(
      (versions.model_versions as { version: string; current_stage: string }[]).map((v) => [
        v.version,
        v.current_stage,
      ]),
    ).toEqual([
      ["1", "None"],
      ["2", "Production"],
    ]);
    const latest = await post("registered-models/get-latest-versions", {
      name: "notebook-model",
      stages: ["Production"],
    });
    expect((latest.model_versions as { version: string }[]).map((v) => v.version)).toEqual(["2"]);

    await post("registered-models/create", { name: "to-rename" });
    await post("model-versions/create", {
      name: "to-rename",
      source: `runs:/${notebook.runs["nb-b"]}/notes.txt`,
    });
    await post(
      "registered-models/alias",
      { name: "to-rename", alias: "canary", version: "1" },
      t.tokens.admin,
    );
    const renamed = await post(
      "registered-models/rename",
      { name: "to-rename", new_name: "renamed" },
      t.tokens.admin,
    );
    expect(renamed.registered_model).toMatchObject({
      name: "renamed",
      aliases: [{ alias: "canary", version: "1" }],
    });
    expect(
      (await registry().getModelVersion({ modelName: "renamed", versionOrAlias: "canary" })).version?.runId,
    ).toBe(notebook.runs["nb-b"]);
    await post("registered-models/alias", { name: "renamed", alias: "canary" }, t.tokens.admin, "DELETE");
    const { changes } = await registry().listAliasHistory({ modelName: "renamed", alias: "canary" });
    expect(changes.map((c) => [c.fromVersion, c.toVersion, c.actor])).toEqual([
      ["", "1", "test-admin"],
      ["1", "", "test-admin"],
    ]);
    const served = await call(
      "POST",
      "/api/2.0/mlflow/registered-models/rename",
      JSON.stringify({ name: t.config.modelName, new_name: "elsewhere" }),
      t.tokens.admin,
    );
    expect(served).toMatchObject({ status: 500, body: { error_code: "INVALID_STATE" } });
  });

  it("deletes and restores a run as MLflow does: hidden from searches, then back", async () => {
    const id = notebook.runs["nb-b"];
    const search = async (view?: string) => {
      const res = await call(
        "POST",
        "/api/2.0/mlflow/runs/search",
        JSON.stringify({
          experiment_ids: [notebook.experiment_id],
          ...(view ? { run_view_type: view } : {}),
        }),
      );
      return ((res.body as { runs?: { info: { run_id: string } }[] }).runs ?? []).map((r) => r.info.run_id);
    };
    expect(await search()).toContain(id);
    expect((await call("POST", "/api/2.0/mlflow/runs/delete", JSON.stringify({ run_id: id }))).status).toBe(
      200,
    );
    expect(await search()).not.toContain(id);
    expect(await search("DELETED_ONLY")).toEqual([id]);
    const got = await call("GET", `/api/2.0/mlflow/runs/get?run_id=${id}`);
    expect((got.body as { run?: { info: { lifecycle_stage: string } } }).run?.info.lifecycle_stage).toBe(
      "deleted",
    );
    expect((await call("POST", "/api/2.0/mlflow/runs/restore", JSON.stringify({ run_id: id }))).status).toBe(
      200,
    );
    expect(await search()).toContain(id);
  });
});
