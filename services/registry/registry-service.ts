import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type AliasChangeSchema,
  type ArtifactSchema,
  type ExperimentSchema,
  type ModelVersionSchema,
  RunStatus as ProtoRunStatus,
  type RegisteredModelSchema,
  type RegistryService,
  type RunSchema,
  type UploadArtifactRequest,
} from "../../gen/bikeshare/v1/registry_pb.js";
import { actorOf } from "../auth/principal.js";
import { timestampProblem } from "../timestamp.js";
import {
  type AliasChange,
  type Artifact,
  DEFAULT_CHUNK_SIZE,
  type EndStatus,
  type Experiment,
  type MetricInput,
  type ModelVersion,
  type RegisteredModel,
  type Registry,
  RegistryError,
  type Run,
  type RunStatus,
} from "./registry.js";
import { checkBatchLimits } from "./runs.js";
import { invalid } from "./validation.js";

/**
 * RegistryService over the Registry: validates requests and converts between the storage layer's plain
 * objects and the proto messages. It throws RegistryError; services/errors.ts turns it into the Connect
 * error. The actor recorded in the alias audit log is the caller's principal (set by the auth interceptor).
 */

function required(value: string, field: string): string {
  if (value.trim() === "") invalid(field, `${field} is required`);
  return value;
}

const STATUS_TO_PROTO: Record<RunStatus, ProtoRunStatus> = {
  running: ProtoRunStatus.RUNNING,
  finished: ProtoRunStatus.FINISHED,
  failed: ProtoRunStatus.FAILED,
  cancelled: ProtoRunStatus.CANCELLED,
};

const END_STATUS: Partial<Record<ProtoRunStatus, EndStatus>> = {
  [ProtoRunStatus.FINISHED]: "finished",
  [ProtoRunStatus.FAILED]: "failed",
  [ProtoRunStatus.CANCELLED]: "cancelled",
};

function artifactMessage(a: Artifact): MessageInitShape<typeof ArtifactSchema> {
  return { path: a.path, sha256: a.sha256, sizeBytes: BigInt(a.sizeBytes), contentType: a.contentType };
}

function experimentMessage(e: Experiment): MessageInitShape<typeof ExperimentSchema> {
  return { id: e.id, name: e.name, createdAt: timestampFromDate(e.createdAt), tags: e.tags };
}

function runMessage(r: Run): MessageInitShape<typeof RunSchema> {
  return {
    id: r.id,
    experimentId: r.experimentId,
    name: r.name,
    status: STATUS_TO_PROTO[r.status],
    startTime: timestampFromDate(r.startTime),
    ...(r.endTime ? { endTime: timestampFromDate(r.endTime) } : {}),
    params: r.params,
    metrics: r.metrics,
    tags: r.tags,
    sourceCommit: r.sourceCommit,
    dataFingerprint: r.dataFingerprint,
    artifacts: r.artifacts.map(artifactMessage),
  };
}

function modelMessage(m: RegisteredModel): MessageInitShape<typeof RegisteredModelSchema> {
  return {
    name: m.name,
    description: m.description,
    createdAt: timestampFromDate(m.createdAt),
    aliases: m.aliases,
    latestVersion: m.latestVersion,
  };
}

function versionMessage(v: ModelVersion): MessageInitShape<typeof ModelVersionSchema> {
  return {
    modelName: v.modelName,
    version: v.version,
    runId: v.runId,
    aliases: v.aliases,
    createdAt: timestampFromDate(v.createdAt),
    metrics: v.metrics,
    artifacts: v.artifacts.map(artifactMessage),
    description: v.description,
  };
}

function changeMessage(c: AliasChange): MessageInitShape<typeof AliasChangeSchema> {
  return {
    modelName: c.modelName,
    alias: c.alias,
    fromVersion: c.fromVersion,
    toVersion: c.toVersion,
    actor: c.actor,
    reason: c.reason,
    time: timestampFromDate(c.time),
    forced: c.forced,
  };
}

