/**
 * A minimal streaming Parquet writer: flat schema of REQUIRED INT32 / FLOAT / DOUBLE columns, PLAIN
 * encoding, no compression, one row group per `writeRowGroup` call, one data page (v1) per column chunk.
 *
 * Why hand-written: DuckDB (the only Parquet engine installed) can only COPY from a query, and it
 * cannot read an Arrow stream here (no arrow extension offline); feeding it through the appender or a
 * temp table holds the whole output before COPY. This writer puts each chunk on disk as soon as it is
 * scored and keeps only the footer's per-row-group metadata (a few hundred bytes each) in memory.
 *
 * Layout (apache/parquet-format, parquet.thrift; metadata in the Thrift compact protocol):
 *   "PAR1" | per row group, per column: PageHeader + values | FileMetaData | u32 LE length | "PAR1"
 * Field ids used:
 *   FileMetaData: version=1 schema=2 num_rows=3 row_groups=4 created_by=6
 *   SchemaElement: type=1 repetition_type=3 name=4 num_children=5 converted_type=6
 *   RowGroup: columns=1 total_byte_size=2 num_rows=3
 *   ColumnChunk: file_offset=2 meta_data=3
 *   ColumnMetaData: type=1 encodings=2 path_in_schema=3 codec=4 num_values=5 total_uncompressed_size=6
 *                   total_compressed_size=7 data_page_offset=9
 *   PageHeader: type=1 uncompressed_page_size=2 compressed_page_size=3 data_page_header=5
 *   DataPageHeader: num_values=1 encoding=2 definition_level_encoding=3 repetition_level_encoding=4
 * REQUIRED columns of a flat schema have no repetition or definition levels, so a page is just the values.
 */
import type { FileHandle } from "node:fs/promises";

/** Parquet physical types used here (parquet.thrift `Type`). */
const PhysicalType = { INT32: 1, FLOAT: 4, DOUBLE: 5 } as const;
/** parquet.thrift `ConvertedType.INT_8`: lets readers show an INT32 column as an 8-bit integer. */
const CONVERTED_INT_8 = 15;
const REQUIRED = 0;
const ENCODING_PLAIN = 0;
const ENCODING_RLE = 3;
const CODEC_UNCOMPRESSED = 0;
const PAGE_DATA = 0;

export type ParquetColumnType = "int8" | "int32" | "float" | "double";

export interface ParquetColumn {
  readonly name: string;
  readonly type: ParquetColumnType;
}

export type ParquetValues = Int8Array | Int32Array | Float32Array | Float64Array;

// ---------------------------------------------------------------------------------------------------
// Thrift compact protocol (only what the structures above need)

const CT = { I32: 5, I64: 6, BINARY: 8, LIST: 9, STRUCT: 12 } as const;

class CompactWriter {
  private bytes: number[] = [];
  private lastField: number[] = [0];

  private varint(n: bigint): void {
    let v = n;
    while (v >= 0x80n) {
      this.bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.bytes.push(Number(v));
  }

  private zigzag(n: number): void {
    const v = BigInt(n);
    this.varint(v >= 0n ? v << 1n : (-v << 1n) - 1n);
  }

  private header(id: number, type: number): void {
    const last = this.lastField[this.lastField.length - 1] as number;
    const delta = id - last;
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.lastField[this.lastField.length - 1] = id;
  }

  i32(id: number, value: number): this {
    this.header(id, CT.I32);
    this.zigzag(value);
    return this;
  }

  i64(id: number, value: number): this {
    this.header(id, CT.I64);
    this.zigzag(value);
    return this;
  }

  string(id: number, value: string): this {
    this.header(id, CT.BINARY);
    this.rawString(value);
    return this;
  }

  private rawString(value: string): void {
    const utf8 = Buffer.from(value, "utf8");
    this.varint(BigInt(utf8.length));
    for (const b of utf8) this.bytes.push(b);
  }

  private listHeader(size: number, elementType: number): void {
    if (size < 15) this.bytes.push((size << 4) | elementType);
    else {
      this.bytes.push(0xf0 | elementType);
      this.varint(BigInt(size));
    }
  }

  i32List(id: number, values: readonly number[]): this {
    this.header(id, CT.LIST);
    this.listHeader(values.length, CT.I32);
    for (const v of values) this.zigzag(v);
    return this;
  }

  stringList(id: number, values: readonly string[]): this {
    this.header(id, CT.LIST);
    this.listHeader(values.length, CT.BINARY);
    for (const v of values) this.rawString(v);
    return this;
  }

  struct(id: number, body: (w: this) => void): this {
    this.header(id, CT.STRUCT);
    this.structBody(body);
    return this;
  }

  structList<T>(id: number, items: readonly T[], body: (w: this, item: T) => void): this {
    this.header(id, CT.LIST);
    this.listHeader(items.length, CT.STRUCT);
    for (const item of items) this.structBody((w) => body(w, item));
    return this;
  }

  private structBody(body: (w: this) => void): void {
    this.lastField.push(0);
    body(this);
    this.bytes.push(0); // STOP
    this.lastField.pop();
  }

  /** The bytes of a top-level struct written with `body`. */
  static encode(body: (w: CompactWriter) => void): Buffer {
    const w = new CompactWriter();
    body(w);
    w.bytes.push(0);
    return Buffer.from(w.bytes);
  }
}

// ---------------------------------------------------------------------------------------------------

const PHYSICAL: Record<ParquetColumnType, number> = {
  int8: PhysicalType.INT32,
  int32: PhysicalType.INT32,
  float: PhysicalType.FLOAT,
  double: PhysicalType.DOUBLE,
};

interface ChunkMeta {
  offset: number;
  size: number;
}

interface RowGroupMeta {
  rows: number;
  columns: ChunkMeta[];
}

const MAGIC = Buffer.from("PAR1", "ascii");

export class ParquetStreamWriter {
  private offset = 0;
  private readonly rowGroups: RowGroupMeta[] = [];
  private rows = 0;

