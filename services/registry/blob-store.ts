import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Queryable, SqlDatabase } from "../storage/database.js";
import { invalid } from "./validation.js";

/** Bytes hashed (and, for files, durably written) but not yet recorded by the registry. */
export interface StagedBlob {
  sha256: string;
  size: number;
  /** Held until `commit` by a store that writes them in the recording transaction. */
  bytes?: Buffer;
}

/**
 * Where artifact bytes live, by sha256: files beside an embedded database (`BlobStore`), or the
 * shared PostgreSQL database itself (`DatabaseBlobStore`), where every replica reads them.
 */
export interface ArtifactStore {
  prepare(): Promise<void>;
  /** Hashes the bytes while checking the size limit; `label` names the artifact in that error. */
  stage(data: Uint8Array | AsyncIterable<Uint8Array>, label: string): Promise<StagedBlob>;
  /** Makes the staged bytes readable, inside the transaction that records them. */
  commit(tx: Queryable, blob: StagedBlob): Promise<void>;
  /** The bytes, or undefined when the store lacks them. */
  read(sha256: string): Promise<Buffer | undefined>;
  /** How many bytes are stored, or undefined when none are; `tx` reads within the caller's transaction. */
  size(tx: Queryable, sha256: string): Promise<number | undefined>;
  /** The bytes in chunks; throws an ENOENT error (see isNotFound) when the store lacks them. */
  chunks(sha256: string, chunkSize: number): AsyncIterable<Uint8Array>;
}

/**
 * Content-addressed artifact bytes at `<artifactsDir>/sha256/<2 hex>/<sha256>`, outside the database.
 * A write goes to a temporary file under `<artifactsDir>/tmp/`, is fsynced and renamed into place
 * (atomic), so a crash never leaves a partial file at a content address; the caller records the blob
 * in the database only after `write` returns. Identical content is stored once.
 */

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code === "ENOENT";
}

async function* chunksOf(data: Uint8Array | AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  if (data instanceof Uint8Array) yield data;
  else yield* data;
}

export class BlobStore implements ArtifactStore {
  private readonly tmpDir: string;
  private readonly blobDir: string;

  constructor(
    artifactsDir: string,
    private readonly maxArtifactBytes: number,
  ) {
    this.tmpDir = join(artifactsDir, "tmp");
    this.blobDir = join(artifactsDir, "sha256");
  }

  /** Removes temporary files left by an interrupted upload and creates the folders. */
  async prepare(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.blobDir, { recursive: true });
  }

  /** Where the bytes of `sha256` live. */
  path(sha256: string): string {
    return join(this.blobDir, sha256.slice(0, 2), sha256);
  }

  stage(data: Uint8Array | AsyncIterable<Uint8Array>, label: string): Promise<StagedBlob> {
    return this.write(data, label);
  }

  /** The file is in place before the transaction: a crash in between leaves an unreferenced file only. */
  async commit(): Promise<void> {}

  async read(sha256: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(sha256));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async size(_tx: Queryable, sha256: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(sha256))).size;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async *chunks(sha256: string, chunkSize: number): AsyncIterable<Uint8Array> {
    const handle = await open(this.path(sha256), "r");
    try {
      for (;;) {
        const buffer = Buffer.allocUnsafe(chunkSize);
        const { bytesRead } = await handle.read(buffer, 0, chunkSize, null);
        if (bytesRead === 0) break;
        yield buffer.subarray(0, bytesRead);
      }
    } finally {
      await handle.close();
    }
  }

  /**
   * Streams `data` to a temporary file while hashing, fsyncs it and renames it to its content
   * address. `label` names the artifact in the size-limit error.
   */
  async write(
    data: Uint8Array | AsyncIterable<Uint8Array>,
    label: string,
  ): Promise<{ sha256: string; size: number }> {
    const tmp = join(this.tmpDir, `${randomUUID()}.part`);
    const hash = createHash("sha256");
    let size = 0;
    const handle = await open(tmp, "wx");
    try {
      for await (const chunk of chunksOf(data)) {
        if (!(chunk instanceof Uint8Array)) invalid("chunk", "artifact chunks must be bytes");
        size += chunk.byteLength;
        if (size > this.maxArtifactBytes) {
          invalid("chunk", `artifact ${label} is larger than the limit of ${this.maxArtifactBytes} bytes`);
        }
        hash.update(chunk);
        await handle.write(chunk);
      }
      await handle.sync();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw error;
    }
    await handle.close();
    const sha256 = hash.digest("hex");
    const target = this.path(sha256);
    const dir = join(this.blobDir, sha256.slice(0, 2));
    try {
      const created = await mkdir(dir, { recursive: true });
      // Same content renamed over an existing blob is harmless (and repairs a damaged one).
      await rename(tmp, target);
      await syncDir(dir);
      if (created !== undefined) await syncDir(this.blobDir);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
    return { sha256, size };
  }
}

