import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { instantOfLocalHour, RAW_FIELDS, type RawColumns } from "../../core/features/index.js";
import type { HourConditions } from "../../gen/bikeshare/v1/common_pb.js";
import { PredictService, type PredictStreamRequest } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import {
  DEFAULT_CHUNK_SIZE,
  onnxFileScorer,
  type RawRowsModel,
  type ScoringProgress,
  scoreFile,
} from "../../pipelines/scoring/index.js";
import { configFromEnv } from "../../services/config.js";
import { ARTIFACT_CARD, ARTIFACT_ONNX, type ModelCard } from "../../services/registry/model-card.js";
import { clientFor, connection } from "../client.js";

type Values = Record<string, string | boolean | undefined>;

/** Rows per PredictStream message: below the server's default batch limit (BIKESHARE_MAX_BATCH). */
const REMOTE_MESSAGE_ROWS = 5_000;

async function download(runId: string, path: string): Promise<Uint8Array> {
  const registry = clientFor(RegistryService);
  const parts: Uint8Array[] = [];
  for await (const message of registry.downloadArtifact({ runId, path })) parts.push(message.chunk);
  return Buffer.concat(parts);
}

/** The production model (or `version`) from the server's registry, run here in ONNX Runtime. */
async function localModel(
  version: string | undefined,
  threads: number,
): Promise<Awaited<ReturnType<typeof onnxFileScorer>> & { version: string }> {
  const registry = clientFor(RegistryService);
  const { version: found } = await registry.getModelVersion({
    modelName: configFromEnv().modelName,
    versionOrAlias: version ?? "production",
  });
  if (!found) throw new Error("the server returned no model version");
  const [onnxBytes, cardBytes] = await Promise.all([
    download(found.runId, ARTIFACT_ONNX),
    download(found.runId, ARTIFACT_CARD),
  ]);
  const card = JSON.parse(Buffer.from(cardBytes).toString("utf8")) as ModelCard;
  return { ...(await onnxFileScorer(onnxBytes, threads, card.featureNames)), version: found.version };
}

