/**
 * The kinds of work a job can do, each a function of (input, report, signal) with no access to
 * the server's registry, so that any executor can run it: a child process of the server or a
 * `bikeshare worker` process on another machine.
 */
export { CANCEL_REQUESTED, TaskCancelled } from "./cancelled.js";

import { computeScoring, type ScoringTaskInput } from "../scoring/job.js";
import type { ScoringProgress, ScoringSummary } from "../scoring/score-file.js";
import {
  computeTraining,
  type TrainingInput,
  type TrainingOutcome,
  type TrainingProgress,
} from "../training/job.js";

export interface TaskTypes {
  train: { input: TrainingInput; progress: TrainingProgress; output: TrainingOutcome };
  score: { input: ScoringTaskInput; progress: ScoringProgress; output: ScoringSummary };
}

export type TaskKind = keyof TaskTypes;

export type Task<K extends TaskKind> = (
  input: TaskTypes[K]["input"],
  report: (progress: TaskTypes[K]["progress"]) => void,
  signal: AbortSignal,
) => Promise<TaskTypes[K]["output"]>;

export const TASKS: { [K in TaskKind]: Task<K> } = {
  train: computeTraining,
  score: computeScoring,
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

/**
 * Coalesces a task's progress into batches sent at most every `intervalMs`: boosting rounds come
 * by the thousand per second, and one message (or Redis write) each would keep the receiving
 * server busy. Order is kept; `flush` sends what is left.
 */
export function progressBatches<P>(send: (batch: P[]) => void, intervalMs = 50) {
  let pending: P[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    send(batch);
  };
  return {
    push(progress: P) {
      pending.push(progress);
      timer ??= setTimeout(flush, intervalMs);
    },
    flush,
  };
}
