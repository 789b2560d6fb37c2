import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * The local artifact store of the registry: one folder per model version under
 * `<root>/<model>/<version>/`, aliases in `<root>/<model>/aliases.json`.
 *
 * Crash safety comes from the file system: a version folder is written in full under a
 * temporary name, fsynced, and renamed into place (a rename is atomic), so a reader or a
 * restart never sees a version without all its artifacts. Aliases are rewritten the same way.
 */

export interface ModelMetadata {
  name: string;
  version: string;
  createdAt: string;
  family: "gbtree" | "random_forest" | "linear";
  objective: string;
  params: Record<string, string | number>;
  featureNames: string[];
  featureSchemaVersion: number;
  /** Normalised total gain per feature (sums to 1). */
  featureImportance: Record<string, number>;
  /** e.g. valid_rmse, test_rmse, split_a_test_rmse. */
  metrics: Record<string, number>;
  rows: Record<string, number>;
  split: Record<string, string>;
  dataFingerprint: string;
  dataSource: string;
  rounds: number;
  xgboostVersion: string;
  trainingSeconds: number;
}

export type NewModel = Omit<ModelMetadata, "name" | "version" | "createdAt">;

export const ARTIFACT_NATIVE = "model.json";
export const ARTIFACT_ONNX = "model.onnx";
const METADATA = "metadata.json";
const ALIASES = "aliases.json";

async function writeDurably(path: string, data: Uint8Array | string): Promise<void> {
  const handle = await open(path, "w");
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class ModelStore {
  readonly dir: string;

  constructor(
    readonly root: string,
    readonly modelName = "bike-demand",
  ) {
    this.dir = join(root, modelName);
  }

  /** Version numbers present, ascending. Temporary folders of an interrupted write are ignored. */
  async versions(): Promise<number[]> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    return entries
      .filter((e) => /^[1-9][0-9]*$/.test(e))
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** Writes all artifacts of a new version, then publishes it with one rename. */
  async register(artifacts: Record<string, Uint8Array | string>, model: NewModel): Promise<ModelMetadata> {
    await mkdir(this.dir, { recursive: true });
    const staging = join(this.dir, `.tmp-${randomUUID()}`);
    await mkdir(staging);
    try {
      for (const [name, data] of Object.entries(artifacts)) await writeDurably(join(staging, name), data);
      // Version numbers are taken by the rename itself, so two writers cannot get the same one.
      for (let attempt = 0; attempt < 100; attempt++) {
        const version = String(((await this.versions()).at(-1) ?? 0) + 1);
        const metadata: ModelMetadata = {
          name: this.modelName,
          version,
          createdAt: new Date().toISOString(),
          ...model,
        };
        await writeDurably(join(staging, METADATA), `${JSON.stringify(metadata, null, 2)}\n`);
        await syncDir(staging);
        try {
          await rename(staging, join(this.dir, version));
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === "ENOTEMPTY" || code === "EEXIST") continue;
          throw error;
        }
        await syncDir(this.dir);
        return metadata;
      }
      throw new Error(`could not allocate a version number in ${this.dir}`);
    } catch (error) {
      await rm(staging, { recursive: true, force: true });
      throw error;
    }
  }

  async aliases(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(join(this.dir, ALIASES), "utf8")) as Record<string, string>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw error;
    }
  }

  async setAlias(alias: string, version: string): Promise<void> {
    if (!(await this.versions()).includes(Number(version))) {
      throw new Error(`model ${this.modelName} has no version ${version}`);
    }
    const next = { ...(await this.aliases()), [alias]: version };
    const temp = join(this.dir, `.${ALIASES}.${randomUUID()}`);
    await writeDurably(temp, `${JSON.stringify(next, null, 2)}\n`);
    await rename(temp, join(this.dir, ALIASES));
    await syncDir(this.dir);
  }

  /** Metadata of a version given by number or alias; undefined when there is none. */
  async resolve(versionOrAlias: string): Promise<ModelMetadata | undefined> {
    const version = /^[0-9]+$/.test(versionOrAlias) ? versionOrAlias : (await this.aliases())[versionOrAlias];
    if (version === undefined) return undefined;
    try {
      return JSON.parse(await readFile(join(this.dir, version, METADATA), "utf8")) as ModelMetadata;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  }

  async readArtifact(version: string, name: string): Promise<Buffer> {
    return readFile(join(this.dir, version, name));
  }
}
