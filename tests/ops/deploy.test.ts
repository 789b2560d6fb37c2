import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../helpers/server.js";

/**
 * Containers, Kubernetes, workflows and hooks, checked with the real validators that
 * scripts/ops-tools.sh installs (no Docker engine or cluster runs here): hadolint on the
 * Dockerfile, compose-go's loader on docker-compose.yml, kubeconform against schemas generated from
 * the Kubernetes OpenAPI document, actionlint with shellcheck on the workflows. Each validator is
 * also shown a broken input, so that a validator that checks nothing would fail these tests.
 */

const ROOT = join(import.meta.dirname, "../..");
const K8S_VERSION = "1.37.2";

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let bin: string;
let schemas: string;
const tool = (name: string) => join(bin, name);

/** The documents of each YAML file, in the order given, parsed by yaml2json (ops/tools). */
async function yamlDocs(...files: string[]): Promise<any[][]> {
  const r = await run(tool("yaml2json"), files);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  const byFile: Record<string, any[]> = JSON.parse(r.stdout);
  return files.map((f) => byFile[f] as any[]);
}

beforeAll(async () => {
  // Quiet and fast when the tools are cached; a first run builds them (minutes).
  const r = await run("bash", ["scripts/ops-tools.sh", "--print-dir"], { timeoutMs: 900_000 });
  if (r.code !== 0) throw new Error(`scripts/ops-tools.sh failed:\n${r.stderr}`);
  const dir = r.stdout.trim().split("\n").at(-1) as string;
  bin = join(dir, "bin");
  schemas = join(dir, "k8s-schemas");
  for (const name of ["hadolint", "kubeconform", "actionlint", "shellcheck", "compose-check", "yaml2json"]) {
    if (!existsSync(tool(name))) {
      throw new Error(`${tool(name)} is missing (${r.stderr.trim() || "run scripts/ops-tools.sh"})`);
    }
  }
}, 900_000);

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}

/** Stages of a Dockerfile: continuation lines joined, comments dropped. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && pending === "")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(pending + line);
    pending = "";
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const [keyword = "", ...rest] = line.split(/\s+/);
    const args = rest.join(" ");
    if (keyword.toUpperCase() === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ name: m?.[2] ?? String(stages.length), base: m?.[1] ?? "", instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)?.instructions.push({ keyword: keyword.toUpperCase(), args });
    }
  }
  return stages;
}

/** Packages named by `apt-get install` in a stage. */
function aptPackages(stage: Stage): string[] {
  const packages: string[] = [];
  for (const ins of stage.instructions.filter((i) => i.keyword === "RUN")) {
    for (const m of ins.args.matchAll(/apt-get install ([^&;|]*)/g)) {
      packages.push(...(m[1] as string).split(/\s+/).filter((t) => t !== "" && !t.startsWith("-")));
    }
  }
  return packages;
}

/** Debian packages that are (or carry) a compiler or build toolchain. gcc-12-base is only docs. */
const TOOLCHAIN =
  /^(gcc|g\+\+|cpp|c\+\+|clang|llvm)(-\d+)?$|^(make|binutils|build-essential|libxgboost-dev)$/;

/** Every package `packages` pull in (Depends and PreDepends), resolved by apt on this Debian 12 host. */
async function aptClosure(packages: string[]): Promise<string[]> {
  const r = await run("apt-cache", [
    "depends",
    "--recurse",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
    ...packages,
  ]);
  expect(r.code).toBe(0);
  return [...new Set(r.stdout.split("\n").filter((l) => /^[a-z0-9]/.test(l)))];
}

