import { createHash, randomUUID } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { invalid } from "./validation.js";

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

export class BlobStore {
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
