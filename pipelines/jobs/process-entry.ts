/** Body of a ProcessExecutor child: receives one task, runs it, posts its progress and outcome, exits. */
import { Worker } from "node:worker_threads";
import { PARENT_PID_ENV } from "./process-executor.js";
import { progressBatches, TASKS, TaskCancelled, type TaskKind } from "./tasks.js";

export type ChildMessage<P, O> =
  | { type: "progress"; progress: P[] }
  | { type: "done"; output: O }
  | { type: "error"; name: string; message: string; cancelled: boolean };

const PARENT_POLL_MS = 100;

if (process.send) {
  const controller = new AbortController();
  const post = (message: ChildMessage<unknown, unknown>) =>
    new Promise<void>((resolve) => process.send?.(message, undefined, {}, () => resolve()));
  let finished = false;
  // The parent going away (a crash, SIGKILL) must not leave an orphan training on the cores. Not
  // process.exit: it waits for native work in flight (a whole XGBoost training call) to return.
  process.on("disconnect", () => {
    if (!finished) process.kill(process.pid, "SIGKILL");
  });
  watchParent();
  process.on("message", (message: "abort" | { kind: TaskKind; input: never }) => {
    if (message === "abort") {
      controller.abort(new TaskCancelled());
      return;
    }
    const progress = progressBatches<unknown>((batch) => void post({ type: "progress", progress: batch }));
    TASKS[message.kind](message.input, progress.push, controller.signal)
      .finally(progress.flush)
      .then(
        (output) => post({ type: "done", output }),
        (error: unknown) =>
          post({
            type: "error",
            name: error instanceof Error ? error.name : "Error",
            message: error instanceof Error ? error.message : String(error),
            cancelled: error instanceof TaskCancelled || controller.signal.aborted,
          }),
      )
      .finally(() => {
        finished = true;
        process.disconnect();
      });
  });
}

/**
 * "disconnect" only fires when the event loop turns, and a task holds it for seconds at a time
 * (building columns and matrices, boosting rounds): an orphan then trained on for minutes. A thread
 * of its own sees the parent go (this process is re-parented) within a poll and kills the process.
 */
function watchParent(): void {
  const watcher = new Worker(
    `const { workerData } = require("node:worker_threads");
     setInterval(() => {
       if (process.ppid !== workerData.parent) process.kill(workerData.pid, "SIGKILL");
     }, ${PARENT_POLL_MS});`,
    { eval: true, workerData: { parent: expectedParent(), pid: process.pid }, execArgv: [] },
  );
  watcher.unref();
}

/** The pid of the process that forked this one, told by it: a parent that died before this line ran is seen too. */
function expectedParent(): number {
  const told = Number(process.env[PARENT_PID_ENV]);
  return Number.isInteger(told) && told > 0 ? told : process.ppid;
}
