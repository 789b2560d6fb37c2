import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { rateLimited } from "../../pipelines/rate-limited.js";
import type { Logger } from "../observability/log.js";

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Errors a client causes by going away; they end its connection and are not worth a log line. */
const CLIENT_GONE = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED"]);
/**
 * Bytes that are not HTTP (Node's parser codes start with HPE_), e.g. the rest of a body a client kept
 * sending after an early 413: the client's fault, answered by closing its connection, not a server error.
 */
const isClientError = (code = "") => CLIENT_GONE.has(code) || code.startsWith("HPE_");

export interface ConnectionLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  http2MaxStreams: number;
}

type Handler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface FrontServer {
  listen(port: number, host: string): Promise<number>;
  /**
   * A graceful stop. For `drainMs` everything is still served but `GET /readyz` answers 503, so load
   * balancers and Kubernetes stop sending new work; then no new connection is accepted, HTTP/2 sessions
   * get a GOAWAY, idle HTTP/1.1 connections are closed and busy ones after their answer. Whatever is
   * still open `graceMs` later is cut.
   */
  close(drainMs?: number): Promise<void>;
}

const CLOSE_GRACE_MS = 10_000;

/**
 * Where HTTP/2 connections go, when not to a plain node:http2 server: the server to emit them on, its
 * requests answered by `serve` (gRPC proper may be taken before, see services/rpc/grpc-transport.ts).
 * The server must apply `limits.http2MaxStreams` as SETTINGS_MAX_CONCURRENT_STREAMS itself.
 */
export interface Http2Target {
  server: http2.Http2Server;
  /** After every session has ended or been cut. */
  close(): void;
}

/**
 * A handler that stops reading a body early (a 413 thrown inside `for await`) would destroy the request,
 * and with it the kept-alive connection, whose client then waits for an answer that never comes. Here the
 * rest of the body stays on the wire and is drained after the answer (see `drainAfterAnswer`).
 */
class KeptRequest extends http.IncomingMessage {
  override [Symbol.asyncIterator]() {
    return this.iterator({ destroyOnReturn: false });
  }
}

/**
 * Reads and discards what is left of a request body once its answer has gone out, so that the next
 * request on a kept-alive connection is parsed. Node's request timeout bounds how long that may take.
 */
function drainAfterAnswer(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.once("finish", () => {
    if (!req.complete && !req.destroyed) req.resume();
  });
}

/**
 * One port for every protocol. Node's plaintext HTTP/2 server cannot also answer HTTP/1.1, so a `net`
 * server reads each connection's first bytes and hands the socket to the h2c server (the HTTP/2 preface)
 * or to the HTTP/1.1 server (anything else) with `emit('connection')`.
 *
 * Sockets that arrive that way skip what `listen` sets up, so every limit is applied here:
 * - sniffing: a connection that has not sent enough to pick a protocol within the headers timeout is closed;
 * - HTTP/1.1: Node's headers and request timeouts (its connection checks start on 'listening', emitted by
 *   hand) and the keep-alive idle timeout;
 * - HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS, a session that sends no SETTINGS within the headers timeout is
 *   closed, and so is one with no open stream for the idle timeout. An open stream is never timed out:
 *   PredictStream and WatchJob streams are long-lived by design.
 * - connections beyond `maxConnections` are closed on accept, with a rate-limited warning.
 */
