/**
 * The kinds of work a job can do, each a function of (input, report, signal) with no access to
 * the server's registry, so that any executor can run it: a worker thread of the server or a
 * `bikeshare worker` process on another machine.
 */
export { CANCEL_REQUESTED, TaskCancelled } from "./cancelled.js";

import {
  computeTraining,
  type TrainingInput,
  type TrainingOutcome,
  type TrainingProgress,
} from "../training/job.js";

export interface TaskTypes {
  train: { input: TrainingInput; progress: TrainingProgress; output: TrainingOutcome };
}

export type TaskKind = keyof TaskTypes;

export type Task<K extends TaskKind> = (
  input: TaskTypes[K]["input"],
  report: (progress: TaskTypes[K]["progress"]) => void,
  signal: AbortSignal,
) => Promise<TaskTypes[K]["output"]>;

export const TASKS: { [K in TaskKind]: Task<K> } = {
  train: computeTraining,
};

export function isTaskKind(kind: unknown): kind is TaskKind {
  return typeof kind === "string" && Object.hasOwn(TASKS, kind);
}

/** Runs tasks somewhere other than the caller's event loop. */
export interface JobExecutor {
  run<K extends TaskKind>(
    kind: K,
    jobId: string,
    input: TaskTypes[K]["input"],
    report: (progress: TaskTypes[K]["progress"]) => void,
    signal: AbortSignal,
  ): Promise<TaskTypes[K]["output"]>;
  close(): Promise<void>;
}

/** Runs tasks on the caller's own thread: for tools and tests that serve no requests meanwhile. */
export const inlineExecutor: JobExecutor = {
  run: (kind, _jobId, input, report, signal) => (TASKS[kind] as Task<typeof kind>)(input, report, signal),
  close: async () => {},
};
