/** The registry's public shapes: plain objects, independent of the database rows and of the proto. */

export type RunStatus = "running" | "finished" | "failed" | "cancelled";
export type EndStatus = Exclude<RunStatus, "running">;

export interface Experiment {
  id: string;
  name: string;
  createdAt: Date;
  tags: Record<string, string>;
}

export interface Artifact {
  /** Path within the run, e.g. "model.onnx". */
  path: string;
  sha256: string;
  sizeBytes: number;
  contentType: string;
}

export interface Run {
  id: string;
  experimentId: string;
  name: string;
  status: RunStatus;
  startTime: Date;
  endTime?: Date;
  params: Record<string, string>;
  /** Latest value of each metric (highest step, then latest time). */
  metrics: Record<string, number>;
  tags: Record<string, string>;
  sourceCommit: string;
  dataFingerprint: string;
  artifacts: Artifact[];
}

export interface MetricPoint {
  value: number;
  step: number;
  time: Date;
}

export interface MetricInput {
  key: string;
  value: number;
  step?: number;
  time?: Date;
}

export interface RegisteredModel {
  name: string;
  description: string;
  createdAt: Date;
  /** Alias → version. */
  aliases: Record<string, string>;
  /** "" when the model has no version yet. */
  latestVersion: string;
}

export interface ModelVersion {
  modelName: string;
  version: string;
  /** Lineage: the run that produced this version. */
  runId: string;
  aliases: string[];
  createdAt: Date;
  /** The run's latest metrics. */
  metrics: Record<string, number>;
  artifacts: Artifact[];
  description: string;
}

export interface AliasChange {
  modelName: string;
  alias: string;
  /** "" when the alias was created. */
  fromVersion: string;
  /** "" when the alias was deleted. */
  toVersion: string;
  actor: string;
  reason: string;
  time: Date;
  /** True when the champion/challenger gate refused the move and `force` overrode it. */
  forced: boolean;
}

export interface SearchRunsQuery {
  /** Experiment ids or names; empty or absent means all. */
  experiments?: string[];
  filter?: string;
  orderBy?: string[];
  /** Default 100, at most 1000. */
  pageSize?: number;
  pageToken?: string;
}

export interface RegistryOptions {
  /** Largest artifact accepted by putArtifact; default 2 GiB. */
  maxArtifactBytes?: number;
}
