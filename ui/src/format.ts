import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";

export function time(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

/** Metrics with four significant decimals: enough to compare runs, short enough for a table. */
export function num(value: number | undefined): string {
  if (value === undefined) return "";
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(1) : value.toPrecision(5);
}

export function shortId(id: string): string {
  return id.length > 12 ? id.slice(0, 12) : id;
}
