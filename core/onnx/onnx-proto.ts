/**
 * Minimal hand-written protobuf encoder (and a tiny decoder) for the subset of `onnx.proto` that the XGBoost
 * exporter needs. Field numbers follow onnx/onnx.proto (proto2):
 *
 *   ModelProto:             ir_version=1 producer_name=2 producer_version=3 domain=4 model_version=5
 *                           doc_string=6 graph=7 opset_import=8 metadata_props=14
 *   GraphProto:             node=1 name=2 initializer=5 doc_string=10 input=11 output=12
 *   NodeProto:              input=1 output=2 name=3 op_type=4 attribute=5 doc_string=6 domain=7
 *   AttributeProto:         name=1 f=2 i=3 s=4 t=5 floats=7 ints=8 strings=9 type=20
 *   ValueInfoProto:         name=1 type=2
 *   TypeProto:              tensor_type=1;  TypeProto.Tensor: elem_type=1 shape=2
 *   TensorShapeProto:       dim=1;  Dimension: dim_value=1 dim_param=2
 *   TensorProto:            dims=1 data_type=2 float_data=4 name=8 raw_data=9
 *   OperatorSetIdProto:     domain=1 version=2
 *   StringStringEntryProto: key=1 value=2
 *
 * Repeated numeric fields are written packed; protobuf parsers must accept packed encoding for any repeated
 * scalar field, including proto2 fields that are not declared `[packed = true]`.
 */
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/** AttributeProto.AttributeType */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

/** TensorProto.DataType (subset) */
export const TensorDataType = {
  FLOAT: 1,
  INT64: 7,
  DOUBLE: 11,
} as const;

export interface TensorProto {
  name: string;
  dims: readonly number[];
  /** Only FLOAT tensors are supported; data is written as little-endian `raw_data`. */
  floatData: ArrayLike<number>;
}

export type AttributeProto =
  | { name: string; type: "float"; value: number }
  | { name: string; type: "int"; value: number }
  | { name: string; type: "string"; value: string }
  | { name: string; type: "floats"; value: ArrayLike<number> }
  | { name: string; type: "ints"; value: ArrayLike<number> }
  | { name: string; type: "strings"; value: readonly string[] }
  | { name: string; type: "tensor"; value: TensorProto };

export interface NodeProto {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  /** Operator-set domain; "" (default ONNX domain) when omitted. */
  domain?: string;
  attributes?: readonly AttributeProto[];
  docString?: string;
}

/** Tensor value info: element type plus a shape whose entries are fixed sizes or symbolic names. */
export interface ValueInfoProto {
  name: string;
  elemType: number;
  shape: ReadonlyArray<number | string>;
}

export interface GraphProto {
  name: string;
  nodes: readonly NodeProto[];
  inputs: readonly ValueInfoProto[];
  outputs: readonly ValueInfoProto[];
  initializers?: readonly TensorProto[];
  docString?: string;
}

export interface OperatorSetId {
  domain: string;
  version: number;
}

export interface ModelProto {
  irVersion: number;
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph: GraphProto;
  opsetImports: readonly OperatorSetId[];
  metadataProps?: Readonly<Record<string, string>>;
}

// ---------------------------------------------------------------------------------------------------------
// Attribute helpers

export const attrFloat = (name: string, value: number): AttributeProto => ({ name, type: "float", value });
export const attrInt = (name: string, value: number): AttributeProto => ({ name, type: "int", value });
export const attrString = (name: string, value: string): AttributeProto => ({ name, type: "string", value });
export const attrFloats = (name: string, value: ArrayLike<number>): AttributeProto => ({
  name,
  type: "floats",
  value,
});
export const attrInts = (name: string, value: ArrayLike<number>): AttributeProto => ({
  name,
  type: "ints",
  value,
});
export const attrStrings = (name: string, value: readonly string[]): AttributeProto => ({
  name,
  type: "strings",
  value,
});

// ---------------------------------------------------------------------------------------------------------
// Encoder

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;

function assertInt(value: number, what: string): void {
  if (!Number.isSafeInteger(value))
    throw new Error(`onnx-proto: ${what} must be a safe integer, got ${value}`);
}

/** Little-endian IEEE-754 float32 bytes (used for packed `floats` and tensor `raw_data`). */
function float32Bytes(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i] as number, true);
  return out;
}

function writeString(w: BinaryWriter, field: number, value: string | undefined): void {
  if (value !== undefined && value !== "") w.tag(field, LEN).string(value);
}

function writeTensor(w: BinaryWriter, t: TensorProto): void {
  if (t.dims.length > 0) {
    w.tag(1, LEN).fork();
    for (const d of t.dims) {
      assertInt(d, `tensor ${t.name} dim`);
      w.int64(d);
    }
    w.join();
  }
  w.tag(2, VARINT).int32(TensorDataType.FLOAT);
  writeString(w, 8, t.name);
  w.tag(9, LEN).bytes(float32Bytes(t.floatData));
}

