/** Body of a ProcessExecutor child: receives one task, runs it, posts its progress and outcome, exits. */
import { progressBatches, TASKS, TaskCancelled, type TaskKind } from "./tasks.js";

export type ChildMessage<P, O> =
  | { type: "progress"; progress: P[] }
  | { type: "done"; output: O }
  | { type: "error"; name: string; message: string; cancelled: boolean };

if (process.send) {
  const controller = new AbortController();
  const post = (message: ChildMessage<unknown, unknown>) =>
    new Promise<void>((resolve) => process.send?.(message, undefined, {}, () => resolve()));
  // The parent going away (a crash, SIGKILL) must not leave an orphan training on the cores.
  process.on("disconnect", () => process.exit(1));
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
      .finally(() => process.disconnect());
  });
}
