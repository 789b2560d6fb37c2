/**
 * An ONNX model that predicts on worker threads of its own, one session per worker.
 *
 * onnxruntime-node runs a session on the thread that calls `run` (the promise only defers the call to
 * the next turn of the event loop), so a batch job that predicts on its main thread cannot read,
 * validate or write the next chunk while a chunk is predicted. With this model the main thread keeps
 * doing that work while the workers predict.
 *
 * Several workers of one intra-op thread each beat one worker of several threads when the caller has
 * several batches in flight: an intra-op parallel loop waits for its slowest thread, and on a machine
 * where the main thread shares the cores, that is usually the one whose core the main thread took.
 * Independent sessions just take turns (docs/benchmarks.md, batch scoring).
 *
 * For serving single requests the in-thread OnnxModel stays the better fit: a one-row prediction
 * takes microseconds, less than a message to another thread.
 */
import { once } from "node:events";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import {
  checkPredictInput,
  checkSignature,
  featureNamesOf,
  modelMetadata,
  type OnnxModelOptions,
  type SessionSignature,
  sessionOptions,
} from "./session.js";

type FromWorker =
  | ({ type: "ready" } & SessionSignature)
  | { type: "failed"; message: string }
  | { type: "result"; id: number; data: Float32Array }
  | { type: "result"; id: number; error: string };

/**
 * The worker's whole program, plain CommonJS evaluated from a string: a worker thread does not get the
 * TypeScript loader the main thread may run under (tsx, vitest), and this keeps it one self-contained unit.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.ortPath);
const message = (e) => (e && e.message) || String(e);
ort.InferenceSession.create(workerData.bytes, workerData.sessionOptions).then(
  (session) => {
    parentPort.postMessage({
      type: "ready",
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputs: session.inputMetadata.map((m) => ({ isTensor: m.isTensor, type: m.type, shape: m.shape })),
    });
    parentPort.on("message", async (m) => {
      try {
        const input = new ort.Tensor("float32", m.data, [m.rows, m.cols]);
        const out = (await session.run({ [m.inputName]: input }, [m.outputName]))[m.outputName];
        if (!out || !(out.data instanceof Float32Array) || out.data.length !== m.rows)
          throw new Error('output "' + m.outputName + '" is not a float32 tensor with ' + m.rows + " values");
        const data = new Float32Array(out.data);
        parentPort.postMessage({ type: "result", id: m.id, data }, [data.buffer]);
      } catch (e) {
        parentPort.postMessage({ type: "result", id: m.id, error: message(e) });
      }
    });
  },
  (e) => parentPort.postMessage({ type: "failed", message: message(e) }),
);
`;

const ORT_PATH = createRequire(import.meta.url).resolve("onnxruntime-node");

export interface OnnxWorkerModelOptions extends OnnxModelOptions {
  /** Worker threads, each with a session of `intraOpThreads` threads (default 1). */
  workers?: number;
}

interface Lane {
  worker: Worker;
  /** Predictions sent to this worker and not answered yet. */
  owed: number;
}

export class OnnxWorkerModel {
  /** ModelProto.metadata_props (includes `feature_names` as a JSON array for exported models). */
  readonly metadata: Record<string, string>;
  private readonly pending = new Map<
    number,
    { lane: Lane; resolve: (data: Float32Array) => void; reject: (error: Error) => void }
  >();
  private nextId = 0;
  /** Set once a worker cannot answer any more (released, or it died); every later predict rejects with it. */
  private failure: Error | undefined;

  private constructor(
    private readonly lanes: Lane[],
    private readonly signature: ReturnType<typeof checkSignature>,
    metadata: Record<string, string>,
  ) {
    this.metadata = metadata;
    const fail = (error: Error) => {
      this.failure ??= error;
      for (const [id, call] of this.pending) {
        this.settled(id, call.lane);
        call.reject(this.failure);
      }
    };
    for (const { worker } of lanes) {
      worker.on("message", (m: FromWorker) => {
        if (m.type !== "result") return;
        const call = this.pending.get(m.id);
        if (call === undefined) return;
        this.settled(m.id, call.lane);
        if ("error" in m) call.reject(new Error(`OnnxWorkerModel.predict: ${m.error}`));
        else call.resolve(m.data);
      });
      worker.on("error", (error) => fail(new Error(`OnnxWorkerModel: a worker failed: ${error.message}`)));
      worker.on("exit", (code) => fail(new Error(`OnnxWorkerModel: a worker exited (code ${code})`)));
      worker.unref();
    }
  }

  static async load(bytes: Uint8Array, opts: OnnxWorkerModelOptions = {}): Promise<OnnxWorkerModel> {
    const options = sessionOptions("OnnxWorkerModel.load", opts);
    const count = opts.workers ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 64) {
      throw new Error(`OnnxWorkerModel.load: workers must be an integer in 1..64, got ${opts.workers}`);
    }
    const metadata = modelMetadata("OnnxWorkerModel.load", bytes);
    const workers = Array.from(
      { length: count },
      () =>
        new Worker(WORKER_SOURCE, {
          eval: true,
          workerData: { ortPath: ORT_PATH, bytes, sessionOptions: options },
        }),
    );
    try {
      const ready = await Promise.all(
        workers.map(async (worker) => {
          const [m] = (await once(worker, "message")) as [FromWorker];
          if (m.type !== "ready")
            throw new Error(
              `OnnxWorkerModel.load: ${m.type === "failed" ? m.message : "unexpected message"}`,
            );
          return m;
        }),
      );
      const signature = checkSignature("OnnxWorkerModel.load", ready[0] as SessionSignature);
      const lanes = workers.map((worker) => ({ worker, owed: 0 }));
      return new OnnxWorkerModel(lanes, signature, metadata);
    } catch (error) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw error;
    }
  }

  get numFeatures(): number {
    return this.signature.numFeatures;
  }

  /** Feature names stored by the exporter, or undefined when the model has none. */
  get featureNames(): string[] | undefined {
    return featureNamesOf(this.metadata);
  }

  /**
   * Predicts `rows` rows of row-major float32 features (`data.length === rows * numFeatures`) on the
   * least busy worker; the features are copied to it, so the caller may reuse `data` once this returns.
   */
  async predict(data: Float32Array, rows: number): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    checkPredictInput("OnnxWorkerModel.predict", data, rows, this.numFeatures);
    if (rows === 0) return new Float32Array(0);
    const id = this.nextId++;
    const lane = this.lanes.reduce((a, b) => (b.owed < a.owed ? b : a));
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.set(id, { lane, resolve, reject });
      // Kept alive only while a prediction is owed, so a model nobody releases never holds the process open.
      if (lane.owed++ === 0) lane.worker.ref();
      lane.worker.postMessage({
        id,
        data,
        rows,
        cols: this.numFeatures,
        inputName: this.signature.inputName,
        outputName: this.signature.outputName,
      });
    });
  }

  private settled(id: number, lane: Lane): void {
    this.pending.delete(id);
    if (--lane.owed === 0) lane.worker.unref();
  }

  async release(): Promise<void> {
    // Every worker, even after one died: the others of a pool would otherwise live on until the process ends.
    this.failure ??= new Error("OnnxWorkerModel.predict: model has been released");
    await Promise.all(this.lanes.map((l) => l.worker.terminate()));
  }
}
