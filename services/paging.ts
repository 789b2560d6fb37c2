import { createHash } from "node:crypto";
import { BikeshareError } from "../core/errors.js";

/**
 * Paging of every List RPC. A page token is opaque to the client: the base64url of the next page's
 * offset and a hash of the query it came from (the list, its filter and ordering), so a token used with
 * another query is refused on `page_token` instead of silently skipping or repeating rows.
 */

interface Token {
  /** Offset of the next page. */
  o: number;
  /** queryKey of the query the token belongs to. */
  q: string;
}

/** How a bad token is reported; the registry passes its own, so all it throws stays a RegistryError. */
export type Reject = (field: string, message: string) => never;

const invalidField: Reject = (field, message) => {
  throw new BikeshareError("invalid_argument", message, { violations: [{ field, description: message }] });
};

/** A short hash of everything that decides which rows a list returns and in what order. */
export function queryKey(query: unknown): string {
  return createHash("sha256").update(JSON.stringify(query)).digest("hex").slice(0, 16);
}

export function encodePageToken(offset: number, key: string): string {
  return Buffer.from(JSON.stringify({ o: offset, q: key } satisfies Token)).toString("base64url");
}

/** The offset a token names; "" is the first page. */
export function decodePageToken(token: string, key: string, reject: Reject = invalidField): number {
  if (token === "") return 0;
  let parsed: Partial<Token> | undefined;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<Token>;
  } catch {
    parsed = undefined;
  }
  const offset = parsed?.o;
  if (parsed?.q !== key || typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
    return reject("page_token", "page_token is not valid for this query");
  }
  return offset;
}

export interface Page {
  limit: number;
  offset: number;
  key: string;
}

/** `query` names the list and its filter, e.g. `{ list: "jobs", state }`. */
export function pageOf(pageSize: number, pageToken: string, maxSize: number, query: unknown): Page {
  if (!Number.isSafeInteger(pageSize) || pageSize < 0) {
    invalidField("page_size", `page_size must be between 0 and ${maxSize}, got ${pageSize}`);
  }
  const key = queryKey(query);
  const limit = pageSize === 0 ? 50 : Math.min(pageSize, maxSize);
  return { limit, offset: decodePageToken(pageToken, key), key };
}

/** Callers fetch `limit + 1` rows: the extra one only tells whether another page exists. */
export function pageResult<T>(rows: readonly T[], page: Page): { items: T[]; nextPageToken: string } {
  return {
    items: rows.slice(0, page.limit),
    nextPageToken: rows.length > page.limit ? encodePageToken(page.offset + page.limit, page.key) : "",
  };
}
