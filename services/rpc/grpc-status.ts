/** Between grpc-js's Metadata and status objects and what connect-es interceptors and handlers use. */

import { ConnectError, encodeBinaryHeader } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";

/** Fields the gRPC protocol owns: an implementation's header or trailer must not overwrite them. */
const RESERVED = new Set([
  "content-type",
  "te",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "user-agent",
]);

/** Values as they would appear in an HTTP header: `-bin` ones base64, several joined by ", ". */
function joined(values: grpc.MetadataValue[]): string {
  return values.map((v) => (typeof v === "string" ? v : encodeBinaryHeader(v))).join(", ");
}

export function metadataToHeaders(md: grpc.Metadata, extra: Readonly<Record<string, string>>): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(md.toJSON())) headers.set(key, joined(values));
  for (const [key, value] of Object.entries(extra)) headers.set(key, value);
  return headers;
}

/**
 * The request header as interceptors read it (`get`, `has`, `forEach`…), over grpc-js's Metadata: a WHATWG
 * Headers copy validates every name and value, which costs more than the rest of a small call's header
 * handling. Anything beyond `get`/`has` (iteration, writes) builds that copy once and works on it.
 */
export class MetadataHeaders {
  private copy: Headers | undefined;
  constructor(
    private readonly md: grpc.Metadata,
    private readonly extra: Readonly<Record<string, string>>,
  ) {}
  private all(): Headers {
    this.copy ??= metadataToHeaders(this.md, this.extra);
    return this.copy;
  }
  get(name: string): string | null {
    if (this.copy) return this.copy.get(name);
    const key = name.toLowerCase();
    const own = this.extra[key];
    if (own !== undefined) return own;
    const values = this.md.get(key);
    return values.length === 0 ? null : joined(values);
  }
  has(name: string): boolean {
    return this.get(name) !== null;
  }
  set(name: string, value: string): void {
    this.all().set(name, value);
  }
  append(name: string, value: string): void {
    this.all().append(name, value);
  }
  delete(name: string): void {
    this.all().delete(name);
  }
  forEach(callback: (value: string, key: string, parent: Headers) => void): void {
    this.all().forEach(callback);
  }
  getSetCookie(): string[] {
    return [];
  }
  keys() {
    return this.all().keys();
  }
  values() {
    return this.all().values();
  }
  entries() {
    return this.all().entries();
  }
  [Symbol.iterator]() {
    return this.all()[Symbol.iterator]();
  }
  /** A Headers-typed view: it has every method interceptors call on a request header. */
  static over(md: grpc.Metadata, extra: Readonly<Record<string, string>>): Headers {
    return new MetadataHeaders(md, extra) as unknown as Headers;
  }
}

export function headersToMetadata(headers: Headers): grpc.Metadata {
  const md = new grpc.Metadata();
  headers.forEach((value, key) => {
    if (RESERVED.has(key)) return;
    if (key.endsWith("-bin")) for (const v of value.split(/,\s*/)) md.add(key, Buffer.from(v, "base64"));
    else md.add(key, value);
  });
  return md;
}

/**
 * A thrown error as a grpc-js status: connect's codes are gRPC's numbers; error details (google.rpc.Status)
 * go to grpc-status-details-bin as connect-node writes them.
 */
export function toGrpcStatus(error: unknown): grpc.StatusObject {
  const ce = ConnectError.from(error);
  const metadata = headersToMetadata(ce.metadata);
  const details = setTrailerStatus(new Headers(), ce).get("grpc-status-details-bin");
  if (details) metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  return { code: ce.code as number as grpc.status, details: ce.rawMessage, metadata };
}
