import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MonitorService } from "../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../gen/bikeshare/v1/train_pb.js";
import type { ServerConfig } from "./config.js";
import { createLegacyHandler } from "./legacy/routes.js";
import type { Logger } from "./observability/log.js";
import { Metrics } from "./observability/metrics.js";
import { createPredictService, type ModelSlot } from "./predict/predict-service.js";
import { ServingModel } from "./predict/serving-model.js";
import { ModelStore } from "./registry/model-store.js";

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

function protocolOf(contentType: string | null): string {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return "connect";
}

function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

function metricsInterceptor(metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const protocol = protocolOf(req.header.get("content-type"));
    const record = (code: string) =>
      metrics.observe(
        req.service.typeName,
        req.method.name,
        code,
        protocol,
        (performance.now() - started) / 1000,
      );
    try {
      const res = await next(req);
      record("ok");
      return res;
    } catch (error) {
      record(codeName(ConnectError.from(error).code));
      throw error;
    }
  };
}

export interface RunningServer {
  readonly port: number;
  readonly metrics: Metrics;
  readonly slot: ModelSlot;
  close(): Promise<void>;
}

/**
 * Serves every protocol on one port. Node's plaintext HTTP/2 server cannot also answer
 * HTTP/1.1, so each connection's first bytes decide: the HTTP/2 preface goes to the h2c
 * server (gRPC, Connect over h2c), anything else to the HTTP/1.1 server (Connect, gRPC-Web, REST).
 */
export async function startServer(config: ServerConfig, log: Logger): Promise<RunningServer> {
  const metrics = new Metrics();
  const store = new ModelStore(config.modelsDir, config.modelName);
  const slot: { current: ServingModel | undefined } = { current: undefined };

  const production = await store.resolve("production");
  if (!production)
    throw new Error(`no model has the production alias in ${store.dir}; run \`bikeshare train\` first`);
  slot.current = await ServingModel.load(store, production, config.ortThreads);
  metrics.modelInfo.set({ model: production.name, version: production.version, alias: "production" }, 1);
  log.info("model loaded", {
    model: production.name,
    version: production.version,
    test_rmse: production.metrics.test_rmse,
  });

  const legacy = createLegacyHandler({ slot, metrics, maxBatchSize: config.maxBatchSize });
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(PredictService, createPredictService(slot, metrics, config));
      // Contracts are published now; implementations land with their issues and answer `unimplemented` until then.
      router.service(TrainService, {});
      router.service(RegistryService, {});
      router.service(MonitorService, {});
    },
    interceptors: [metricsInterceptor(metrics)],
    readMaxBytes: 64 * 1024 * 1024,
    fallback: (req, res) => {
      legacy(req, res).catch((error: unknown) => log.error("request failed", { path: req.url, error }));
    },
  });

  const h1 = http.createServer({ keepAliveTimeout: 65_000 }, handler);
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();
  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, HTTP2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (isH2 && n < HTTP2_PREFACE.length) return; // a prefix of the preface: wait for more bytes
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
    socket.on("error", () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen(config.port, config.host, () => resolve());
  });
  const port = (front.address() as net.AddressInfo).port;
  log.info("serving", { host: config.host, port, protocols: ["connect", "grpc", "grpc-web", "rest"] });

  return {
    port,
    metrics,
    slot,
    async close() {
      await new Promise<void>((resolve) => {
        front.close(() => resolve());
        h1.closeIdleConnections();
        for (const socket of sockets) socket.end();
        setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, 2000).unref();
      });
      h1.close();
      h2.close();
      await slot.current?.release();
      slot.current = undefined;
    },
  };
}