function writeAttribute(w: BinaryWriter, a: AttributeProto): void {
  w.tag(1, LEN).string(a.name);
  switch (a.type) {
    case "float":
      w.tag(2, WireType.Bit32).float(a.value);
      w.tag(20, VARINT).int32(AttributeType.FLOAT);
      break;
    case "int":
      assertInt(a.value, `attribute ${a.name}`);
      w.tag(3, VARINT).int64(a.value);
      w.tag(20, VARINT).int32(AttributeType.INT);
      break;
    case "string":
      w.tag(4, LEN).string(a.value);
      w.tag(20, VARINT).int32(AttributeType.STRING);
      break;
    case "tensor":
      w.tag(5, LEN).fork();
      writeTensor(w, a.value);
      w.join();
      w.tag(20, VARINT).int32(AttributeType.TENSOR);
      break;
    case "floats":
      if (a.value.length > 0) w.tag(7, LEN).bytes(float32Bytes(a.value));
      w.tag(20, VARINT).int32(AttributeType.FLOATS);
      break;
    case "ints":
      if (a.value.length > 0) {
        w.tag(8, LEN).fork();
        for (let i = 0; i < a.value.length; i++) {
          const v = a.value[i] as number;
          assertInt(v, `attribute ${a.name}[${i}]`);
          w.int64(v);
        }
        w.join();
      }
      w.tag(20, VARINT).int32(AttributeType.INTS);
      break;
    case "strings":
      for (const s of a.value) w.tag(9, LEN).string(s);
      w.tag(20, VARINT).int32(AttributeType.STRINGS);
      break;
  }
}

function writeNode(w: BinaryWriter, n: NodeProto): void {
  for (const i of n.inputs) w.tag(1, LEN).string(i);
  for (const o of n.outputs) w.tag(2, LEN).string(o);
  writeString(w, 3, n.name);
  w.tag(4, LEN).string(n.opType);
  for (const a of n.attributes ?? []) {
    w.tag(5, LEN).fork();
    writeAttribute(w, a);
    w.join();
  }
  writeString(w, 6, n.docString);
  writeString(w, 7, n.domain);
}

function writeValueInfo(w: BinaryWriter, v: ValueInfoProto): void {
  w.tag(1, LEN).string(v.name);
  w.tag(2, LEN).fork(); // TypeProto
  w.tag(1, LEN).fork(); // TypeProto.tensor_type
  w.tag(1, VARINT).int32(v.elemType);
  w.tag(2, LEN).fork(); // TensorShapeProto
  for (const d of v.shape) {
    w.tag(1, LEN).fork(); // Dimension
    if (typeof d === "number") {
      assertInt(d, `value ${v.name} dim`);
      w.tag(1, VARINT).int64(d);
    } else {
      w.tag(2, LEN).string(d);
    }
    w.join();
  }
  w.join(); // shape
  w.join(); // tensor_type
  w.join(); // type
}

function writeGraph(w: BinaryWriter, g: GraphProto): void {
  for (const n of g.nodes) {
    w.tag(1, LEN).fork();
    writeNode(w, n);
    w.join();
  }
  w.tag(2, LEN).string(g.name);
  for (const t of g.initializers ?? []) {
    w.tag(5, LEN).fork();
    writeTensor(w, t);
    w.join();
  }
  writeString(w, 10, g.docString);
  for (const v of g.inputs) {
    w.tag(11, LEN).fork();
    writeValueInfo(w, v);
    w.join();
  }
  for (const v of g.outputs) {
    w.tag(12, LEN).fork();
    writeValueInfo(w, v);
    w.join();
  }
}

/** Serializes a ModelProto to its protobuf binary form (what `onnx.save` writes). */
export function encodeModel(m: ModelProto): Uint8Array {
  const w = new BinaryWriter();
  assertInt(m.irVersion, "ir_version");
  w.tag(1, VARINT).int64(m.irVersion);
  writeString(w, 2, m.producerName);
  writeString(w, 3, m.producerVersion);
  writeString(w, 4, m.domain);
  if (m.modelVersion !== undefined) {
    assertInt(m.modelVersion, "model_version");
    w.tag(5, VARINT).int64(m.modelVersion);
  }
  writeString(w, 6, m.docString);
  w.tag(7, LEN).fork();
  writeGraph(w, m.graph);
  w.join();
  for (const op of m.opsetImports) {
    assertInt(op.version, `opset version for domain "${op.domain}"`);
    w.tag(8, LEN).fork();
    w.tag(1, LEN).string(op.domain);
    w.tag(2, VARINT).int64(op.version);
    w.join();
  }
  for (const [key, value] of Object.entries(m.metadataProps ?? {})) {
    w.tag(14, LEN).fork();
    w.tag(1, LEN).string(key);
    w.tag(2, LEN).string(value);
    w.join();
  }
  return w.finish();
}

// ---------------------------------------------------------------------------------------------------------
// Decoder (only what serving needs: metadata_props, the opset imports, and the nodes CompiledModel reads)

