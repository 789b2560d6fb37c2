import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv, defaultMaxConnections, type ServerConfig } from "../../services/config.js";
import { createLogger } from "../../services/observability/log.js";
import { type RunningServer, startServer } from "../../services/server.js";
import { testConfig, writeTokens } from "../helpers/server.js";

// Short limits so that each case takes a few seconds; a case that fails waits CLOSE_WAIT_MS, long enough
// never to mistake a slow machine for a socket that stays open.
const LIMITS = {
  headersTimeoutMs: 500,
  // Long enough to upload the 2 MiB bodies of the 413 cases on a busy machine.
  requestTimeoutMs: 2000,
  // Node's http.Agent does not reuse a connection whose server announces `Keep-Alive: timeout=1`.
  idleTimeoutMs: 3000,
  maxConnections: 60,
  http2MaxStreams: 100,
};
const CLOSE_WAIT_MS = 15_000;
const PREDICT_PATH = "/bikeshare.v1.PredictService/Predict";
const STREAM_PATH = "/bikeshare.v1.PredictService/PredictStream";

let dir: string;
let config: ServerConfig;
let server: RunningServer;
let port: number;
const logs: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-sockets-"));
  config = await testConfig(dir, { ...LIMITS, maxBatchSize: 100 });
  await writeTokens(config);
  // No model and no bootstrap training: every case here is about connections, not predictions.
  server = await startServer(
    config,
    createLogger({}, "debug", (line) => logs.push(line)),
    { bootstrap: false },
  );
  port = server.port;
}, 60_000);

afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const parsedLogs = () =>
  logs.map((line) => JSON.parse(line) as { level: string; msg: string; [k: string]: unknown });

/** A raw loopback socket, with everything the server sent and whether (and when) the server closed it. */
function rawSocket(): Promise<{
  socket: net.Socket;
  received: () => string;
  closed: Promise<boolean>;
}> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      data += chunk;
    });
    const closed = new Promise<boolean>((done) => {
      const timer = setTimeout(() => done(false), CLOSE_WAIT_MS);
      socket.on("close", () => {
        clearTimeout(timer);
        done(true);
      });
    });
    // A reset from the server counts as closed; the assertion is on `closed`.
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code !== "ECONNRESET" && error.code !== "EPIPE") reject(error);
    });
    socket.once("connect", () => resolve({ socket, received: () => data, closed }));
  });
}

async function expectClosedByServer(
  raw: Awaited<ReturnType<typeof rawSocket>>,
  cleanup?: () => void,
): Promise<void> {
  const closed = await raw.closed;
  cleanup?.();
  raw.socket.destroy();
  expect(closed, `the server kept the socket open for ${CLOSE_WAIT_MS} ms`).toBe(true);
}

