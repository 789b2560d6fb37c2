import type { JobExecutor } from "../../pipelines/jobs/tasks.js";

/** A training task's progress and output, recorded once from a real run (v8-serialized). */
export interface RecordedTask {
  progress: unknown[];
  output: unknown;
}

/** Replays a recorded training task: the registry writes after it are what is under test. */
export function replayExecutor(recorded: RecordedTask): JobExecutor {
  return {
    async run(_kind, _jobId, _input, report, _signal) {
      for (const p of recorded.progress) report(p as never);
      return recorded.output as never;
    },
    close: async () => {},
  };
}

/** Wraps `executor`, keeping what its task reported and returned, for replayExecutor. */
export function recordingExecutor(executor: JobExecutor): JobExecutor & { recorded: RecordedTask } {
  const recorded: RecordedTask = { progress: [], output: undefined };
  return {
    recorded,
    async run(kind, jobId, input, report, signal) {
      const output = await executor.run(
        kind,
        jobId,
        input,
        (p) => {
          recorded.progress.push(p);
          report(p);
        },
        signal,
      );
      recorded.output = output;
      return output;
    },
    close: () => executor.close(),
  };
}
