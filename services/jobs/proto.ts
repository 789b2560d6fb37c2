import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Job, JobSchema, JobState } from "../../gen/bikeshare/v1/train_pb.js";
import type { JobRecord } from "./store.js";

/** A job as the API shows it, whatever its kind (TrainService.GetJob, PredictService.StartScoring). */

export const STATE: Record<JobRecord["state"], JobState> = {
  queued: JobState.QUEUED,
  running: JobState.RUNNING,
  succeeded: JobState.SUCCEEDED,
  failed: JobState.FAILED,
  cancelled: JobState.CANCELLED,
};
export const STATE_NAME = Object.fromEntries(Object.entries(STATE).map(([k, v]) => [v, k])) as Record<
  JobState,
  JobRecord["state"]
>;

export function jobToProto(job: JobRecord): Job {
  const ts = (d?: Date) => (d ? timestampFromDate(d) : undefined);
  return create(JobSchema, {
    id: job.id,
    state: STATE[job.state],
    stage: job.stage,
    progress: job.progress,
    reason: job.reason,
    createdAt: ts(job.createdAt),
    startedAt: ts(job.startedAt),
    finishedAt: ts(job.finishedAt),
    error: job.error ?? "",
    runId: job.runId ?? "",
    modelVersion: job.modelVersion ?? "",
    promoted: job.promoted,
    requestedBy: job.requestedBy,
    kind: job.kind,
    ...(job.kind === "score"
      ? {
          scoring: {
            input: job.request.input,
            output: job.request.output,
            invalidOutput: job.request.invalidOutput,
            rowsRead: BigInt(job.scoring?.rowsRead ?? 0),
            rowsScored: BigInt(job.scoring?.rowsScored ?? 0),
            rowsInvalid: BigInt(job.scoring?.rowsInvalid ?? 0),
            modelVersion: job.scoring?.modelVersion ?? "",
          },
        }
      : {}),
  });
}
