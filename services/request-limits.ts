/**
 * Limits applied to a request body before it is parsed, shared by the legacy REST routes and the
 * Connect/gRPC handlers: one small request must not be able to stall the event loop for everyone.
 */

/** Deepest JSON nesting accepted. No request of this API nests deeper than 4 levels. */
export const MAX_JSON_DEPTH = 32;

/**
 * Upper bound of one HourConditions row in JSON. Measured with Python's json.dumps: rows of hour.csv with
 * an `hour` are 177 bytes compact and 377 indented by 4; a row of the longest values (int32 minimum, a
 * 23-character double, a timestamp with nanoseconds and an offset) is 348 bytes compact and 548 indented
 * by 4. 640 leaves room above that.
 */
export const MAX_ROW_BYTES = 640;

/** Room for everything in a request besides its rows (envelope, field names, whitespace). */
const REQUEST_SLACK_BYTES = 64 * 1024;

/**
 * The largest request body read by the Connect, gRPC and gRPC-Web handlers. A legitimate request never
 * exceeds BIKESHARE_MAX_BATCH rows of MAX_ROW_BYTES each; anything larger is refused with
 * `resource_exhausted` (HTTP 429 for Connect) before it is decoded, instead of being parsed in full
 * and only then found too long.
 */
export function rpcReadMaxBytes(maxBatchSize: number): number {
  return maxBatchSize * MAX_ROW_BYTES + REQUEST_SLACK_BYTES;
}

/**
 * Where the JSON text first nests deeper than `maxDepth`: the path of keys and array indexes to the
 * container that is too deep (at most `maxDepth` entries), or undefined when it stays within the limit.
 * A linear scan that skips strings, so it costs far less than JSON.parse and runs before it; the text
 * need not be valid JSON (JSON.parse reports that afterwards).
 */
export function jsonTooDeep(text: string, maxDepth = MAX_JSON_DEPTH): (string | number)[] | undefined {
  const path: (string | number)[] = [];
  const isArray: boolean[] = [];
  let depth = 0;
  let expectingKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i + 1;
      for (i = start; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      if (expectingKey && depth > 0) {
        const key = text.slice(start, Math.min(i, start + 64));
        path[depth - 1] = i - start > 64 ? `${key}…` : key;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (depth === maxDepth) return path.slice(0, depth);
      isArray[depth] = c === 0x5b;
      path[depth] = c === 0x5b ? 0 : "";
      depth++;
      expectingKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (depth > 0) depth--;
      expectingKey = false;
    } else if (c === 0x2c /* , */ && depth > 0) {
      if (isArray[depth - 1]) path[depth - 1] = (path[depth - 1] as number) + 1;
      else expectingKey = true;
    } else if (c === 0x3a /* : */) {
      expectingKey = false;
    }
  }
  return undefined;
}

/** `inputs[0].hr[0]` for the path ["inputs", 0, "hr", 0]. */
export function formatPath(path: readonly (string | number)[], root = ""): string {
  let out = root;
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? part : `.${part}`;
  }
  return out;
}
