/**
 * The model's inputs and output as Open Inference Protocol v2 tensors (docs/oip-v2.md), whatever carried
 * them: REST JSON, REST binary tensor data, gRPC typed contents or gRPC raw contents all end as
 * `InputTensor`s with flat row-major elements, and every row goes through `validateRecord`, the rules
 * Predict and the REST routes apply.
 */
import type { BikeshareError } from "../../core/errors.js";
import {
  type FieldViolation,
  RAW_FIELD_NAMES,
  RAW_FIELDS,
  type RawRecord,
  TIMESTAMP_FIELD,
  ViolationList,
  validateRecord,
} from "../../core/features/index.js";
import { invalidRequest } from "../errors.js";

/** One FP32 tensor [N, 12] holding the 12 raw fields in RAW_FIELD_NAMES order, instead of 12 tensors. */
export const MATRIX_TENSOR = "input";
/** Optional BYTES tensor [N]: each row's hour as an ISO-8601 instant, for the date-aware features. */
export const TIMESTAMP_TENSOR = TIMESTAMP_FIELD;
/** The only output: predicted rentals of the hour, FP32 [N, 1]. */
export const OUTPUT_TENSOR = "cnt";

/** Integer fields are listed as INT32, the others FP32; any numeric datatype is accepted for any field. */
const INTEGER_FIELDS = new Set(RAW_FIELDS.filter((f) => f.kind === "integer").map((f) => f.name));

export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export const INPUT_METADATA: readonly TensorMetadata[] = [
  ...RAW_FIELD_NAMES.map((name) => ({
    name,
    datatype: INTEGER_FIELDS.has(name) ? "INT32" : "FP32",
    shape: [-1],
  })),
  { name: TIMESTAMP_TENSOR, datatype: "BYTES", shape: [-1] },
];
export const OUTPUT_METADATA: readonly TensorMetadata[] = [
  { name: OUTPUT_TENSOR, datatype: "FP32", shape: [-1, 1] },
];

/** Bytes per element of each numeric datatype; BYTES elements carry their own length. */
const ELEMENT_BYTES: Record<string, number> = {
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  FP32: 4,
  FP64: 8,
};
export const NUMERIC_DATATYPES = Object.keys(ELEMENT_BYTES);

export interface InputTensor {
  name: string;
  datatype: string;
  shape: readonly number[];
  /** Row-major elements: numbers for numeric datatypes, strings for BYTES; JSON may hold anything. */
  data: ArrayLike<unknown>;
}

/** An invalid_argument on one tensor (its name quoted, as the message and the violation's field say). */
export function tensorError(tensor: string, description: string): BikeshareError {
  const list = new ViolationList();
  list.add([{ field: `tensor "${tensor}"`, type: "mismatch", description }]);
  return invalidRequest(list, "inputs");
}

/** The most elements one input may hold: a [BIKESHARE_MAX_BATCH, 12] tensor. */
export const maxElements = (maxBatchSize: number) => maxBatchSize * RAW_FIELD_NAMES.length;

/**
 * Elements of a raw (binary) tensor: little-endian numbers, or for BYTES a 4-byte little-endian length
 * before each element (the binary tensor extension and gRPC raw contents share this layout). More than
 * `limit` elements is refused before anything is decoded: one byte of INT8 would otherwise become eight
 * of Float64Array before the shape and row checks.
 */
export function decodeRaw(
  tensor: string,
  datatype: string,
  bytes: Uint8Array,
  limit: number,
): ArrayLike<unknown> {
  const tooMany = (n: number | string) =>
    tensorError(
      tensor,
      `has ${n} elements; at most ${limit} fit the row limit (BIKESHARE_MAX_BATCH rows × ${RAW_FIELD_NAMES.length} fields)`,
    );
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (datatype === "BYTES") {
    const out: string[] = [];
    const decoder = new TextDecoder("utf-8", { fatal: false });
    let at = 0;
    while (at < bytes.length) {
      if (at + 4 > bytes.length)
        throw tensorError(
          tensor,
          `has ${bytes.length - at} trailing bytes: each BYTES element needs a 4-byte length`,
        );
      if (out.length >= limit) throw tooMany(`more than ${limit}`);
      const length = view.getUint32(at, true);
      at += 4;
      if (at + length > bytes.length)
        throw tensorError(
          tensor,
          `element ${out.length} declares ${length} bytes but only ${bytes.length - at} remain`,
        );
      out.push(decoder.decode(bytes.subarray(at, at + length)));
      at += length;
    }
    return out;
  }
  const size = ELEMENT_BYTES[datatype];
  if (size === undefined) throw unsupportedDatatype(tensor, datatype);
  if (bytes.length % size !== 0)
    throw tensorError(
      tensor,
      `has ${bytes.length} bytes of raw data, not a whole number of ${size}-byte ${datatype}s`,
    );
  const n = bytes.length / size;
  if (n > limit) throw tooMany(n);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const at = i * size;
    switch (datatype) {
      case "INT8":
        out[i] = view.getInt8(at);
        break;
      case "INT16":
        out[i] = view.getInt16(at, true);
        break;
      case "INT32":
        out[i] = view.getInt32(at, true);
        break;
      case "INT64":
        out[i] = Number(view.getBigInt64(at, true));
        break;
      case "UINT8":
        out[i] = view.getUint8(at);
        break;
      case "UINT16":
        out[i] = view.getUint16(at, true);
        break;
      case "UINT32":
        out[i] = view.getUint32(at, true);
        break;
      case "UINT64":
        out[i] = Number(view.getBigUint64(at, true));
        break;
      case "FP32":
        out[i] = view.getFloat32(at, true);
        break;
      default:
        out[i] = view.getFloat64(at, true);
    }
  }
  return out;
}

