import { readFile, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { basename, dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

// The front server hands over HTTP/1.1 and h2c requests alike.
type Request = IncomingMessage | Http2ServerRequest;
type Response = ServerResponse | Http2ServerResponse;

/**
 * The web console's files (docs/ui.md), served at /ui/ from what `npm run build` writes to dist/ui.
 * The console routes in the URL's hash (#/runs), so the server never has to answer a page path with the
 * index: an unknown path is a 404, and a mistyped asset shows as an error instead of HTML parsed as script.
 */
export const UI_PREFIX = "/ui/";

// Only the bundle this server sent may run or be fetched, and the console talks to its own origin only.
// No inline script or style is allowed, so injected markup can neither run nor restyle the page.
export const UI_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/** Built names carry a content hash (main-3FQK2L7A.js): such a file never changes, so browsers keep it. */
const HASHED = /-[A-Z0-9]{8}\.[a-z]+$/;

/**
 * dist/ui next to the compiled server (dist/services/http -> dist/ui), or the checkout's dist/ui when the
 * server runs from source (tests, tsx).
 */
export function defaultUiRoot(): string {
  const top = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
  return basename(top) === "dist" ? join(top, "ui") : join(top, "dist", "ui");
}

export interface UiHandler {
  matches(url: string | undefined): boolean;
  handle(req: Request, res: Response): Promise<void>;
}

function plain(res: Response, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    ...extra,
  });
  res.end(text);
}

export function createUiHandler(options: { root?: string } = {}): UiHandler {
  const root = normalize(options.root ?? defaultUiRoot());
  return {
    matches(url) {
      const path = (url ?? "").split("?")[0] as string;
      return path === "/ui" || path.startsWith(UI_PREFIX);
    },
    async handle(req, res) {
      try {
        await serve(req, res);
      } catch (error) {
        // A file that vanished or could not be read mid-request: answer, then let the caller log it.
        if (!res.headersSent) plain(res, 500, "the console file could not be read\n");
        else res.destroy();
        throw error;
      }
    },
  };

  async function serve(req: Request, res: Response): Promise<void> {
    const path = (req.url ?? "").split("?")[0] as string;
    if (req.method !== "GET" && req.method !== "HEAD") {
      plain(res, 405, `${req.method} is not allowed on the console's files; use GET\n`, {
        allow: "GET, HEAD",
      });
      return;
    }
    if (path === "/ui") {
      res.writeHead(308, { location: UI_PREFIX, "content-length": 0 });
      res.end();
      return;
    }
    let relative: string;
    try {
      relative = decodeURIComponent(path.slice(UI_PREFIX.length)) || "index.html";
    } catch {
      plain(res, 400, "the path is not valid percent-encoding\n");
      return;
    }
    const file = normalize(join(root, relative));
    const type = TYPES[extname(file)];
    // `..`, a NUL or an unknown kind of file: nothing the build writes, so nothing to serve.
    if (!file.startsWith(root + sep) || relative.includes("\0") || type === undefined) {
      plain(res, 404, `no console file at ${path}\n`);
      return;
    }
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) {
      const built = await stat(join(root, "index.html")).catch(() => undefined);
      plain(
        res,
        404,
        built
          ? `no console file at ${path}\n`
          : `the web console is not built (no ${join(root, "index.html")}): run npm run build\n`,
      );
      return;
    }
    const etag = `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    const headers: Record<string, string> = {
      "content-type": type,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      // The index names the current bundle, so it is checked on every load; bundles are immutable.
      "cache-control": HASHED.test(file) ? "public, max-age=31536000, immutable" : "no-cache",
      etag,
    };
    if (type.startsWith("text/html")) headers["content-security-policy"] = UI_POLICY;
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const body = await readFile(file);
    res.writeHead(200, { ...headers, "content-length": body.length });
    if (req.method === "HEAD") res.end();
    else res.end(body);
  }
}