export function createRegistryService(registry: Registry): ServiceImpl<typeof RegistryService> {
  const requireModel = async (name: string): Promise<RegisteredModel> => {
    const model = await registry.getRegisteredModel(name);
    if (!model) throw new RegistryError("not_found", `model "${name}" does not exist`);
    return model;
  };

  return {
    // -- experiments ----------------------------------------------------------------------------

    async createExperiment(req) {
      required(req.name, "name");
      return { experiment: experimentMessage(await registry.createExperiment(req.name, req.tags)) };
    },

    async getExperiment(req) {
      required(req.experiment, "experiment");
      const experiment = await registry.getExperiment(req.experiment);
      if (!experiment) throw new RegistryError("not_found", `experiment "${req.experiment}" does not exist`);
      return { experiment: experimentMessage(experiment) };
    },

    async listExperiments() {
      return { experiments: (await registry.listExperiments()).map(experimentMessage) };
    },

    // -- runs -----------------------------------------------------------------------------------

    async createRun(req) {
      required(req.experiment, "experiment");
      const run = await registry.createRun({
        experiment: req.experiment,
        name: req.name,
        tags: req.tags,
        sourceCommit: req.sourceCommit,
        dataFingerprint: req.dataFingerprint,
      });
      return { run: runMessage(run) };
    },

    async getRun(req) {
      required(req.runId, "run_id");
      const run = await registry.getRun(req.runId);
      if (!run) throw new RegistryError("not_found", `run ${req.runId} does not exist`);
      return { run: runMessage(run) };
    },

    async getMetricHistory(req) {
      required(req.runId, "run_id");
      required(req.key, "key");
      const points = await registry.metricHistory(req.runId, req.key);
      return {
        points: points.map((p) => ({
          key: req.key,
          value: p.value,
          step: BigInt(Number(p.step)),
          time: timestampFromDate(p.time),
        })),
      };
    },

    async logRunData(req) {
      required(req.runId, "run_id");
      checkBatchLimits(req);
      const metrics: MetricInput[] = req.metrics.map((m, i) => {
        const field = `metrics[${i}]`;
        if (m.key === "") invalid(`${field}.key`, `${field}.key is required`);
        const step = Number(m.step);
        if (!Number.isSafeInteger(step)) invalid(`${field}.step`, `${field}.step is out of range`);
        const badTime = m.time && timestampProblem(m.time.seconds, m.time.nanos);
        if (badTime) invalid(`${field}.time`, `${field}.time ${badTime}`);
        return { key: m.key, value: m.value, step, ...(m.time ? { time: timestampDate(m.time) } : {}) };
      });
      await registry.logRunData(req.runId, { params: req.params, metrics, tags: req.tags });
      return {};
    },

    async endRun(req) {
      required(req.runId, "run_id");
      const status = END_STATUS[req.status];
      if (!status) {
        invalid(
          "status",
          `status must be RUN_STATUS_FINISHED, RUN_STATUS_FAILED or RUN_STATUS_CANCELLED, got ${ProtoRunStatus[req.status] ?? req.status}`,
        );
      }
      return { run: runMessage(await registry.endRun(req.runId, status)) };
    },

    async searchRuns(req) {
      req.experiments.forEach((e, i) => {
        required(e, `experiments[${i}]`);
      });
      const { runs, nextPageToken } = await registry.searchRuns({
        experiments: req.experiments,
        filter: req.filter,
        orderBy: req.orderBy,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      return { runs: runs.map(runMessage), nextPageToken };
    },

    // -- artifacts ------------------------------------------------------------------------------

    async uploadArtifact(requests) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done) invalid("run_id", "run_id is required (the stream had no message)");
      const head: UploadArtifactRequest = first.value;
      required(head.runId, "run_id");
      required(head.path, "path");
      async function* chunks(): AsyncIterable<Uint8Array> {
        if (head.chunk.byteLength > 0) yield head.chunk;
        for (;;) {
          const next = await iterator.next();
          if (next.done) return;
          const m = next.value;
          if ((m.runId !== "" && m.runId !== head.runId) || (m.path !== "" && m.path !== head.path)) {
            invalid("run_id", "run_id and path are set in the first message only");
          }
          if (m.chunk.byteLength > 0) yield m.chunk;
        }
      }
      const artifact = await registry.putArtifact(
        head.runId,
        head.path,
        chunks(),
        head.contentType || undefined,
      );
      return { artifact: artifactMessage(artifact) };
    },

    async listArtifacts(req) {
      required(req.runId, "run_id");
      return { artifacts: (await registry.listArtifacts(req.runId)).map(artifactMessage) };
    },

    async *downloadArtifact(req) {
      required(req.runId, "run_id");
      required(req.path, "path");
      const { artifact, chunks } = await registry.openArtifact(req.runId, req.path, DEFAULT_CHUNK_SIZE);
      let first = true;
      for await (const chunk of chunks) {
        yield first ? { artifact: artifactMessage(artifact), chunk } : { chunk };
        first = false;
      }
      if (first) yield { artifact: artifactMessage(artifact), chunk: new Uint8Array(0) };
    },

    // -- models, versions -----------------------------------------------------------------------

    async createRegisteredModel(req) {
      required(req.name, "name");
      return { model: modelMessage(await registry.createRegisteredModel(req.name, req.description)) };
    },

    async getRegisteredModel(req) {
      required(req.name, "name");
      return { model: modelMessage(await requireModel(req.name)) };
    },

    async listRegisteredModels() {
      return { models: (await registry.listRegisteredModels()).map(modelMessage) };
    },

    async createModelVersion(req) {
      required(req.modelName, "model_name");
      required(req.runId, "run_id");
      const version = await registry.createModelVersion({
        modelName: req.modelName,
        runId: req.runId,
        description: req.description,
      });
      return { version: versionMessage(version) };
    },

    async getModelVersion(req) {
      required(req.modelName, "model_name");
      required(req.versionOrAlias, "version_or_alias");
      await requireModel(req.modelName);
      const version = await registry.getModelVersion(req.modelName, req.versionOrAlias);
      if (!version) {
        const what = /^\d+$/.test(req.versionOrAlias)
          ? `version ${req.versionOrAlias}`
          : `version with alias "${req.versionOrAlias}"`;
        throw new RegistryError("not_found", `model "${req.modelName}" has no ${what}`);
      }
      return { version: versionMessage(version) };
    },

    async listModelVersions(req) {
      required(req.modelName, "model_name");
      return { versions: (await registry.listModelVersions(req.modelName)).map(versionMessage) };
    },

    // -- aliases --------------------------------------------------------------------------------

    async setAlias(req, ctx) {
      required(req.modelName, "model_name");
      required(req.alias, "alias");
      required(req.version, "version");
      required(req.reason, "reason");
      const change = await registry.setAlias({
        modelName: req.modelName,
        alias: req.alias,
        version: req.version,
        reason: req.reason,
        force: req.force,
        actor: actorOf(ctx.values),
      });
      return { change: changeMessage(change) };
    },

    async deleteAlias(req, ctx) {
      required(req.modelName, "model_name");
      required(req.alias, "alias");
      required(req.reason, "reason");
      const change = await registry.deleteAlias({
        modelName: req.modelName,
        alias: req.alias,
        reason: req.reason,
        actor: actorOf(ctx.values),
      });
      return { change: changeMessage(change) };
    },

    async transitionStage(req, ctx) {
      required(req.modelName, "model_name");
      required(req.version, "version");
      required(req.stage, "stage");
      required(req.reason, "reason");
      const version = await registry.transitionStage({
        modelName: req.modelName,
        version: req.version,
        stage: req.stage,
        reason: req.reason,
        actor: actorOf(ctx.values),
      });
      return { version: versionMessage(version) };
    },

    async listAliasHistory(req) {
      required(req.modelName, "model_name");
      const changes = await registry.aliasHistory(req.modelName, req.alias || undefined);
      return { changes: changes.map(changeMessage) };
    },
  };
}
