/** Body of a ThreadExecutor worker thread: runs one task and posts its progress and outcome. */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { TASKS, TaskCancelled, type TaskKind } from "./tasks.js";

export type ThreadMessage<P, O> =
  | { type: "progress"; progress: P }
  | { type: "done"; output: O }
  | { type: "error"; name: string; message: string; cancelled: boolean };

if (!isMainThread && parentPort) {
  const port = parentPort;
  const { kind, input } = workerData as { kind: TaskKind; input: never };
  const controller = new AbortController();
  port.on("message", (message) => {
    if (message === "abort") controller.abort(new TaskCancelled());
  });
  const post = (message: ThreadMessage<unknown, unknown>) => port.postMessage(message);
  TASKS[kind](input, (progress) => post({ type: "progress", progress }), controller.signal).then(
    (output) => post({ type: "done", output }),
    (error: unknown) =>
      post({
        type: "error",
        name: error instanceof Error ? error.name : "Error",
        message: error instanceof Error ? error.message : String(error),
        cancelled: error instanceof TaskCancelled || controller.signal.aborted,
      }),
  );
}
