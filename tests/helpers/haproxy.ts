import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "./ports.js";

const SHIPPED = join(import.meta.dirname, "../../ops/haproxy/haproxy.cfg");

export interface Balancer {
  readonly url: string;
  readonly child: ChildProcess;
}

/**
 * HAProxy with the shipped ops/haproxy/haproxy.cfg, only its listening address and its servers'
 * addresses changed (and Docker's resolvers left out: loopback addresses need no DNS), so that tests
 * and benchmarks run the configuration a deployment runs. Resolves once both predict replicas have
 * passed their health checks. `log`: a file for its request log, or `false` to leave logging out (a
 * benchmark measures the balancer, not its log writes).
 */
export async function startHaproxy(options: {
  dir: string;
  name: string;
  predictPorts: readonly number[];
  controlPort: number;
  log: string | false;
  edit?: (cfg: string) => string;
}): Promise<Balancer> {
  const port = await freePort();
  let cfg = (options.edit ?? ((c) => c))(await readFile(SHIPPED, "utf8"));
  const replace = (from: RegExp, to: string) => {
    if (!from.test(cfg)) throw new Error(`ops/haproxy/haproxy.cfg no longer matches ${from}`);
    cfg = cfg.replace(from, to);
  };
  replace(/^ {2}bind :8080$/m, `  bind 127.0.0.1:${port}`);
  replace(/^ {2}server predict-1 \S+$/m, `  server predict-1 127.0.0.1:${options.predictPorts[0]}`);
  replace(/^ {2}server predict-2 \S+$/m, `  server predict-2 127.0.0.1:${options.predictPorts[1]}`);
  replace(/^ {2}server control \S+$/m, `  server control 127.0.0.1:${options.controlPort}`);
  replace(/^resolvers docker\n( {2}.*\n)+/m, "");
  replace(/ resolvers docker/, "");
  if (options.log === false) replace(/^ {2}log stdout format raw local0 info\n/m, "");
  const path = join(options.dir, `${options.name}.cfg`);
  await writeFile(path, cfg);
  const child = spawn("haproxy", ["-f", path], { stdio: ["ignore", "pipe", "pipe"] });
  if (options.log !== false) child.stdout?.pipe(createWriteStream(options.log));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while ((await fetch(`${url}/readyz`).catch(() => undefined))?.status !== 200) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`HAProxy did not start or no replica became ready: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  // Both replicas pass their two health checks ("rise 2", 1 s apart) before traffic is measured.
  await new Promise((r) => setTimeout(r, 2500));
  return { url, child };
}
