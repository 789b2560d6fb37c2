import type { Job } from "../../gen/bikeshare/v1/train_pb.js";
import { jobMessage } from "./job-message.js";
import { JOB_HANDLERS } from "./kinds.js";
import type { StoredJob } from "./store.js";

/** A job as the API shows it, whatever its kind (TrainService.GetJob, ListJobs, …). */

export { STATE, STATE_NAME } from "./job-message.js";

export function jobToProto(job: StoredJob): Job {
  const handler = JOB_HANDLERS.find((h) => h.kind === job.kind);
  return jobMessage(job, handler?.toProto?.(job));
}