describe("Dockerfile (ops/docker/Dockerfile)", () => {
  let stages: Stage[];
  let runtime: Stage;
  let build: Stage;

  beforeAll(async () => {
    stages = parseDockerfile(await readFile(join(ROOT, "ops/docker/Dockerfile"), "utf8"));
    runtime = stages.at(-1) as Stage;
    build = stages.find((s) => s.name === "build") as Stage;
  });

  it("passes hadolint with no finding, and hadolint does flag a bad Dockerfile", async () => {
    const good = await run(tool("hadolint"), ["--no-color", "ops/docker/Dockerfile"]);
    expect(good.stdout + good.stderr).toBe("");
    expect(good.code).toBe(0);

    const dir = await mkdtemp(join(tmpdir(), "hadolint-"));
    try {
      await writeFile(join(dir, "Dockerfile"), "FROM node:latest\nRUN cd /app && npm install\n");
      const bad = await run(tool("hadolint"), ["--no-color", join(dir, "Dockerfile")]);
      expect(bad.code).not.toBe(0);
      expect(bad.stdout).toContain("DL3007"); // the :latest tag
      expect(bad.stdout).toContain("DL3003"); // cd instead of WORKDIR
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("builds the addon in a build stage and ships a runtime stage from the same base", () => {
    expect(stages.map((s) => s.name)).toEqual(["build", "runtime"]);
    expect(build.base).toBe(runtime.base);
    expect(
      build.instructions.some((i) => i.keyword === "RUN" && i.args.includes("npm run build:addon")),
    ).toBe(true);
    const copiesFromBuild = runtime.instructions.filter((i) => i.args.startsWith("--from=build"));
    expect(copiesFromBuild.some((i) => i.args.includes("xgboost_addon.node"))).toBe(true);
    expect(copiesFromBuild.some((i) => /\bdist\b/.test(i.args))).toBe(true);
  });

  it("runs the runtime stage as a numeric non-root user, with a healthcheck", () => {
    const users = runtime.instructions.filter((i) => i.keyword === "USER");
    expect(users.length).toBeGreaterThan(0);
    const [uid, gid] = (users.at(-1) as Instruction).args.split(":");
    expect(Number(uid)).toBeGreaterThan(0);
    expect(Number(gid ?? "1")).toBeGreaterThan(0);
    const health = runtime.instructions.find((i) => i.keyword === "HEALTHCHECK");
    expect(health?.args).toContain("/healthz");
  });

  it("has no compiler in the runtime stage, checked through apt's dependency closure", async () => {
    for (const ins of runtime.instructions.filter((i) => i.keyword === "RUN")) {
      expect(ins.args).not.toMatch(/\b(npm (ci|install)|node-gyp|gcc|g\+\+|make)\b/);
    }
    const runtimeClosure = await aptClosure(aptPackages(runtime));
    expect(runtimeClosure).toContain("libxgboost0");
    expect(runtimeClosure.filter((p) => TOOLCHAIN.test(p))).toEqual([]);
    // The same check does see the build stage's toolchain, so it is not vacuous.
    const buildClosure = await aptClosure(aptPackages(build));
    expect(buildClosure.filter((p) => TOOLCHAIN.test(p))).toEqual(expect.arrayContaining(["g++", "make"]));
  });

  it("installs in the runtime the package that provides every library the addon links", async () => {
    const addon = join(ROOT, "core/xgboost/build/Release/xgboost_addon.node");
    const elf = await run("readelf", ["-d", addon]);
    expect(elf.code).toBe(0);
    const needed = [...elf.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map(
      (m) => m[1] as string,
    );
    expect(needed).toContain("libxgboost.so.0");
    const owner = await run("dpkg", ["-S", "libxgboost.so.0"]);
    const packages = owner.stdout.split("\n").map((l) => l.split(":")[0]);
    expect(packages).toContain("libxgboost0");
    expect(aptPackages(runtime)).toContain("libxgboost0");
  });

  it("keeps models out of the image: the registry paths are on the volume", () => {
    const all = stages.flatMap((s) => s.instructions);
    expect(all.filter((i) => i.keyword === "COPY" && /\bmodels\b/.test(i.args))).toEqual([]);
    const volume = runtime.instructions.find((i) => i.keyword === "VOLUME")?.args ?? "";
    const volumePath = /"([^"]+)"/.exec(volume)?.[1] as string;
    expect(volumePath).toBe("/var/lib/bikeshare");
    const env = runtime.instructions
      .filter((i) => i.keyword === "ENV")
      .map((i) => i.args)
      .join(" ");
    for (const name of ["BIKESHARE_MODELS_DIR", "BIKESHARE_DB", "BIKESHARE_TOKENS_FILE"]) {
      expect(env).toMatch(new RegExp(`${name}=${volumePath}/`));
    }
  });

  it("copies only paths that exist and that .dockerignore lets into the build context", async () => {
    const ignore = (await readFile(join(ROOT, ".dockerignore"), "utf8")).split("\n").map((l) => l.trim());
    expect(ignore).toContain("**");
    const allowed = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, ""));
    expect(allowed).not.toContain("models");
    const sources = stages
      .flatMap((s) => s.instructions)
      .filter((i) => i.keyword === "COPY" && !i.args.startsWith("--from"))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) {
      const path = source.replace(/^\.\//, "").replace(/\/$/, "");
      expect(existsSync(join(ROOT, path)), `${path} exists`).toBe(true);
      expect(
        allowed.some((a) => path === a || path.startsWith(`${a}/`)),
        `${path} is in .dockerignore's allow-list`,
      ).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

const COMPOSE_SERVICES = [
  "lb",
  "bikeshare",
  "predict-1",
  "predict-2",
  "postgres",
  "worker",
  "redis",
  "prometheus",
  "grafana",
  "tempo",
  "airflow",
];
/** compose-check sees only these variables; the stack refuses to load without a database password. */
const COMPOSE_ENV = ["-env", "POSTGRES_PASSWORD=compose-check-placeholder"];

/** Names documented in docs/deployment.md, written as `NAME`. */
async function documentedNames(): Promise<Set<string>> {
  const doc = await readFile(join(ROOT, "docs/deployment.md"), "utf8");
  return new Set([...doc.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1] as string));
}

describe("docker-compose.yml", () => {
  let project: any;

  beforeAll(async () => {
    const r = await run(tool("compose-check"), [...COMPOSE_ENV, "docker-compose.yml"]);
    if (r.code !== 0) throw new Error(`compose-go rejected docker-compose.yml:\n${r.stderr}`);
    project = JSON.parse(r.stdout);
  });

  it("refuses to start without a database password, naming the variable", async () => {
    const r = await run(tool("compose-check"), ["docker-compose.yml"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("POSTGRES_PASSWORD");
  });

  it("puts two predict replicas and the control plane behind HAProxy, all on PostgreSQL", async () => {
    const url = new URL(project.services["predict-1"].environment.BIKESHARE_DATABASE_URL);
    expect(url.hostname).toBe("postgres");
    for (const name of ["bikeshare", "predict-1", "predict-2", "worker"]) {
      expect(project.services[name].environment.BIKESHARE_DATABASE_URL, name).toBe(url.href);
    }
    expect(project.services["predict-1"].command).toEqual(["serve", "--role", "predict"]);
    expect(project.services["predict-2"].command).toEqual(["serve", "--role", "predict"]);
    expect(project.services.bikeshare.command).toEqual(["serve", "--role", "control"]);
    expect(project.services["predict-1"].healthcheck.test.join(" ")).toContain("/readyz");
    // Only the load balancer is published; the replicas are reached through it.
    expect(Object.keys(project.services).filter((n) => project.services[n].ports?.length)).toEqual(
      expect.arrayContaining(["lb"]),
    );
    for (const name of ["bikeshare", "predict-1", "predict-2"])
      expect(project.services[name].ports ?? []).toEqual([]);
    const haproxy = project.services.lb.volumes.find((v: any) => v.target.endsWith("haproxy.cfg"));
    const cfg = await readFile(haproxy.source, "utf8");
    const servers = [...cfg.matchAll(/^\s*server \S+ ([a-z0-9-]+):(\d+)/gm)].map((m) => m[1]);
    expect(servers.sort()).toEqual(["bikeshare", "predict-1", "predict-2"]);
    const check = await run("haproxy", ["-c", "-f", haproxy.source]);
    expect(check.stdout + check.stderr).toContain("Configuration file is valid");
  });

  it("is accepted by compose-go's loader, which rejects a broken file naming the problem", async () => {
    expect(Object.keys(project.services).sort()).toEqual([...COMPOSE_SERVICES].sort());
    const dir = await mkdtemp(join(tmpdir(), "compose-"));
    try {
      const file = join(dir, "compose.yml");
      await writeFile(file, "services:\n  api:\n    image: x\n    helthcheck: {}\n    depends_on: [db]\n");
      const bad = await run(tool("compose-check"), [file]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain("helthcheck");
      await writeFile(file, "services:\n  api:\n    image: x\n    depends_on: [db]\n");
      const missing = await run(tool("compose-check"), [file]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('undefined service "db"');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("gives every service a healthcheck, and starts dependants on health where it matters", () => {
    for (const name of COMPOSE_SERVICES) {
      const test = project.services[name].healthcheck?.test as string[] | undefined;
      expect(test?.[0], `${name} healthcheck`).toBe("CMD");
    }
    expect(project.services.lb.healthcheck.test.join(" ")).toContain("/readyz");
    expect(project.services.bikeshare.depends_on.redis.condition).toBe("service_healthy");
    expect(project.services.bikeshare.depends_on.postgres.condition).toBe("service_healthy");
    expect(project.services["predict-1"].depends_on.postgres.condition).toBe("service_healthy");
    expect(project.services.worker.depends_on.redis.condition).toBe("service_healthy");
    expect(project.services.airflow.depends_on.lb.condition).toBe("service_healthy");
  });

  it("builds the app services from the Dockerfile's runtime stage and keeps models on a volume", () => {
    for (const name of ["bikeshare", "predict-1", "predict-2", "worker"]) {
      const svc = project.services[name];
      expect(svc.build.dockerfile).toBe("ops/docker/Dockerfile");
      expect(svc.build.target).toBe("runtime");
    }
    expect(project.services.worker.command).toEqual(["worker"]);
    const registry = project.services.bikeshare.volumes.find((v: any) => v.target === "/var/lib/bikeshare");
    expect(registry.type).toBe("volume");
  });

  it("mounts files that exist and publishes ports on loopback only", () => {
    for (const [name, svc] of Object.entries<any>(project.services)) {
      for (const v of (svc.volumes ?? []).filter((v: any) => v.type === "bind")) {
        expect(existsSync(v.source), `${name}: ${v.source}`).toBe(true);
      }
      for (const p of svc.ports ?? []) expect(p.host_ip, `${name} port ${p.target}`).toBe("127.0.0.1");
    }
  });

  it("wires Prometheus, Grafana and traces to the services and ports that exist", async () => {
    const port = (service: string, variable: string) => project.services[service].environment[variable];
    const prometheusYml = await readFile(join(ROOT, "ops/prometheus/prometheus.yml"), "utf8");
    const targets = [...prometheusYml.matchAll(/"([a-z0-9-]+):(\d+)"/g)].map((m) => [m[1], m[2]]);
    expect(targets).toEqual(
      expect.arrayContaining([
        ["bikeshare", port("bikeshare", "PORT")],
        ["predict-1", port("predict-1", "PORT")],
        ["predict-2", port("predict-2", "PORT")],
        ["worker", port("worker", "WORKER_METRICS_PORT")],
      ]),
    );
    const [grafana, tempoDocs] = await yamlDocs(
      join(ROOT, "ops/grafana/provisioning/datasources/datasources.yml"),
      join(ROOT, "ops/tempo/tempo.yaml"),
    );
    const datasources = grafana?.[0].datasources as { url: string }[];
    for (const { url } of datasources) {
      const host = new URL(url).hostname;
      expect(COMPOSE_SERVICES, url).toContain(host);
    }
    const tempo = tempoDocs?.[0];
    const otlpHttp = tempo.distributor.receivers.otlp.protocols.http.endpoint as string;
    const endpoint = new URL(port("bikeshare", "OTEL_EXPORTER_OTLP_ENDPOINT"));
    expect(endpoint.hostname).toBe("tempo");
    expect(otlpHttp.endsWith(`:${endpoint.port}`)).toBe(true);
  });

  it("documents every variable it sets or reads in docs/deployment.md", async () => {
    const documented = await documentedNames();
    const raw = await readFile(join(ROOT, "docker-compose.yml"), "utf8");
    const names = new Set<string>([...raw.matchAll(/\$\{([A-Z][A-Z0-9_]*)/g)].map((m) => m[1] as string));
    for (const svc of Object.values<any>(project.services)) {
      for (const name of Object.keys(svc.environment ?? {})) names.add(name);
    }
    expect(names.size).toBeGreaterThan(20);
    expect([...names].filter((n) => !documented.has(n))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

describe("Kubernetes manifests (ops/k8s)", () => {
  let docs: any[];
  const find = (kind: string, name: string) =>
    docs.find((d) => d.kind === kind && d.metadata.name === name) as any;

  beforeAll(async () => {
    // kubeconform walks ops/k8s recursively: the optional trial/ manifests are validated too.
    const files = (await readdir(join(ROOT, "ops/k8s"), { recursive: true })).filter((f) =>
      f.endsWith(".yaml"),
    );
    docs = (await yamlDocs(...files.map((f) => join(ROOT, "ops/k8s", f)))).flat();
  });

  const kubeconform = (path: string) =>
    run(tool("kubeconform"), [
      "-strict",
      "-summary",
      "-output",
      "json",
      "-kubernetes-version",
      K8S_VERSION,
      "-schema-location",
      schemas,
      path,
    ]);

  it("validates strictly against the Kubernetes schemas, every resource, none skipped", async () => {
    const r = await kubeconform(join(ROOT, "ops/k8s"));
    const report = JSON.parse(r.stdout);
    expect(report.resources ?? []).toEqual([]); // only failures are listed
    expect(report.summary).toEqual({ valid: docs.length, invalid: 0, errors: 0, skipped: 0 });
    expect(r.code).toBe(0);
  });

  it("rejects a misspelt field, a wrong type and an unknown kind", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kubeconform-"));
    try {
      const predict = await readFile(join(ROOT, "ops/k8s/predict.yaml"), "utf8");
      await writeFile(join(dir, "typo.yaml"), predict.replace("readinessProbe:", "readinesProbe:"));
      await writeFile(join(dir, "type.yaml"), predict.replace("replicas: 3", 'replicas: "three"'));
      await writeFile(
        join(dir, "kind.yaml"),
        "apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: x\n",
      );
      const r = await kubeconform(dir);
      expect(r.code).toBe(1);
      const report = JSON.parse(r.stdout);
      expect(report.summary.invalid + report.summary.errors).toBe(3);
      const messages = JSON.stringify(report.resources);
      expect(messages).toContain("readinesProbe");
      expect(messages).toContain("/spec/replicas");
      expect(messages).toContain("Deploymnet");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("runs predict as stateless replicas that roll without losing capacity, and control apart", () => {
    const predict = find("Deployment", "bikeshare-predict");
    const container = predict.spec.template.spec.containers[0];
    expect(container.args).toEqual(["serve", "--role", "predict"]);
    expect(container.readinessProbe.httpGet.path).toBe("/readyz");
    expect(container.livenessProbe.httpGet.path).toBe("/healthz");
    expect(predict.spec.replicas).toBe(3);
    expect(predict.spec.strategy).toMatchObject({
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 0 },
    });
    // Stateless: no claim on any pod of the predict Deployment, so any node can take any replica.
    expect(predict.spec.template.spec.volumes.filter((v: any) => v.persistentVolumeClaim)).toEqual([]);
    const pdb = find("PodDisruptionBudget", "bikeshare-predict");
    expect(pdb.spec.selector.matchLabels).toEqual(predict.spec.selector.matchLabels);
    expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(1);
    expect(pdb.spec.minAvailable).toBeLessThan(predict.spec.replicas);
    const hpa = find("HorizontalPodAutoscaler", "bikeshare-predict");
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: "Deployment", name: "bikeshare-predict" });
    expect(hpa.spec.minReplicas).toBe(predict.spec.replicas);
    const control = find("Deployment", "bikeshare-control");
    expect(control.spec.template.spec.containers[0].args).toEqual(["serve", "--role", "control"]);
    // Both read the shared database's URL from the Secret, never from the ConfigMap.
    expect(find("Secret", "bikeshare-secrets").stringData).toHaveProperty("BIKESHARE_DATABASE_URL");
    expect(find("ConfigMap", "bikeshare-config").data).not.toHaveProperty("BIKESHARE_DATABASE_URL");
    for (const d of docs.filter((d) => d.kind === "Deployment")) {
      const pod = d.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot, d.metadata.name).toBe(true);
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      for (const c of pod.containers) expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    }
  });

  it("scales the workers with an HPA and wires every reference to an existing object", () => {
    const worker = find("Deployment", "bikeshare-worker");
    expect(worker.spec.template.spec.containers[0].args).toEqual(["worker"]);
    const hpa = find("HorizontalPodAutoscaler", "bikeshare-worker");
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: "Deployment", name: "bikeshare-worker" });
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    expect(worker.spec.template.spec.containers[0].resources.requests.cpu).toBeDefined();

    for (const d of docs.filter((d) => d.kind === "Deployment")) {
      const pod = d.spec.template.spec;
      for (const c of pod.containers) {
        for (const from of c.envFrom ?? []) {
          if (from.configMapRef) expect(find("ConfigMap", from.configMapRef.name)).toBeDefined();
          if (from.secretRef) expect(find("Secret", from.secretRef.name)).toBeDefined();
        }
      }
      for (const v of pod.volumes ?? []) {
        if (v.persistentVolumeClaim) {
          expect(find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)).toBeDefined();
        }
      }
      expect(d.spec.template.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    }
    for (const s of docs.filter((d) => d.kind === "Service")) {
      const pods = docs.filter(
        (d) =>
          (d.kind === "Deployment" || d.kind === "StatefulSet") &&
          Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v),
      );
      expect(pods.length, `service ${s.metadata.name} selects a deployment`).toBe(1);
    }
    for (const d of docs) expect(d.metadata.namespace ?? d.metadata.name).toBe("bikeshare");
  });

  it("keeps no secret value in git and documents every configured variable", async () => {
    const secret = find("Secret", "bikeshare-secrets");
    expect(Object.values(secret.stringData ?? {}).every((v) => v === "")).toBe(true);
    expect(secret.data).toBeUndefined();
    const documented = await documentedNames();
    const names = [
      ...Object.keys(find("ConfigMap", "bikeshare-config").data),
      ...Object.keys(secret.stringData),
    ];
    expect([...names].filter((n) => !documented.has(n))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// GitHub workflows

describe("GitHub workflows (.github/workflows)", () => {
  const actionlint = (cwd: string) =>
    run(tool("actionlint"), ["-no-color", "-shellcheck", tool("shellcheck"), "-pyflakes", ""], { cwd });

  it("pass actionlint with shellcheck on every run: script", async () => {
    const r = await actionlint(ROOT);
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("actionlint rejects an unknown output and an unquoted variable in a copy of the workflows", async () => {
    const dir = await mkdtemp(join(tmpdir(), "actionlint-"));
    try {
      await mkdir(join(dir, ".github/workflows"), { recursive: true });
      await run("git", ["init", "-q", dir]);
      const cd = await readFile(join(ROOT, ".github/workflows/cd.yml"), "utf8");
      const deploy = await readFile(join(ROOT, ".github/workflows/deploy.yml"), "utf8");
      await writeFile(
        join(dir, ".github/workflows/cd.yml"),
        cd.replace("outputs.digest }}", "outputs.digst }}"),
      );
      await writeFile(
        join(dir, ".github/workflows/deploy.yml"),
        deploy.replace('kubectl apply -f "$manifest"', "kubectl apply -f $manifest"),
      );
      const r = await actionlint(dir);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('property "digst" is not defined');
      expect(r.stdout).toContain("SC2086");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("cover CI, CD and scheduled retraining as the issue lists them", async () => {
    const workflows = await yamlDocs(
      ...["ci", "cd", "deploy", "model-training"].map((n) => join(ROOT, `.github/workflows/${n}.yml`)),
    );
    const [ci, cd, deploy, training] = workflows.map((d) => d[0]);
    const runs = (w: any) =>
      Object.values<any>(w.jobs)
        .flatMap((j) => j.steps ?? [])
        .map((s) => s.run ?? "")
        .join("\n");
    for (const command of [
      "biome",
      "tsc --noEmit",
      "buf lint",
      "buf breaking",
      "vitest run",
      "scripts/setup.sh",
    ]) {
      expect(runs(ci), command).toContain(command);
    }
    // yaml2json sorts keys, so the order of jobs is checked through `needs`.
    expect(Object.keys(cd.jobs).sort()).toEqual([
      "build",
      "notify",
      "production",
      "staging",
      "tag-production",
    ]);
    expect(cd.jobs.staging.needs).toContain("build");
    expect(cd.jobs["tag-production"].needs).toContain("production");
    expect(cd.jobs.notify.needs).toContain("production");
    expect(cd.jobs.production.needs).toContain("staging");
    expect(cd.jobs.staging.with.environment).toBe("staging");
    expect(cd.jobs.production.with.environment).toBe("production");
    expect(runs(cd)).toContain("notify --type deployment");
    expect(runs(deploy)).toContain("ops/k8s/smoke-test.sh");
    expect(runs(deploy)).toContain("rollout undo");
    expect(training.on.schedule[0].cron).toMatch(/^\S+ \S+ \S+ \S+ \S+$/);
    expect(runs(training)).toMatch(/run train --families/);
  });
});

// ---------------------------------------------------------------------------------------------
// The CD smoke test, against a real server

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("ops/k8s/smoke-test.sh", () => {
  let ts: TestServer;

  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.stop();
  });

  it("passes against a serving bikeshare: readiness, REST and Connect predictions", async () => {
    const r = await run("bash", ["ops/k8s/smoke-test.sh", ts.baseUrl]);
    expect(r.stderr).toContain(`passed for ${ts.baseUrl}`);
    expect(r.stderr).toMatch(/REST \/predict: \{"prediction":\d/);
    expect(r.stderr).toMatch(/Connect Predict: \{"prediction":\d/);
    // The served version, for the CD workflow's e-mail ($GITHUB_OUTPUT format).
    expect(r.stdout).toBe(`model_version=${ts.server.live.current?.version}\n`);
    expect(r.code).toBe(0);
  });

  it("fails when nothing answers, within its timeout", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const started = Date.now();
    const r = await run("bash", ["ops/k8s/smoke-test.sh", url], {
      env: { ...process.env, SMOKE_TIMEOUT_SECONDS: "3" },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`FAILED: ${url}/readyz did not answer 200 within 3s`);
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});

// ---------------------------------------------------------------------------------------------
// The pre-commit hook, in a scratch repository

describe("pre-commit hook (scripts/hooks)", () => {
  let repo: string;
  const git = (...args: string[]) => run("git", args, { cwd: repo, env: hookEnv });
  // CI=true makes install.sh a no-op (CI never commits); the test wants the real install.
  const hookEnv: NodeJS.ProcessEnv = {
    ...process.env,
    CI: "",
    GIT_AUTHOR_NAME: "test",
    GIT_AUTHOR_EMAIL: "test@example.org",
    GIT_COMMITTER_NAME: "test",
    GIT_COMMITTER_EMAIL: "test@example.org",
  };

  beforeAll(async () => {
    repo = await mkdtemp(join(tmpdir(), "hooks-"));
    await run("git", ["init", "-q", "-b", "main", repo]);
    await mkdir(join(repo, "scripts/hooks"), { recursive: true });
    await mkdir(join(repo, "src"));
    for (const f of ["pre-commit", "install.sh"]) {
      await writeFile(join(repo, "scripts/hooks", f), await readFile(join(ROOT, "scripts/hooks", f)), {
        mode: 0o755,
      });
    }
    await writeFile(join(repo, "biome.json"), await readFile(join(ROOT, "biome.json")));
    await writeFile(
      join(repo, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, target: "es2022", module: "nodenext", types: [] },
        include: ["src"],
      }),
    );
    await writeFile(join(repo, ".gitignore"), "node_modules\n");
    await symlink(join(ROOT, "node_modules"), join(repo, "node_modules"));
    const installed = await run("bash", ["scripts/hooks/install.sh"], { cwd: repo, env: hookEnv });
    expect(installed.code).toBe(0);
    expect(installed.stderr).toContain("installed the pre-commit hook");
    const again = await run("bash", ["scripts/hooks/install.sh"], { cwd: repo, env: hookEnv });
    expect(again.stdout + again.stderr).toBe("");
  });
  afterAll(async () => {
    if (repo) await rm(repo, { recursive: true, force: true });
  });

  it("formats staged files before they are committed", async () => {
    await writeFile(join(repo, "src/a.ts"), "export const  answer   =  42\n");
    await git("add", "-A");
    const commit = await git("commit", "-q", "-m", "format");
    expect(commit.code).toBe(0);
    expect((await git("show", "HEAD:src/a.ts")).stdout).toBe("export const answer = 42;\n");
  });

  it("stops a commit with a lint error or a type error, naming it", async () => {
    await writeFile(join(repo, "src/b.ts"), "export function f(): number {\n  debugger;\n  return 1;\n}\n");
    await git("add", "src/b.ts");
    const lint = await git("commit", "-q", "-m", "lint");
    expect(lint.code).toBe(1);
    expect(lint.stdout + lint.stderr).toContain("noDebugger");
    await git("rm", "-q", "--cached", "src/b.ts");

    await writeFile(join(repo, "src/c.ts"), 'export const n: number = "x";\n');
    await git("add", "src/c.ts");
    const types = await git("commit", "-q", "-m", "types");
    expect(types.code).toBe(1);
    expect(types.stdout + types.stderr).toContain("src/c.ts(1,14): error TS2322");
    expect((await git("log", "--oneline")).stdout.trim().split("\n")).toHaveLength(1);
  });
});
