import { spawn } from "node:child_process";
import { join } from "node:path";

const CLI = join(import.meta.dirname, "../../cli/bikeshare.ts");

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real `bikeshare` command as its own process (from the TypeScript sources), with `env` as its whole environment. */
export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}
