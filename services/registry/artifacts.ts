import { createHash } from "node:crypto";
import { extname } from "node:path";
import type { SqlDatabase } from "../storage/database.js";
import { type ArtifactStore, isNotFound } from "./blob-store.js";
import { RegistryError } from "./errors.js";
import { requireRun, requireRunning } from "./runs.js";
import { ARTIFACT_COLUMNS, type ArtifactRow, toArtifact } from "./schema.js";
import type { Artifact } from "./types.js";
import { checkArtifactPath, checkContentType, invalid, requireText } from "./validation.js";

/**
 * A run's artifacts: the database records (run, path → sha256, size, content type) over the
 * content-addressed ArtifactStore, and reads that check the bytes against the recorded sha256.
 */

export const DEFAULT_CHUNK_SIZE = 64 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  ".json": "application/json",
  ".onnx": "application/octet-stream",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".parquet": "application/vnd.apache.parquet",
  ".png": "image/png",
  ".html": "text/html; charset=utf-8",
};

export class Artifacts {
  constructor(
    private readonly db: SqlDatabase,
    private readonly blobs: ArtifactStore,
  ) {}

  /**
   * Stores one artifact of a running run by content: streamed to a temporary file while hashing,
   * fsynced, renamed to its content address, and only then recorded. Writing the same path again
   * (while the run is running) replaces the record.
   */
  async putArtifact(
    runId: string,
    path: string,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    contentType?: string,
  ): Promise<Artifact> {
    requireText(runId, "run_id", 64);
    const checkedPath = checkArtifactPath(path);
    const type =
      checkContentType(contentType, "content_type") ||
      CONTENT_TYPES[extname(checkedPath).toLowerCase()] ||
      "application/octet-stream";
    await this.db.transaction((tx) =>
      requireRunning(tx, runId, "artifacts can only be added to a running run"),
    );
    const staged = await this.blobs.stage(data, checkedPath);
    const { sha256, size } = staged;
    const artifact: Artifact = { path: checkedPath, sha256, sizeBytes: size, contentType: type };
    await this.db.transaction(async (tx) => {
      await requireRunning(tx, runId, "artifacts can only be added to a running run");
      await this.blobs.commit(tx, staged);
      await tx.run("DELETE FROM registry.artifacts WHERE run_id = $1 AND path = $2", [runId, checkedPath]);
      await tx.run("INSERT INTO registry.artifacts VALUES ($1, $2, $3, $4, $5, $6)", [
        runId,
        checkedPath,
        sha256,
        size,
        type,
        new Date(),
      ]);
    });
    return artifact;
  }

  async listArtifacts(runId: string): Promise<Artifact[]> {
    requireText(runId, "run_id", 64);
    return this.db.transaction(async (tx) => {
      await requireRun(tx, runId);
      const rows = await tx.all<ArtifactRow>(
        `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1 ORDER BY path`,
        [runId],
      );
      return rows.map(toArtifact);
    });
  }

  /** The whole artifact, checked against its sha256. */
  async readArtifact(runId: string, path: string): Promise<Buffer> {
    const artifact = await this.findArtifact(runId, path);
    const bytes = await this.blobs.read(artifact.sha256);
    if (bytes === undefined) throw this.missingBlob(runId, artifact);
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (actual !== artifact.sha256) throw this.corruptBlob(runId, artifact, actual);
    return bytes;
  }

  /**
   * The artifact's record and its bytes in chunks. Checks up front that the file is there with the
   * recorded size; the sha256 is checked as the chunks go, and a mismatch fails the last read.
   */
  async openArtifact(
    runId: string,
    path: string,
    chunkSize = DEFAULT_CHUNK_SIZE,
  ): Promise<{ artifact: Artifact; chunks: AsyncIterable<Uint8Array> }> {
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0)
      invalid("chunk_size", "chunk size must be positive");
    const artifact = await this.findArtifact(runId, path);
    const size = await this.blobs.size(this.db, artifact.sha256);
    if (size === undefined) throw this.missingBlob(runId, artifact);
    if (size !== artifact.sizeBytes) {
      throw new RegistryError(
        "data_loss",
        `artifact ${artifact.path} of run ${runId} has ${size} bytes in the artifact store; ${artifact.sizeBytes} were recorded`,
      );
    }
    const self = this;
    async function* chunks(): AsyncIterable<Uint8Array> {
      const hash = createHash("sha256");
      try {
        for await (const chunk of self.blobs.chunks(artifact.sha256, chunkSize)) {
          hash.update(chunk);
          yield chunk;
        }
      } catch (error) {
        if (isNotFound(error)) throw self.missingBlob(runId, artifact);
        throw error;
      }
      const actual = hash.digest("hex");
      if (actual !== artifact.sha256) throw self.corruptBlob(runId, artifact, actual);
    }
    return { artifact, chunks: chunks() };
  }

  private async findArtifact(runId: string, path: string): Promise<Artifact> {
    requireText(runId, "run_id", 64);
    requireText(path, "path", 1024);
    return this.db.transaction(async (tx) => {
      await requireRun(tx, runId);
      const [row] = await tx.all<ArtifactRow>(
        `SELECT ${ARTIFACT_COLUMNS} FROM registry.artifacts WHERE run_id = $1 AND path = $2`,
        [runId, path],
      );
      if (!row) throw new RegistryError("not_found", `run ${runId} has no artifact "${path}"`, "path");
      return toArtifact(row);
    });
  }

  private missingBlob(runId: string, artifact: Artifact): RegistryError {
    return new RegistryError(
      "not_found",
      `artifact ${artifact.path} of run ${runId} is missing from the artifact store (sha256 ${artifact.sha256})`,
      "path",
    );
  }

  private corruptBlob(runId: string, artifact: Artifact, actual: string): RegistryError {
    return new RegistryError(
      "data_loss",
      `artifact ${artifact.path} of run ${runId} is damaged: its sha256 is ${actual}, ${artifact.sha256} was recorded`,
    );
  }
}