/** The `cnt` tensor's elements as raw little-endian FP32, for binary REST outputs and gRPC raw contents. */
export function encodeOutput(predictions: Float32Array): Uint8Array {
  const out = new Uint8Array(predictions.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < predictions.length; i++) view.setFloat32(i * 4, predictions[i] as number, true);
  return out;
}

function unsupportedDatatype(tensor: string, datatype: string): BikeshareError {
  return tensorError(
    tensor,
    tensor === TIMESTAMP_TENSOR
      ? `has datatype ${JSON.stringify(datatype)}; the timestamp tensor is BYTES (ISO-8601 strings)`
      : `has datatype ${JSON.stringify(datatype)}; the model's inputs take ${NUMERIC_DATATYPES.join(", ")}`,
  );
}

const shapeText = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/** Rows of a per-row tensor: shape [N] or [N, 1] (Triton clients often send a trailing 1). */
function rowsOf(tensor: InputTensor, width: number): number {
  const { shape, name } = tensor;
  const ok =
    shape.every((d) => Number.isInteger(d) && d >= 0) &&
    (width === 1
      ? shape.length === 1 || (shape.length === 2 && shape[1] === 1)
      : shape.length === 2 && shape[1] === width);
  if (!ok) {
    throw tensorError(
      name,
      `has shape ${shapeText(shape)}; expected ${width === 1 ? "[N] (or [N, 1])" : `[N, ${width}]`} for N rows`,
    );
  }
  return shape[0] as number;
}

export interface DecodedRows {
  records: RawRecord[];
  /** Start of each row's hour (epoch ms) when the timestamp tensor gave it. */
  hourStarts: (number | undefined)[];
}

const HOUR_MS = 3_600_000;

/**
 * The rows of a request: either the 12 field tensors or the one [N, 12] tensor, plus the optional
 * timestamp tensor. Every row is checked with `validateRecord`; errors name the tensor and the row (and
 * for the [N, 12] tensor the column and its field).
 */