/** What PostgreSQL's BYTEA holds at most (1 GiB), with room for the row around it. */
export const MAX_DATABASE_BLOB_BYTES = 1024 ** 3 - 1024 * 1024;

/**
 * Artifact bytes in `registry.blobs` of the shared PostgreSQL database: written in the same transaction
 * as the registry row that names them (a version never points at bytes another replica cannot read),
 * backed up with the rest of the state, and no second service to run.
 */
export class DatabaseBlobStore implements ArtifactStore {
  private readonly maxBytes: number;

  constructor(
    private readonly db: SqlDatabase,
    maxArtifactBytes: number,
  ) {
    this.maxBytes = Math.min(maxArtifactBytes, MAX_DATABASE_BLOB_BYTES);
  }

  async prepare(): Promise<void> {}

  async stage(data: Uint8Array | AsyncIterable<Uint8Array>, label: string): Promise<StagedBlob> {
    const hash = createHash("sha256");
    const parts: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of chunksOf(data)) {
      if (!(chunk instanceof Uint8Array)) invalid("chunk", "artifact chunks must be bytes");
      size += chunk.byteLength;
      if (size > this.maxBytes) {
        invalid("chunk", `artifact ${label} is larger than the limit of ${this.maxBytes} bytes`);
      }
      hash.update(chunk);
      parts.push(chunk);
    }
    return { sha256: hash.digest("hex"), size, bytes: Buffer.concat(parts) };
  }

  async commit(tx: Queryable, blob: StagedBlob): Promise<void> {
    await tx.run("INSERT INTO registry.blobs VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING", [
      blob.sha256,
      blob.bytes ?? Buffer.alloc(0),
    ]);
  }

  async read(sha256: string): Promise<Buffer | undefined> {
    const [row] = await this.db.all<{ bytes: Buffer }>("SELECT bytes FROM registry.blobs WHERE sha256 = $1", [
      sha256,
    ]);
    return row?.bytes;
  }

  async size(tx: Queryable, sha256: string): Promise<number | undefined> {
    const [row] = await tx.all<{ n: number }>(
      "SELECT octet_length(bytes) AS n FROM registry.blobs WHERE sha256 = $1",
      [sha256],
    );
    return row?.n;
  }

  /** One statement per chunk: a large artifact never sits whole in this process's memory. */
  async *chunks(sha256: string, chunkSize: number): AsyncIterable<Uint8Array> {
    for (let from = 1; ; from += chunkSize) {
      const [row] = await this.db.all<{ part: Buffer; n: number }>(
        "SELECT substring(bytes FROM $2 FOR $3) AS part, octet_length(bytes) AS n FROM registry.blobs WHERE sha256 = $1",
        [sha256, from, chunkSize],
      );
      if (!row) {
        throw Object.assign(new Error(`no blob ${sha256} in registry.blobs`), { code: "ENOENT" });
      }
      if (row.part.byteLength > 0) yield row.part;
      if (from - 1 + row.part.byteLength >= row.n) return;
    }
  }
}