export interface ModelSummary {
  irVersion: number;
  producerName: string;
  opsetImports: OperatorSetId[];
  metadata: Record<string, string>;
}

function readStringEntry(bytes: Uint8Array): [string, string] {
  const r = new BinaryReader(bytes);
  let key = "";
  let value = "";
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === LEN) key = r.string();
    else if (field === 2 && wt === LEN) value = r.string();
    else r.skip(wt, field);
  }
  return [key, value];
}

function readOpset(bytes: Uint8Array): OperatorSetId {
  const r = new BinaryReader(bytes);
  const op: OperatorSetId = { domain: "", version: 0 };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === LEN) op.domain = r.string();
    else if (field === 2 && wt === VARINT) op.version = Number(r.int64());
    else r.skip(wt, field);
  }
  return op;
}

/** Reads the top-level ModelProto fields that ONNX Runtime's JS API does not expose (metadata_props etc.). */
export function decodeModelSummary(bytes: Uint8Array): ModelSummary {
  const r = new BinaryReader(bytes);
  const out: ModelSummary = { irVersion: 0, producerName: "", opsetImports: [], metadata: {} };
  const entries: [string, string][] = [];
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === VARINT) out.irVersion = Number(r.int64());
    else if (field === 2 && wt === LEN) out.producerName = r.string();
    else if (field === 8 && wt === LEN) out.opsetImports.push(readOpset(r.bytes()));
    else if (field === 14 && wt === LEN) entries.push(readStringEntry(r.bytes()));
    else r.skip(wt, field);
  }
  // fromEntries defines own properties, so a key such as "__proto__" cannot touch the prototype.
  out.metadata = Object.fromEntries(entries);
  return out;
}

/** A decoded node: its op, tensor names and attributes (numbers as read; floats already float32 values). */
export interface DecodedNode {
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Map<string, DecodedAttribute>;
}

export interface DecodedAttribute {
  f?: number;
  i?: number;
  s?: string;
  floats: number[];
  ints: number[];
  strings: string[];
}

/** Reads one repeated numeric field, packed (one LEN record) or not (one value per tag). */
function readRepeated(r: BinaryReader, wt: WireType, out: number[], one: () => number): void {
  if (wt !== LEN) {
    out.push(one());
    return;
  }
  const end = r.uint32() + r.pos;
  while (r.pos < end) out.push(one());
}

const utf8 = new TextDecoder();

/**
 * The string of `bytes[start, end)`. nodes_modes holds one short ASCII string per node: a subarray and a
 * TextDecoder call for each were most of the time of decoding a 600-tree graph.
 */
function stringAt(bytes: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i++) {
    const b = bytes[i] as number;
    if (b > 127) return utf8.decode(bytes.subarray(start, end));
    s += String.fromCharCode(b);
  }
  return s;
}

function readAttribute(bytes: Uint8Array): [string, DecodedAttribute] {
  const r = new BinaryReader(bytes);
  let name = "";
  const a: DecodedAttribute = { floats: [], ints: [], strings: [] };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === LEN) name = r.string();
    else if (field === 2 && wt === WireType.Bit32) a.f = r.float();
    else if (field === 3 && wt === VARINT) a.i = Number(r.int64());
    else if (field === 4 && wt === LEN) a.s = r.string();
    else if (field === 7) readRepeated(r, wt, a.floats, () => r.float());
    else if (field === 8) readRepeated(r, wt, a.ints, () => r.int32());
    else if (field === 9 && wt === LEN) {
      const end = r.uint32() + r.pos;
      a.strings.push(stringAt(bytes, r.pos, end));
      r.pos = end;
    } else r.skip(wt, field);
  }
  return [name, a];
}

function readNode(bytes: Uint8Array): DecodedNode {
  const r = new BinaryReader(bytes);
  const node: DecodedNode = { opType: "", domain: "", inputs: [], outputs: [], attributes: new Map() };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === LEN) node.inputs.push(r.string());
    else if (field === 2 && wt === LEN) node.outputs.push(r.string());
    else if (field === 4 && wt === LEN) node.opType = r.string();
    else if (field === 5 && wt === LEN) node.attributes.set(...readAttribute(r.bytes()));
    else if (field === 7 && wt === LEN) node.domain = r.string();
    else r.skip(wt, field);
  }
  return node;
}

/** The graph's nodes in order (initializers, inputs and outputs are not read). */
export function decodeGraphNodes(bytes: Uint8Array): DecodedNode[] {
  const r = new BinaryReader(bytes);
  const nodes: DecodedNode[] = [];
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 7 && wt === LEN) {
      const g = new BinaryReader(r.bytes());
      while (g.pos < g.len) {
        const [gf, gwt] = g.tag();
        if (gf === 1 && gwt === LEN) nodes.push(readNode(g.bytes()));
        else g.skip(gwt, gf);
      }
    } else r.skip(wt, field);
  }
  return nodes;
}
