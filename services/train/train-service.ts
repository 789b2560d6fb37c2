import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { BikeshareError } from "../../core/errors.js";
import type { FieldViolation } from "../../core/features/index.js";
import { JobState, Objective, type TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import type { JobQueue } from "../../pipelines/jobs/queue.js";
import { checkOverrides } from "../../pipelines/training/search-space.js";
import { actorOf } from "../auth/principal.js";
import { invalidArgument } from "../errors.js";
import type { CancelsAcrossProcesses } from "../jobs/across-processes.js";
import type { JobEvents } from "../jobs/events.js";
import { cancelJob } from "../jobs/lifecycle.js";
import { jobToProto, STATE, STATE_NAME } from "../jobs/proto.js";
import {
  checkCount,
  checkIdempotencyKey,
  checkText,
  MAX_EXPERIMENT_CHARS,
  MAX_LIST_ITEMS,
  MAX_PARAM_NAME_CHARS,
  MAX_PARAM_OVERRIDES,
  MAX_PARAM_VALUE_CHARS,
  MAX_REASON_CHARS,
} from "../jobs/request-limits.js";
import { type JobStore, TERMINAL, type TrainingRequest } from "../jobs/store.js";
import { modelFamilyName } from "../model-family.js";
import { pageOf, pageResult } from "../paging.js";
import { timestampField } from "../timestamp.js";

const OBJECTIVE_NAMES: Record<number, string> = {
  [Objective.SQUARED_ERROR]: "squared_error",
  [Objective.POISSON]: "poisson",
  [Objective.TWEEDIE]: "tweedie",
};
const MAX_TRIALS = 200;

const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export interface TrainServiceDeps {
  jobs: JobStore;
  queue: JobQueue;
  events: JobEvents;
  /** On a database several control processes share: cancels reach the process that runs the job. */
  across?: CancelsAcrossProcesses;
  defaultExperiment: string;
}

export function createTrainService(deps: TrainServiceDeps): ServiceImpl<typeof TrainService> {
  const { jobs, queue, events } = deps;
  const requireJob = async (jobId: string) => {
    if (jobId === "")
      throw invalidArgument([{ field: "job_id", type: "missing", description: "is required" }]);
    const job = await jobs.get(jobId);
    if (!job) throw new BikeshareError("not_found", `no training job ${jobId}`);
    return job;
  };

  return {
    async startTraining(req, ctx) {
      const violations: FieldViolation[] = [];
      checkText(violations, "reason", req.reason, MAX_REASON_CHARS, { lines: true });
      checkText(violations, "experiment", req.experiment, MAX_EXPERIMENT_CHARS);
      checkIdempotencyKey(violations, req.idempotencyKey);
      checkCount(violations, "families", req.families.length, MAX_LIST_ITEMS);
      checkCount(violations, "objectives", req.objectives.length, MAX_LIST_ITEMS);
      checkCount(violations, "param_overrides", Object.keys(req.paramOverrides).length, MAX_PARAM_OVERRIDES);
      if (violations.length > 0) throw invalidArgument(violations);
      const families = req.families.map((f, i) => {
        const name = modelFamilyName(f);
        if (!name)
          violations.push({
            field: `families[${i}]`,
            type: "range",
            description: "must be GBTREE, RANDOM_FOREST or LINEAR",
          });
        return name ?? "";
      });
      const objectives = req.objectives.map((o, i) => {
        const name = OBJECTIVE_NAMES[o];
        if (!name)
          violations.push({
            field: `objectives[${i}]`,
            type: "range",
            description: "must be SQUARED_ERROR, POISSON or TWEEDIE",
          });
        return name ?? "";
      });
      if (req.searchTrials !== undefined && req.searchTrials > MAX_TRIALS) {
        violations.push({
          field: "search_trials",
          type: "range",
          description: `must be at most ${MAX_TRIALS}, got ${req.searchTrials}`,
        });
      }
      for (const [key, value] of Object.entries(req.paramOverrides)) {
        const field = `param_overrides[${JSON.stringify(key.slice(0, MAX_PARAM_NAME_CHARS))}]`;
        if (key.length > MAX_PARAM_NAME_CHARS || !/^[a-z_][a-z0-9_]*$/.test(key)) {
          violations.push({
            field,
            type: "range",
            description: `must be an XGBoost parameter name (lowercase letters, digits, _; at most ${MAX_PARAM_NAME_CHARS})`,
          });
          continue;
        }
        const before = violations.length;
        checkText(violations, field, value, MAX_PARAM_VALUE_CHARS);
        if (violations.length > before) continue;
        // The training job would refuse it only after queueing: a reserved name or a non-number.
        try {
          checkOverrides({ [key]: value });
        } catch (error) {
          violations.push({ field, type: "range", description: (error as Error).message });
        }
      }
      const day = (ms: number | undefined) => (ms === undefined ? undefined : isoDay(ms));
      const dataFrom = day(timestampField(req.dataFrom, "data_from", violations));
      const dataUntil = day(timestampField(req.dataUntil, "data_until", violations));
      if (dataFrom && dataUntil && dataFrom >= dataUntil) {
        violations.push({
          field: "data_until",
          type: "range",
          description: `must be after data_from (${dataFrom}), got ${dataUntil}`,
        });
      }
      if (violations.length > 0) throw invalidArgument(violations);

      const request: TrainingRequest = {
        experiment: req.experiment || deps.defaultExperiment,
        families: [...new Set(families)],
        objectives: [...new Set(objectives)],
        paramOverrides: req.paramOverrides,
        ...(req.searchTrials !== undefined ? { trials: req.searchTrials } : {}),
        ...(dataFrom ? { dataFrom } : {}),
        ...(dataUntil ? { dataUntil } : {}),
        reason: req.reason || "manual",
      };
      // A full disk rejects with StoreUnwritableError: resource_exhausted, which a client may retry later.
      const { job, created } = await jobs.create(
        request,
        actorOf(ctx.values),
        req.idempotencyKey || undefined,
      );
      if (created) {
        events.publish({
          jobId: job.id,
          state: "queued",
          stage: "queued",
          message: `queued: ${request.reason}`,
          time: new Date(),
        });
        await queue.enqueue(job.id);
      }
      return { job: jobToProto(job) };
    },

    async getJob(req) {
      return { job: jobToProto(await requireJob(req.jobId)) };
    },

    async *watchJob(req, ctx) {
      const job = await requireJob(req.jobId);
      if (TERMINAL.includes(job.state)) {
        // Finished before this process started: its live events are gone, its outcome is not.
        yield {
          jobId: job.id,
          state: STATE[job.state],
          stage: job.stage,
          message: job.error || job.state,
          time: timestampFromDate(job.finishedAt ?? new Date()),
        };
        return;
      }
      for await (const e of events.watch(job.id, ctx.signal)) {
        yield {
          jobId: e.jobId,
          state: STATE[e.state],
          stage: e.stage,
          candidate: e.candidate ?? "",
          round: e.round ?? 0,
          trainMetric: e.trainMetric ?? 0,
          validMetric: e.validMetric ?? 0,
          message: e.message,
          time: timestampFromDate(e.time),
        };
      }
    },

    async listJobs(req) {
      const state = req.state === JobState.UNSPECIFIED ? undefined : STATE_NAME[req.state];
      const page = pageOf(req.pageSize, req.pageToken, 500, { list: "jobs", state });
      const list = await jobs.list({
        ...(state ? { state } : {}),
        limit: page.limit + 1,
        offset: page.offset,
      });
      const { items, nextPageToken } = pageResult(list, page);
      return { jobs: items.map(jobToProto), nextPageToken };
    },

    async cancelJob(req) {
      const violations: FieldViolation[] = [];
      checkText(violations, "reason", req.reason, MAX_REASON_CHARS, { lines: true });
      if (violations.length > 0) throw invalidArgument(violations);
      const job = await requireJob(req.jobId);
      if (TERMINAL.includes(job.state)) {
        throw new BikeshareError(
          "failed_precondition",
          `job ${job.id} has already ${job.state === "cancelled" ? "been cancelled" : job.state}`,
        );
      }
      await cancelJob(
        { jobs, events, queue, ...(deps.across ? { across: deps.across } : {}) },
        job,
        req.reason,
      );
      return { job: jobToProto(await requireJob(job.id)) };
    },
  };
}