/** A single-producer async queue: what PredictStream's request side reads from. */
function requestQueue() {
  const items: PredictStreamRequest[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  return {
    push(item: PredictStreamRequest) {
      items.push(item);
      wake?.();
    },
    close() {
      closed = true;
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const item = items.shift();
        if (item) yield item;
        else if (closed) return;
        else await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

function conditions(columns: RawColumns, i: number): Partial<HourConditions> {
  const row: Record<string, unknown> = {};
  for (const f of RAW_FIELDS) row[f.name] = columns[f.name][i];
  const day = columns.day?.[i];
  if (day !== undefined && !Number.isNaN(day))
    row.hour = timestampFromMs(instantOfLocalHour(day, columns.hr[i] as number).getTime());
  return row as Partial<HourConditions>;
}

/**
 * Rows validated here go to PredictStream over one HTTP/2 stream; the server computes the features
 * and predicts with the model it serves. Responses arrive in request order, one per message.
 */
function remoteModel(): { model: RawRowsModel; versions: Set<string>; close: () => Promise<void> } {
  const { baseUrl, token } = connection();
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  // Bidirectional streams need HTTP/2 (the server speaks h2c on the same port). Our own session
  // manager, so the connection can be closed at the end instead of keeping the process alive.
  const sessionManager = new Http2SessionManager(baseUrl);
  const client = createClient(
    PredictService,
    createConnectTransport({
      baseUrl,
      httpVersion: "2",
      useBinaryFormat: true,
      interceptors: [auth],
      sessionManager,
    }),
  );
  const queue = requestQueue();
  const responses = client.predictStream(queue)[Symbol.asyncIterator]();
  const versions = new Set<string>();
  let chain: Promise<unknown> = Promise.resolve();
  const model: RawRowsModel = {
    predictRows(columns) {
      const out = new Float32Array(columns.length);
      const messages: { start: number; rows: number }[] = [];
      for (let start = 0; start < columns.length; start += REMOTE_MESSAGE_ROWS) {
        const rows = Math.min(REMOTE_MESSAGE_ROWS, columns.length - start);
        queue.push({
          rows: Array.from({ length: rows }, (_, k) => conditions(columns, start + k)),
        } as PredictStreamRequest);
        messages.push({ start, rows });
      }
      // Calls may overlap; reading responses in call order keeps each one with its rows.
      const result = chain.then(async () => {
        for (const m of messages) {
          const next = await responses.next();
          if (next.done) throw new Error("the server closed PredictStream early");
          const { predictions, modelVersion } = next.value;
          if (predictions.length !== m.rows)
            throw new Error(`PredictStream answered ${predictions.length} predictions for ${m.rows} rows`);
          out.set(predictions, m.start);
          versions.add(modelVersion);
        }
        return out;
      });
      // The caller gets this call's failure from `result`; the chain only orders the next call after it.
      chain = result.catch(() => undefined);
      return result;
    },
  };
  return {
    model,
    versions,
    async close() {
      queue.close();
      try {
        await chain;
        // The server ends its side once ours is closed; reading to the end completes the call.
        while (!(await responses.next()).done) {}
      } finally {
        sessionManager.abort();
      }
    },
  };
}

function positiveInt(
  values: Values,
  name: string,
  fallback: number,
  usageError: (m: string) => Error,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1)
    throw usageError(`--${name} must be a positive integer, got ${String(raw)}`);
  return n;
}

const count = (n: number) => n.toLocaleString("en-US");

function progressLine(p: ScoringProgress, seconds: number): string {
  const rate = seconds > 0 ? `${count(Math.round(p.rowsScored / seconds))} rows/s` : "";
  const tail = `${count(p.rowsScored)} scored, ${count(p.rowsInvalid)} invalid  ${rate}`;
  if (p.totalRows === undefined || p.totalRows === 0) return `${count(p.rowsRead)} rows read, ${tail}`;
  const done = Math.min(1, p.rowsRead / p.totalRows);
  const width = 30;
  const filled = Math.round(done * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(done * 100).toFixed(0).padStart(3)}%  ${tail}`;
}

/**
 * `bikeshare score --in FILE --out FILE`: scores a file with the production model (or
 * --model-version). Locally by default: the model's ONNX comes from the server's registry and runs
 * here; with --remote, rows stream to PredictService.PredictStream. Invalid rows go to --invalid
 * (default OUT.invalid.csv) with their row number and reason; the exit code is 0 when the file was
 * scored, whatever the number of invalid rows, and 1 when it was not.
 */
export async function scoreCommand(values: Values, usageError: (message: string) => Error): Promise<number> {
  const input = values.in;
  const output = values.out;
  if (typeof input !== "string" || input === "") throw usageError("score needs --in FILE");
  if (typeof output !== "string" || output === "")
    throw usageError("score needs --out FILE (.arrow, .arrows or .parquet)");
  const invalidOutput = typeof values.invalid === "string" ? values.invalid : undefined;
  const version = typeof values["model-version"] === "string" ? values["model-version"] : undefined;
  const remote = values.remote === true;
  if (remote && version !== undefined)
    throw usageError(
      "--remote scores with the server's production model; --model-version is for local scoring",
    );
  const chunkSize = positiveInt(values, "chunk-size", DEFAULT_CHUNK_SIZE, usageError);
  const threads = positiveInt(values, "threads", 1, usageError);

  const tty = process.stderr.isTTY === true && values.json !== true;
  const started = performance.now();
  let lastDraw = 0;
  const onProgress = (p: ScoringProgress) => {
    const now = performance.now();
    if (!tty || now - lastDraw < 100) return;
    lastDraw = now;
    process.stderr.write(`\r\x1b[K${progressLine(p, (now - started) / 1000)}`);
  };
  const controller = new AbortController();
  const stop = () => controller.abort(new Error("interrupted"));
  process.once("SIGINT", stop);

  let modelVersion: string;
  let summary: Awaited<ReturnType<typeof scoreFile>>;
  try {
    if (remote) {
      const r = remoteModel();
      try {
        summary = await scoreFile({
          input,
          output,
          invalidOutput,
          model: r.model,
          chunkSize,
          signal: controller.signal,
          onProgress,
        });
      } finally {
        // Ending the stream changes nothing already scored, and must not replace scoreFile's own error.
        await r.close().catch(() => undefined);
      }
      modelVersion = [...r.versions].join(",");
    } else {
      const local = await localModel(version, threads);
      modelVersion = local.version;
      try {
        summary = await scoreFile({
          input,
          output,
          invalidOutput,
          model: local.model,
          chunkSize,
          concurrency: local.concurrency,
          signal: controller.signal,
          onProgress,
        });
      } finally {
        await local.release();
      }
    }
  } finally {
    process.removeListener("SIGINT", stop);
    if (tty) process.stderr.write("\r\x1b[K");
  }
  const rowsPerSecond = summary.seconds > 0 ? summary.rowsScored / summary.seconds : 0;
  if (values.json) {
    console.log(
      JSON.stringify({ ...summary, modelVersion, remote, rowsPerSecond: Math.round(rowsPerSecond) }),
    );
  } else {
    console.log(
      `scored ${count(summary.rowsScored)} of ${count(summary.rowsRead)} rows into ${summary.output} ` +
        `with model version ${modelVersion}${remote ? " (remote)" : ""} in ${summary.seconds.toFixed(1)} s ` +
        `(${count(Math.round(rowsPerSecond))} rows/s); ${count(summary.rowsInvalid)} invalid rows in ${summary.invalidOutput}`,
    );
  }
  return 0;
}