describe("slow and idle connections are closed", () => {
  it("closes a connection that sends nothing (the protocol sniffing phase)", async () => {
    await expectClosedByServer(await rawSocket());
  });

  it("closes an HTTP/1.1 connection whose request head never completes", async () => {
    const raw = await rawSocket();
    raw.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    await expectClosedByServer(raw);
  });

  it("closes a connection that drips header lines to stay active", async () => {
    const raw = await rawSocket();
    raw.socket.write("GET /healthz HTTP/1.1\r\n");
    const drip = setInterval(() => raw.socket.write("X-Drip: 1\r\n"), 100);
    await expectClosedByServer(raw, () => clearInterval(drip));
  });

  it("closes a kept-alive connection whose next request head drips", async () => {
    const raw = await rawSocket();
    raw.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n");
    const drip = setInterval(() => raw.socket.write("X-Drip: 1\r\n"), 100);
    await expectClosedByServer(raw, () => clearInterval(drip));
    expect(raw.received()).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("closes a connection that sends part of the HTTP/2 preface", async () => {
    const raw = await rawSocket();
    raw.socket.write("PRI * HTTP/2.0\r\n");
    await expectClosedByServer(raw);
  });

  it("closes an HTTP/2 connection that sends the preface but never its SETTINGS", async () => {
    const raw = await rawSocket();
    raw.socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    await expectClosedByServer(raw);
  });

  it("answers 408 and closes an HTTP/1.1 request whose body stops arriving", async () => {
    const raw = await rawSocket();
    raw.socket.write(
      'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"hr":',
    );
    await expectClosedByServer(raw);
    expect(raw.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("closes a kept-alive HTTP/1.1 connection after the idle timeout", async () => {
    const raw = await rawSocket();
    raw.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    await expectClosedByServer(raw);
    expect(raw.received()).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("closes an HTTP/2 session with no open stream after the idle timeout", async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const closed = new Promise<boolean>((done) => {
      const timer = setTimeout(() => done(false), CLOSE_WAIT_MS);
      session.on("close", () => {
        clearTimeout(timer);
        done(true);
      });
    });
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ":path": "/healthz" });
      req.on("response", (headers) => resolve(Number(headers[":status"])));
      req.on("error", reject);
      req.resume();
      req.end();
    });
    expect(status).toBe(200);
    const wasClosed = await closed;
    session.destroy();
    expect(wasClosed, "the idle HTTP/2 session stayed open").toBe(true);
  });
});

/** An h2c session to the server, with its first SETTINGS from the server. */
async function h2Session(): Promise<{ session: http2.ClientHttp2Session; settings: http2.Settings }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const settings = await new Promise<http2.Settings>((resolve, reject) => {
    session.once("remoteSettings", resolve);
    session.once("error", reject);
  });
  return { session, settings };
}

/** A gRPC stream whose request stays open: how a PredictStream client waiting between messages looks. */
function openStream(session: http2.ClientHttp2Session): http2.ClientHttp2Stream {
  const stream = session.request({
    ":method": "POST",
    ":path": STREAM_PATH,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.resume();
  return stream;
}

describe("HTTP/2 limits", () => {
  it("advertises at most BIKESHARE_HTTP2_MAX_STREAMS concurrent streams", async () => {
    const { session, settings } = await h2Session();
    session.destroy();
    expect(settings.maxConcurrentStreams).toBe(LIMITS.http2MaxStreams);
  });

  it("keeps a long-lived gRPC stream open past every timeout while it is open", async () => {
    const { session } = await h2Session();
    let sessionClosed = false;
    session.on("close", () => {
      sessionClosed = true;
    });
    const stream = openStream(session);
    let streamClosed = false;
    stream.on("close", () => {
      streamClosed = true;
    });
    const longest = Math.max(LIMITS.headersTimeoutMs, LIMITS.requestTimeoutMs, LIMITS.idleTimeoutMs);
    await new Promise((r) => setTimeout(r, longest + 1000));
    expect({ sessionClosed, streamClosed }).toEqual({ sessionClosed: false, streamClosed: false });
    session.destroy();
  });
});

describe("the cap on open connections", () => {
  it("closes connections beyond BIKESHARE_MAX_CONNECTIONS at once, with one log line, and recovers", async () => {
    // Sessions with an open stream are not idle: they hold their connection as long as the test needs.
    const held: http2.ClientHttp2Session[] = [];
    for (let i = 0; i < LIMITS.maxConnections; i++) {
      const { session } = await h2Session();
      openStream(session);
      held.push(session);
    }
    const before = parsedLogs().length;
    const extra = await Promise.all([rawSocket(), rawSocket(), rawSocket()]);
    for (const raw of extra) {
      // Refused ones are closed by the server long before any timeout, with nothing sent.
      expect(await raw.closed).toBe(true);
      expect(raw.received()).toBe("");
    }
    const lines = parsedLogs()
      .slice(before)
      .filter((l) => l.msg.includes("BIKESHARE_MAX_CONNECTIONS"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "warn", limit: LIMITS.maxConnections });
    const metrics = await server.metrics.registry.getSingleMetricAsString(
      "bikeshare_connections_rejected_total",
    );
    expect(metrics).toMatch(/bikeshare_connections_rejected_total [1-9]/);

    for (const session of held) session.destroy();
    // Once the held connections are gone, new clients are served again.
    let status = 0;
    for (let attempt = 0; attempt < 100 && status !== 200; attempt++) {
      status = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (res) => res.status,
        () => 0,
      );
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(200);
  });
});

/** One request over `agent`; the status and body of its answer. A chunked body has no declared length. */
function request(
  agent: http.Agent,
  method: string,
  path: string,
  body?: Buffer,
  chunked = false,
): Promise<{ status: number; body: string; socket: net.Socket | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent,
        headers: body
          ? { "content-type": "application/json", ...(chunked ? {} : { "content-length": body.length }) }
          : {},
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, socket }));
        res.on("error", reject);
      },
    );
    let socket: net.Socket | undefined;
    req.on("socket", (s) => {
      socket = s;
    });
    req.on("error", reject);
    if (body && chunked) {
      for (let at = 0; at < body.length; at += 64 * 1024) req.write(body.subarray(at, at + 64 * 1024));
    }
    req.end(chunked ? undefined : body);
  });
}

