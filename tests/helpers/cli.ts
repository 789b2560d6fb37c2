import { spawn } from "node:child_process";
import { join } from "node:path";

const CLI = join(import.meta.dirname, "../../cli/bikeshare.ts");
const NODE_CLI = [process.execPath, "--import", "tsx", CLI];

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
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

/** The real `bikeshare` command as its own process (from the TypeScript sources), with `env` as its whole environment. */
export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const [node, ...nodeArgs] = NODE_CLI as [string, ...string[]];
  return run(node, [...nodeArgs, ...args], env);
}

const shellQuote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * The same command with a terminal for its stdout and stderr: util-linux `script` runs it on a
 * pseudo-terminal and copies what the terminal shows (both streams, "\n" as "\r\n") to `stdout`.
 */
export function runCliInTerminal(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return run("script", ["-qefc", [...NODE_CLI, ...args].map(shellQuote).join(" "), "/dev/null"], env);
}
