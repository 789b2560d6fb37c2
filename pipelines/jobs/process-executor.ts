import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { type JobExecutor, TaskCancelled, type TaskKind, type TaskTypes } from "./tasks.js";
import type { ThreadMessage } from "./thread-entry.js";

const FROM_SOURCES = import.meta.url.endsWith(".ts");
const ENTRY = new URL(`./thread-entry${FROM_SOURCES ? ".ts" : ".js"}`, import.meta.url);

/** Under tsx or vitest the sources are TypeScript: the thread registers tsx's loader before loading them. */
function startThread(workerData: unknown): Worker {
  if (!FROM_SOURCES) return new Worker(ENTRY, { workerData });
  // The ESM build of tsx's API (require.resolve finds the CommonJS one, which cannot register ESM hooks).
  const tsx = pathToFileURL(
    createRequire(import.meta.url)
      .resolve("tsx/esm/api")
      .replace(/\.cjs$/, ".mjs"),
  ).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(ENTRY.href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/**
 * Runs each task in a worker thread of its own, so that building matrices, per-round progress and
 * the ONNX export do not stall the requests this process serves.
 */
export class ThreadExecutor implements JobExecutor {
  private readonly workers = new Set<Worker>();

  run<K extends TaskKind>(
    kind: K,
    _jobId: string,
    input: TaskTypes[K]["input"],
    report: (progress: TaskTypes[K]["progress"]) => void,
    signal: AbortSignal,
  ): Promise<TaskTypes[K]["output"]> {
    if (signal.aborted) return Promise.reject(new TaskCancelled());
    const worker = startThread({ kind, input });
    this.workers.add(worker);
    const onAbort = () => worker.postMessage("abort");
    signal.addEventListener("abort", onAbort, { once: true });
    return new Promise<TaskTypes[K]["output"]>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        this.workers.delete(worker);
        fn();
        void worker.terminate();
      };
      worker.on("message", (message: ThreadMessage<TaskTypes[K]["progress"], TaskTypes[K]["output"]>) => {
        if (message.type === "progress") report(message.progress);
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
      worker.on("error", (error) => settle(() => reject(error)));
      worker.on("exit", (code) =>
        settle(() =>
          reject(new Error(`the ${kind} task's thread exited with code ${code} before finishing`)),
        ),
      );
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.terminate()));
    this.workers.clear();
  }
}