  constructor(
    private readonly file: FileHandle,
    private readonly columns: readonly ParquetColumn[],
    private readonly createdBy = "bikeshare scoring",
  ) {}

  private async put(bytes: Uint8Array): Promise<void> {
    let written = 0;
    while (written < bytes.byteLength) {
      const { bytesWritten } = await this.file.write(bytes, written, bytes.byteLength - written, null);
      written += bytesWritten;
    }
    this.offset += bytes.byteLength;
  }

  /** Writes one row group; `values[i]` is column i, every array `rows` long. */
  async writeRowGroup(values: readonly ParquetValues[], rows: number): Promise<void> {
    if (values.length !== this.columns.length)
      throw new Error(`parquet: ${values.length} column arrays for ${this.columns.length} columns`);
    if (rows === 0) return;
    if (this.offset === 0) await this.put(MAGIC);
    const group: RowGroupMeta = { rows, columns: [] };
    for (let c = 0; c < this.columns.length; c++) {
      const column = this.columns[c] as ParquetColumn;
      const data = this.plain(column, values[c] as ParquetValues, rows);
      const header = CompactWriter.encode((w) =>
        w
          .i32(1, PAGE_DATA)
          .i32(2, data.byteLength)
          .i32(3, data.byteLength)
          .struct(5, (d) => d.i32(1, rows).i32(2, ENCODING_PLAIN).i32(3, ENCODING_RLE).i32(4, ENCODING_RLE)),
      );
      const offset = this.offset;
      await this.put(header);
      await this.put(data);
      group.columns.push({ offset, size: header.byteLength + data.byteLength });
    }
    this.rowGroups.push(group);
    this.rows += rows;
  }

  /** PLAIN encoding: little-endian values back to back (int8 widened to INT32, as Parquet stores it). */
  private plain(column: ParquetColumn, values: ParquetValues, rows: number): Uint8Array {
    if (values.length !== rows)
      throw new Error(`parquet: column ${column.name} has ${values.length} values, expected ${rows}`);
    const typed = column.type === "int8" ? Int32Array.from(values as Int8Array) : values;
    const expected = { int8: Int32Array, int32: Int32Array, float: Float32Array, double: Float64Array }[
      column.type
    ];
    if (!(typed instanceof expected))
      throw new Error(`parquet: column ${column.name} (${column.type}) needs a ${expected.name}`);
    // Typed arrays are little-endian on every platform Node supports (x64, arm64).
    return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  }

  /** Writes the footer; the file is a valid Parquet file only after this. */
  async finish(): Promise<void> {
    if (this.offset === 0) await this.put(MAGIC);
    const footer = CompactWriter.encode((w) => {
      w.i32(1, 1)
        .structList(
          2,
          [{ name: "schema", root: true } as const, ...this.columns.map((c) => ({ ...c, root: false }))],
          (s, e) => {
            if (e.root) s.string(4, e.name).i32(5, this.columns.length);
            else {
              const col = e as ParquetColumn;
              s.i32(1, PHYSICAL[col.type]).i32(3, REQUIRED).string(4, col.name);
              if (col.type === "int8") s.i32(6, CONVERTED_INT_8);
            }
          },
        )
        .i64(3, this.rows)
        .structList(4, this.rowGroups, (g, group) => {
          const total = group.columns.reduce((sum, c) => sum + c.size, 0);
          g.structList(1, group.columns, (cc, chunk) => {
            const i = group.columns.indexOf(chunk);
            const col = this.columns[i] as ParquetColumn;
            cc.i64(2, chunk.offset).struct(3, (m) =>
              m
                .i32(1, PHYSICAL[col.type])
                .i32List(2, [ENCODING_PLAIN, ENCODING_RLE])
                .stringList(3, [col.name])
                .i32(4, CODEC_UNCOMPRESSED)
                .i64(5, group.rows)
                .i64(6, chunk.size)
                .i64(7, chunk.size)
                .i64(9, chunk.offset),
            );
          })
            .i64(2, total)
            .i64(3, group.rows);
        })
        .string(6, this.createdBy);
    });
    const length = Buffer.alloc(4);
    length.writeUInt32LE(footer.byteLength);
    await this.put(Buffer.concat([footer, length, MAGIC]));
  }
}
