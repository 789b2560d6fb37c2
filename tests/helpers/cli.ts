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

const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * The same command with a terminal for its stdout and stderr: util-linux `script` runs it on a
 * pseudo-terminal and copies what the terminal shows (both streams, "\n" as "\r\n") to `stdout`.
 */
export function runCliInTerminal(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const command = [process.execPath, "--import", "tsx", CLI, ...args].map(shellQuote).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qefc", command, "/dev/null"], {
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
