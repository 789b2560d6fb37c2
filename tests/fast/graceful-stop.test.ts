import http2 from "node:http2";
import { describe, expect, it } from "vitest";
import { createFrontServer } from "../../services/http/front.js";
import { createLogger } from "../../services/observability/log.js";

/**
 * The front server's graceful stop (services/http/front.ts), on real sockets: what a load balancer
 * sees while a replica drains, and that requests already running finish on both protocols.
 */

const LIMITS = {
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 100,
  http2MaxStreams: 100,
};

async function startFront(handlerDelayMs: number) {
  const front = createFrontServer(
    (req, res) => {
      const answer = () => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(`ok ${req.url}`);
      };
      if (req.url === "/slow") setTimeout(answer, handlerDelayMs);
      else answer();
    },
    LIMITS,
    createLogger({}, "error", () => {}),
    () => {},
  );
  const port = await front.listen(0, "127.0.0.1");
  return { front, base: `http://127.0.0.1:${port}` };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function h2Get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path });
    let status = 0;
    let body = "";
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
    });
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    stream.on("end", () => resolve({ status, body }));
    stream.on("error", reject);
  });
}

describe("graceful stop of the front server", () => {
  it("fails /readyz during the drain while still serving, then finishes running requests and refuses new connections", async () => {
    const { front, base } = await startFront(600);
    const session = http2.connect(base);
    const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
    const slowH1 = fetch(`${base}/slow`).then(async (r) => ({ status: r.status, body: await r.text() }));
    const slowH2 = h2Get(session, "/slow");
    await sleep(50);

    const stopAt = Date.now();
    const closed = front.close(400);
    await sleep(100);
    // Draining: the probe says "take me out", everything else still works, on a new connection too.
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    expect(await (await fetch(`${base}/predict`)).text()).toBe("ok /predict");
    expect(await h2Get(session, "/predict")).toEqual({ status: 200, body: "ok /predict" });

    // Both requests that were running when the stop began get their whole answer.
    expect(await slowH1).toEqual({ status: 200, body: "ok /slow" });
    expect(await slowH2).toEqual({ status: 200, body: "ok /slow" });
    await closed;
    // Done once the last answer is out: a kept-alive connection that served a running request is closed
    // after it, not left open until the 10 s cut.
    expect(Date.now() - stopAt).toBeLessThan(3_000);
    await goaway; // the HTTP/2 client was told to go, not cut off
    await expect(fetch(`${base}/predict`)).rejects.toThrow();
    session.destroy();
  });

  it("without a drain period, stops at once when nothing is running", async () => {
    const { front, base } = await startFront(0);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const started = Date.now();
    await front.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    await expect(fetch(`${base}/readyz`)).rejects.toThrow();
  });
});
