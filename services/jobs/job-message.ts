import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Job, JobSchema, JobState } from "../../gen/bikeshare/v1/train_pb.js";
import type { StoredJob, JobState as StoredState } from "./store.js";

/**
 * The fields of the API's `Job` message that every kind of job has. The full mapping, with each
 * kind's own fields, is `jobToProto` (`proto.ts`); a handler file that shows its own new jobs (e.g.
 * StartScoring) builds the message here, as `proto.ts` needs the list of kinds and so the handler.
 */

/** Fields of the `Job` message, as given to `create`. */
export type JobFieldsInit = MessageInitShape<typeof JobSchema>;

export const STATE: Record<StoredState, JobState> = {
  queued: JobState.QUEUED,
  running: JobState.RUNNING,
  succeeded: JobState.SUCCEEDED,
  failed: JobState.FAILED,
  cancelled: JobState.CANCELLED,
};
export const STATE_NAME = Object.fromEntries(Object.entries(STATE).map(([k, v]) => [v, k])) as Record<
  JobState,
  StoredState
>;

/** The job's message: the fields every job has, then `kindFields` (its handler's `toProto`). */
export function jobMessage(job: StoredJob, kindFields: JobFieldsInit = {}): Job {
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
    ...kindFields,
  });
}
