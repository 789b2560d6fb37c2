import { type ChildProcess, fork } from "node:child_process";
import { setPriority } from "node:os";
import { fileURLToPath } from "node:url";
import type { ChildMessage } from "./process-entry.js";
import { type JobExecutor, TaskCancelled, type TaskKind, type TaskTypes } from "./tasks.js";

const FROM_SOURCES = import.meta.url.endsWith(".ts");
const ENTRY = fileURLToPath(new URL(`./process-entry${FROM_SOURCES ? ".ts" : ".js"}`, import.meta.url));
// Under tsx or vitest the sources are TypeScript: the child needs the same loader.
const EXEC_ARGV = FROM_SOURCES ? ["--import", "tsx"] : [];

/**
 * Niceness of task processes. On two cores, XGBoost's threads at the server's priority took the CPU
 * from request handling (predict p99 35 ms during training in a worker thread); at nice 10 the
 * kernel gives the server about ten times their share whenever both want a core.
 */
const TASK_NICENESS = 10;

/** Tells a task process which pid is its parent, which it watches (see process-entry.ts). */
export const PARENT_PID_ENV = "BIKESHARE_PARENT_PID";

/**
 * Runs each task in a child process of its own, at a lower CPU priority: matrices, boosting rounds
 * and the ONNX export never hold the event loop or the cores that serve requests, and a crash in
 * native code ends the task, not the server.
 */
export class ProcessExecutor implements JobExecutor {
  private readonly children = new Set<ChildProcess>();

  run<K extends TaskKind>(
    kind: K,
    _jobId: string,
    input: TaskTypes[K]["input"],
    report: (progress: TaskTypes[K]["progress"]) => void,
    signal: AbortSignal,
  ): Promise<TaskTypes[K]["output"]> {
    if (signal.aborted) return Promise.reject(new TaskCancelled());
    // "advanced" serialization is the structured clone: typed arrays (ONNX bytes, matrices) arrive intact.
    const child = fork(ENTRY, [], {
      execArgv: EXEC_ARGV,
      serialization: "advanced",
      stdio: "inherit",
      env: { ...process.env, [PARENT_PID_ENV]: String(process.pid) },
    });
    this.children.add(child);
    try {
      if (child.pid !== undefined) setPriority(child.pid, TASK_NICENESS);
    } catch {
      // Not allowed here (rare): the task runs at normal priority.
    }
    const onAbort = () => child.send("abort");
    signal.addEventListener("abort", onAbort, { once: true });
    return new Promise<TaskTypes[K]["output"]>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        this.children.delete(child);
        fn();
        if (child.exitCode === null) child.kill();
      };
      child.on("message", (message: ChildMessage<TaskTypes[K]["progress"], TaskTypes[K]["output"]>) => {
        if (message.type === "progress") for (const progress of message.progress) report(progress);
        else if (message.type === "done") settle(() => resolve(message.output));
        else
          settle(() =>
            reject(
              message.cancelled
                ? new TaskCancelled()
                : Object.assign(new Error(message.message), { name: message.name }),
            ),
          );
      });
      child.on("error", (error) => settle(() => reject(error)));
      child.on("exit", (code, killedBy) =>
        settle(() =>
          reject(
            new Error(
              `the ${kind} task's process ended (${killedBy ?? `exit code ${code}`}) before finishing`,
            ),
          ),
        ),
      );
      child.send({ kind, input });
    });
  }

  async close(): Promise<void> {
    const exits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) =>
          child.exitCode !== null ? resolve() : child.once("exit", () => resolve()),
        ),
    );
    for (const child of this.children) child.kill();
    this.children.clear();
    await Promise.all(exits);
  }
}
