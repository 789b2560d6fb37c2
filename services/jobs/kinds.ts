import { type BoundJobHandler, type JobHandler, withDeps } from "./lifecycle.js";
import { scoringJobs } from "./score-job.js";
import type { StoredJob } from "./store.js";
import { trainingJobs } from "./train-job.js";

/**
 * Every kind of job this server runs. A new kind is its handler file (`<kind>-job.ts`, a
 * `JobHandler`) and one entry here: the store's record type, the API mapping (`proto.ts`) and the
 * server's runner (`jobHandlers`) take it from this list.
 */
const HANDLERS = [trainingJobs, scoringJobs] as const;

type Listed = (typeof HANDLERS)[number];
type IntersectionOf<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void
  ? I
  : never;

/** A stored job of any kind listed here, narrowed by its `kind`. */
export type KnownJob = Listed extends JobHandler<infer J, infer _Deps> ? J : never;

/** What the server gives the handlers: every handler's dependencies at once. */
export type JobDeps = IntersectionOf<Listed extends JobHandler<infer _J, infer Deps> ? Deps : never>;

/** The listed handlers, each taking the stored job whose kind is its own. */
export const JOB_HANDLERS: readonly JobHandler<StoredJob, JobDeps>[] = HANDLERS;

/** The handlers given their dependencies, for `jobRunner`. */
export function jobHandlers(deps: JobDeps): BoundJobHandler[] {
  return JOB_HANDLERS.map((handler) => withDeps(handler, deps));
}
