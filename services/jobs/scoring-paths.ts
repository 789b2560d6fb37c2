import { lstat, realpath, stat } from "node:fs/promises";
import { dirname, extname, isAbsolute, relative, resolve, sep } from "node:path";
import type { FieldViolation } from "../../core/features/index.js";
import { checkText } from "./request-limits.js";

/** Linux's PATH_MAX. */
const MAX_PATH_CHARS = 4096;

/**
 * Paths a caller of StartScoring names, confined to the scoring directory on what the file system
 * will really open: a symbolic link planted inside the directory must not lead a trainer's token to
 * read or write anything outside it. Names that merely start with ".." (`..parquet`) are ordinary
 * names.
 */

export type ScoringPathRole = "input" | "output";

export interface ScoringPath {
  full?: string;
  error?: FieldViolation;
}

const escapes = (rel: string) => rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel);

const outside = (field: string, path: string, why = ""): ScoringPath => ({
  error: {
    field,
    type: "range",
    description: `must be a path inside the scoring directory, got ${path}${why}`,
  },
});

const THROUGH_LINK = " (a symbolic link leads out of it)";

function errnoOf(error: unknown): string | undefined {
  return error instanceof Error && "code" in error ? String(error.code) : undefined;
}

/** The real path of `path`, or undefined when it does not exist. */
async function realOrMissing(path: string): Promise<string | undefined> {
  try {
    return await realpath(path);
  } catch (error) {
    if (errnoOf(error) === "ENOENT" || errnoOf(error) === "ENOTDIR") return undefined;
    throw error;
  }
}

/** Whether the name exists, a dangling symbolic link included. */
async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (errnoOf(error) === "ENOENT" || errnoOf(error) === "ENOTDIR") return false;
    throw error;
  }
}

/**
 * Checks `path` (relative to `dir`) for one field of a scoring request. An input must be an existing
 * regular file whose real path is inside the real scoring directory. An output may not exist yet (the
 * job creates missing folders): the deepest folder of it that exists must really be inside.
 */
export async function checkScoringPath(
  dir: string,
  field: string,
  path: string,
  extensions: readonly string[],
  role: ScoringPathRole,
): Promise<ScoringPath> {
  try {
    return await checkPath(dir, field, path, extensions, role);
  } catch (error) {
    // The client's name, not the server's fault: invalid_argument, not internal.
    if (errnoOf(error) === "ENAMETOOLONG")
      return { error: { field, type: "range", description: "is longer than the file system allows" } };
    throw error;
  }
}

async function checkPath(
  dir: string,
  field: string,
  path: string,
  extensions: readonly string[],
  role: ScoringPathRole,
): Promise<ScoringPath> {
  if (path === "") return { error: { field, type: "missing", description: "is required" } };
  const violations: FieldViolation[] = [];
  // Before any file system call: a NUL makes realpath throw ERR_INVALID_ARG_VALUE (a 500).
  checkText(violations, field, path, MAX_PATH_CHARS);
  if (violations[0]) return { error: violations[0] };
  const full = resolve(dir, path);
  const rel = relative(dir, full);
  if (isAbsolute(path) || rel === "" || escapes(rel)) return outside(field, path);
  if (!extensions.includes(extname(path).toLowerCase())) {
    return {
      error: { field, type: "range", description: `must end in ${extensions.join(", ")}, got ${path}` },
    };
  }
  let realDir: string | undefined;
  let real: string | undefined;
  try {
    realDir = await realOrMissing(dir);
    if (realDir === undefined) {
      // Nothing under a missing scoring directory can lead anywhere: the job creates all of it.
      if (role === "output") return { full };
    } else if (role === "input") {
      real = await realOrMissing(full);
    } else {
      let existing = dirname(full);
      while (!(await exists(existing))) existing = dirname(existing);
      real = await realOrMissing(existing);
      // A dangling link: the job's mkdir would create folders wherever it points.
      if (real === undefined) return outside(field, path, THROUGH_LINK);
    }
  } catch (error) {
    if (errnoOf(error) === "ELOOP") return outside(field, path, " (its symbolic links loop)");
    if (errnoOf(error) === "EACCES")
      return { error: { field, type: "range", description: `cannot be reached by the server: ${path}` } };
    throw error;
  }
  if (realDir === undefined || real === undefined)
    return { error: { field, type: "range", description: `no such file in the scoring directory: ${path}` } };
  if (escapes(relative(realDir, real))) return outside(field, path, THROUGH_LINK);
  if (role === "input" && !(await stat(real)).isFile()) {
    return { error: { field, type: "range", description: `is not a regular file: ${path}` } };
  }
  if (role === "output") {
    // The output is written beside its name and renamed over it, so a link at the name itself is
    // replaced, not followed; a folder of that name would make the job fail, so say it now.
    const target = await lstat(full).catch((error: unknown) => {
      if (errnoOf(error) === "ENOENT") return undefined;
      throw error;
    });
    if (target?.isDirectory())
      return { error: { field, type: "range", description: `names a folder, not a file: ${path}` } };
  }
  return { full };
}
