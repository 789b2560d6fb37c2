/**
 * Which format a scoring input is in: by its magic bytes first, then by its extension.
 */
import { open } from "node:fs/promises";
import { extname } from "node:path";
import { BikeshareError } from "../../core/errors.js";

export type InputFormat = "arrow-file" | "arrow-stream" | "parquet" | "csv";

/** A scoring input that cannot be read as scoring input: the caller's file, so invalid_argument. */
export class InputError extends BikeshareError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("invalid_argument", message, options);
    this.name = "InputError";
  }
}

const FORMAT_NAMES: Record<InputFormat, string> = {
  "arrow-file": "Arrow IPC file",
  "arrow-stream": "Arrow IPC stream",
  parquet: "Parquet",
  csv: "CSV",
};

export const formatName = (format: InputFormat) => FORMAT_NAMES[format];

const ARROW_EXTENSIONS = [".arrow", ".arrows", ".feather", ".ipc"];

/** By content (magic bytes) first, so a misnamed file is still read correctly; then by extension. */
export async function detectInputFormat(path: string): Promise<InputFormat> {
  let head: Buffer;
  let size: number;
  try {
    const file = await open(path, "r");
    try {
      size = (await file.stat()).size;
      head = Buffer.alloc(8);
      await file.read(head, 0, 8, 0);
    } finally {
      await file.close();
    }
  } catch (error) {
    throw new InputError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (size === 0) throw new InputError(`${path} is empty`);
  if (head.subarray(0, 4).toString("latin1") === "PAR1") return "parquet";
  if (head.subarray(0, 6).toString("latin1") === "ARROW1") return "arrow-file";
  if (head.readUInt32LE(0) === 0xffffffff) return "arrow-stream";
  const ext = extname(path).toLowerCase();
  if (ARROW_EXTENSIONS.includes(ext))
    throw new InputError(
      `${path} is not an Arrow IPC file or stream (it does not start with an Arrow header)`,
    );
  if (ext === ".parquet") throw new InputError(`${path} is not a Parquet file (no PAR1 header)`);
  if (ext === ".csv" || ext === ".txt" || ext === ".tsv") return "csv";
  throw new InputError(
    `cannot tell the format of ${path}: use Arrow IPC (${ARROW_EXTENSIONS.join(", ")}), Parquet (.parquet) or CSV (.csv)`,
  );
}