export function decodeRows(tensors: readonly InputTensor[], maxBatchSize: number): DecodedRows {
  const byName = new Map<string, InputTensor>();
  for (const tensor of tensors) {
    if (byName.has(tensor.name)) throw tensorError(tensor.name, "is given twice");
    const known =
      tensor.name === MATRIX_TENSOR ||
      tensor.name === TIMESTAMP_TENSOR ||
      (RAW_FIELD_NAMES as readonly string[]).includes(tensor.name);
    if (!known) {
      throw tensorError(
        tensor.name,
        `is not an input of this model; the inputs are ${RAW_FIELD_NAMES.join(", ")} (shape [N] each) or ${MATRIX_TENSOR} (shape [N, 12]), and the optional ${TIMESTAMP_TENSOR} (BYTES [N])`,
      );
    }
    const numeric = NUMERIC_DATATYPES.includes(tensor.datatype);
    if (tensor.name === TIMESTAMP_TENSOR ? tensor.datatype !== "BYTES" : !numeric)
      throw unsupportedDatatype(tensor.name, tensor.datatype);
    byName.set(tensor.name, tensor);
  }
  const matrix = byName.get(MATRIX_TENSOR);
  const fields = RAW_FIELD_NAMES.filter((name) => byName.has(name));
  if (matrix && fields.length > 0)
    throw tensorError(
      MATRIX_TENSOR,
      `is given with the field tensors ${fields.join(", ")}: send either the 12 field tensors or ${MATRIX_TENSOR} [N, 12], not both`,
    );
  if (!matrix) {
    const missing = RAW_FIELD_NAMES.filter((name) => !byName.has(name));
    if (missing.length > 0) {
      throw tensorError(
        missing[0] as string,
        `is missing (${missing.length === 1 ? "the only one" : `with ${missing.slice(1).join(", ")}`}): send the 12 tensors ${RAW_FIELD_NAMES.join(", ")} (shape [N] each) or one ${MATRIX_TENSOR} tensor [N, 12] in that column order`,
      );
    }
  }

  // Every tensor must agree on N and hold exactly the elements its shape says.
  let rows: number | undefined;
  let rowsFrom = "";
  for (const tensor of byName.values()) {
    const n = rowsOf(tensor, tensor === matrix ? RAW_FIELD_NAMES.length : 1);
    const expected = tensor.shape.reduce((a, b) => a * b, 1);
    if (tensor.data.length !== expected)
      throw tensorError(
        tensor.name,
        `has ${tensor.data.length} elements; its shape ${shapeText(tensor.shape)} needs ${expected}`,
      );
    if (rows === undefined) {
      rows = n;
      rowsFrom = tensor.name;
    } else if (n !== rows) {
      throw tensorError(
        tensor.name,
        `has ${n} rows but "${rowsFrom}" has ${rows}: every input tensor has one row per hour`,
      );
    }
  }
  const n = rows ?? 0;
  if (n > maxBatchSize)
    throw tensorError(rowsFrom, `has ${n} rows; the limit is ${maxBatchSize} (BIKESHARE_MAX_BATCH)`);

  const stamps = byName.get(TIMESTAMP_TENSOR);
  const width = RAW_FIELD_NAMES.length;
  const where = (field: string, row: number): string => {
    if (field === TIMESTAMP_FIELD) return `tensor "${TIMESTAMP_TENSOR}" row ${row}`;
    if (!matrix) return `tensor "${field}" row ${row}`;
    const column = (RAW_FIELD_NAMES as readonly string[]).indexOf(field);
    return `tensor "${MATRIX_TENSOR}" row ${row} column ${column} (${field})`;
  };

  const records: RawRecord[] = [];
  const hourStarts: (number | undefined)[] = [];
  const violations = new ViolationList();
  for (let row = 0; row < n; row++) {
    const plain: Record<string, unknown> = {};
    RAW_FIELD_NAMES.forEach((name, column) => {
      const source = matrix ?? (byName.get(name) as InputTensor);
      plain[name] = scalar(source.data[matrix ? row * width + column : row]);
    });
    const stamp = stamps?.data[row];
    if (stamps) plain[TIMESTAMP_FIELD] = stamp;
    const result = validateRecord(plain, "");
    if (result.ok) {
      records.push(result.record);
      hourStarts.push(
        typeof stamp === "string" ? Math.floor(Date.parse(stamp) / HOUR_MS) * HOUR_MS : undefined,
      );
    } else if (!violations.full) {
      violations.addRow(result.violations.map((v): FieldViolation => ({ ...v, field: where(v.field, row) })));
    } else violations.addRow(result.violations);
  }
  if (violations.total > 0) throw invalidRequest(violations, "inputs");
  return { records, hourStarts };
}

/** gRPC's INT64/UINT64 contents arrive as bigint; validateRecord takes numbers. */
function scalar(value: unknown): unknown {
  return typeof value === "bigint" ? Number(value) : value;
}

/**
 * JSON `data`, flat or nested the way the shape nests it, as flat row-major elements. Nested data must
 * match the shape level by level; a flat list only needs the right length (checked by `decodeRows`).
 */
export function flattenJson(tensor: string, data: unknown, shape: readonly number[]): unknown[] {
  if (!Array.isArray(data)) throw tensorError(tensor, "has no data list: give `data` (or binary_data_size)");
  if (!data.some(Array.isArray)) return data;
  const out: unknown[] = [];
  const walk = (value: unknown, depth: number, path: string) => {
    if (depth === shape.length) {
      if (Array.isArray(value))
        throw tensorError(tensor, `data${path} nests deeper than its shape ${shapeText(shape)}`);
      out.push(value);
      return;
    }
    if (!Array.isArray(value) || value.length !== shape[depth])
      throw tensorError(
        tensor,
        `data${path} has ${Array.isArray(value) ? `${value.length} items` : "a scalar"} where its shape ${shapeText(shape)} needs ${shape[depth]}`,
      );
    value.forEach((item, i) => {
      walk(item, depth + 1, `${path}[${i}]`);
    });
  };
  walk(data, 0, "");
  return out;
}