describe("a kept-alive connection after a 413", () => {
  // A declared length over the limit is refused before the body is read; a chunked body is refused after
  // part of it was read: both must leave the connection usable. The Connect read limit follows
  // BIKESHARE_MAX_BATCH (100 rows here: about 116 KB).
  it.each([
    ["the legacy /predict route, declared length", "/predict", 2 * 1024 * 1024, false],
    ["the legacy /predict route, chunked", "/predict", 2 * 1024 * 1024, true],
    ["a Connect route, declared length", PREDICT_PATH, 2 * 1024 * 1024, false],
    ["a Connect route, chunked", PREDICT_PATH, 2 * 1024 * 1024, true],
  ])(
    "%s: the reused agent's next request succeeds",
    async (_name, path, size, chunked) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const big = Buffer.alloc(size, 0x20);
        const first = await request(agent, "POST", path, big, chunked);
        // The Connect protocol answers resource_exhausted with 429, REST with 413.
        expect([413, 429]).toContain(first.status);
        const next = await request(agent, "GET", "/healthz");
        // On the same connection: the rest of the refused body was drained, not left to a timeout.
        expect(next.status).toBe(200);
        expect(next.socket === first.socket, "the next request opened a new connection").toBe(true);
      } finally {
        agent.destroy();
      }
    },
    60_000,
  );
});

describe("client-aborted uploads", () => {
  it("are logged at most a few times, never as errors", async () => {
    const before = parsedLogs().length;
    const clients = 50;
    const countRequests = async () => {
      const text = await server.metrics.registry.getSingleMetricAsString("bikeshare_requests_total");
      // Counted as 499 (client closed request): a client that went away is not a server error.
      const line = text
        .split("\n")
        .find((l) => l.includes('method="POST /predict/batch"') && l.includes('code="499"'));
      return line ? Number(line.split(" ").at(-1)) : 0;
    };
    const startCount = await countRequests();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        const raw = await rawSocket();
        raw.socket.write(
          'POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"inputs":[',
        );
        // Gone mid-upload, the way a killed client or a dropped phone connection looks.
        await new Promise((r) => setTimeout(r, 50));
        raw.socket.resetAndDestroy();
      }),
    );
    // Every aborted request has reached the handler's end once its metric is recorded.
    for (let i = 0; i < 200 && (await countRequests()) < startCount + clients; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await countRequests()).toBe(startCount + clients);
    const lines = parsedLogs().slice(before);
    expect(lines.filter((l) => l.level === "error")).toEqual([]);
    const aborted = lines.filter((l) => /abort/i.test(l.msg));
    expect(aborted.length).toBeGreaterThanOrEqual(1);
    expect(aborted.length).toBeLessThanOrEqual(2);
  });
});

describe("connection limits from the environment", () => {
  it.each([
    ["BIKESHARE_HEADERS_TIMEOUT_MS", "0", "BIKESHARE_HEADERS_TIMEOUT_MS must be an integer in 50..3600000"],
    ["BIKESHARE_IDLE_TIMEOUT_MS", "1.5", "BIKESHARE_IDLE_TIMEOUT_MS must be an integer"],
    ["BIKESHARE_MAX_CONNECTIONS", "0", "BIKESHARE_MAX_CONNECTIONS must be an integer in 1..1000000"],
    ["BIKESHARE_HTTP2_MAX_STREAMS", "lots", "BIKESHARE_HTTP2_MAX_STREAMS must be an integer"],
  ])("rejects %s=%s naming the variable", (name, value, message) => {
    expect(() => configFromEnv({ [name]: value })).toThrow(message);
  });

  it("refuses a request timeout shorter than the headers timeout, naming both", () => {
    expect(() =>
      configFromEnv({ BIKESHARE_HEADERS_TIMEOUT_MS: "20000", BIKESHARE_REQUEST_TIMEOUT_MS: "10000" }),
    ).toThrow("BIKESHARE_REQUEST_TIMEOUT_MS (10000) must be at least BIKESHARE_HEADERS_TIMEOUT_MS (20000)");
  });

  it("keeps the default connection cap under the open-file limit", async () => {
    const limits = join(dir, "limits");
    await writeFile(limits, "Limit  Soft Limit  Hard Limit  Units\nMax open files  1024  4096  files\n");
    expect(defaultMaxConnections(limits)).toBe(768);
    await writeFile(limits, "Max open files  unlimited  unlimited  files\n");
    expect(defaultMaxConnections(limits)).toBe(10_000);
    expect(defaultMaxConnections(join(dir, "no-such-file"))).toBe(1000);
    expect(configFromEnv({})).toMatchObject({ headersTimeoutMs: 10_000, http2MaxStreams: 100 });
  });
});