export function createFrontServer(
  handler: Handler,
  limits: ConnectionLimits,
  log: Logger,
  onRejected: () => void,
  http2Target?: (serve: Handler) => Http2Target,
): FrontServer {
  let draining = false;
  let closing = false;
  const serve: Handler = (req, res) => {
    if (draining && req.method === "GET" && req.url === "/readyz") {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: "not ready", reason: "shutting down" }));
      return;
    }
    handler(req, res);
  };
  const h1 = http.createServer(
    {
      IncomingMessage: KeptRequest,
      keepAliveTimeout: limits.idleTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // How late past a deadline a connection may be closed; the check itself is cheap.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, limits.headersTimeoutMs / 5)),
    },
    (req, res) => {
      drainAfterAnswer(req, res);
      // A kept-alive connection ends with the answer in progress once the server is closing.
      if (closing) res.shouldKeepAlive = false;
      answering.add(res);
      res.once("close", () => answering.delete(res));
      serve(req, res);
    },
  );
  /** HTTP/1.1 answers in progress: their connections close after them once the server is closing. */
  const answering = new Set<http.ServerResponse>();
  // Node starts the checks behind headersTimeout and requestTimeout when a server starts listening; this one
  // never listens, and on Node 20 no timeout applied to its sockets until this line.
  h1.emit("listening");
  const target = http2Target?.(serve) ?? {
    server: http2.createServer({ settings: { maxConcurrentStreams: limits.http2MaxStreams } }, serve),
    close() {
      h2.close();
    },
  };
  const h2 = target.server;
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    // A session that starts while closing (its preface arrived just before) is told to go at once.
    if (closing) session.close();
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    watchSession(session, limits);
  });

  const logRejected = rateLimited(10_000, (count) =>
    log.warn("refused new connections: BIKESHARE_MAX_CONNECTIONS connections are open", {
      limit: limits.maxConnections,
      refused: count,
    }),
  );
  const sockets = new Set<net.Socket>();
  const front = net.createServer((socket) => {
    sockets.add(socket);
    const deadline = setTimeout(() => socket.destroy(), limits.headersTimeoutMs);
    socket.on("close", () => {
      clearTimeout(deadline);
      sockets.delete(socket);
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (!isClientError(error.code)) log.warn("connection failed", { error });
      socket.destroy();
    });
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, HTTP2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (isH2 && n < HTTP2_PREFACE.length) return; // a prefix of the preface: wait for more bytes
      clearTimeout(deadline);
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      if (isH2) {
        // http2 reads the bytes already buffered on the socket, then takes over its native handle;
        // resuming the JS stream here would steal frames from it.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });
  front.maxConnections = limits.maxConnections;
  front.on("drop", () => {
    onRejected();
    logRejected();
  });

  return {
    listen: (port, host) =>
      new Promise<number>((resolve, reject) => {
        front.once("error", reject);
        front.listen(port, host, () => resolve((front.address() as net.AddressInfo).port));
      }),
    async close(drainMs = 0) {
      draining = true;
      if (drainMs > 0) await new Promise((resolve) => setTimeout(resolve, drainMs));
      closing = true;
      await new Promise<void>((resolve) => {
        front.close(() => resolve());
        // GOAWAY: the peer opens no new stream here, and the streams it has finish normally.
        for (const session of sessions) session.close();
        h1.closeIdleConnections();
        for (const res of answering) {
          if (!res.headersSent) res.shouldKeepAlive = false;
          else res.once("finish", () => res.socket?.end());
        }
        setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, CLOSE_GRACE_MS).unref();
      });
      h1.close();
      target.close();
    },
  };
}

/** The HTTP/2 deadlines of one session: its SETTINGS within the headers timeout, then the idle timeout. */
function watchSession(session: http2.ServerHttp2Session, limits: ConnectionLimits): void {
  const settings = setTimeout(() => session.destroy(), limits.headersTimeoutMs);
  session.once("remoteSettings", () => clearTimeout(settings));
  let open = 0;
  let idle: NodeJS.Timeout | undefined;
  // A fixed deadline, not socket inactivity: frames that never open a stream (a header drip) do not reset it.
  const armIdle = () => {
    idle = setTimeout(() => session.close(), limits.idleTimeoutMs);
  };
  armIdle();
  session.on("stream", (stream) => {
    open++;
    clearTimeout(idle);
    stream.once("close", () => {
      open--;
      if (open === 0 && !session.closed && !session.destroyed) armIdle();
    });
  });
  session.once("close", () => {
    clearTimeout(settings);
    clearTimeout(idle);
  });
}
