/**
 * An ONNX model that predicts on a worker thread of its own.
 *
 * onnxruntime-node runs a session on the thread that calls `run` (the promise only defers the call to
 * the next turn of the event loop), so a batch job that predicts on its main thread cannot read,
 * validate or write the next chunk while a chunk is predicted. With this model the main thread keeps
 * doing that work while the worker predicts: on two cores, file scoring went from the sum of the two
 * to the larger of the two.
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

export class OnnxWorkerModel {
  /** ModelProto.metadata_props (includes `feature_names` as a JSON array for exported models). */
  readonly metadata: Record<string, string>;
  private readonly pending = new Map<
    number,
    { resolve: (data: Float32Array) => void; reject: (error: Error) => void }
  >();
  private nextId = 0;
  /** Set once the worker cannot answer any more (released, or it died); every later predict rejects with it. */
  private failure: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly signature: ReturnType<typeof checkSignature>,
    metadata: Record<string, string>,
  ) {
    this.metadata = metadata;
    worker.on("message", (m: FromWorker) => {
      if (m.type !== "result") return;
      const call = this.pending.get(m.id);
      if (call === undefined) return;
      this.settled(m.id);
      if ("error" in m) call.reject(new Error(`OnnxWorkerModel.predict: ${m.error}`));
      else call.resolve(m.data);
    });
    const fail = (error: Error) => {
      this.failure ??= error;
      for (const [id, call] of this.pending) {
        this.settled(id);
        call.reject(this.failure);
      }
    };
    worker.on("error", (error) => fail(new Error(`OnnxWorkerModel: the worker failed: ${error.message}`)));
    worker.on("exit", (code) => fail(new Error(`OnnxWorkerModel: the worker exited (code ${code})`)));
    worker.unref();
  }

  static async load(bytes: Uint8Array, opts: OnnxModelOptions = {}): Promise<OnnxWorkerModel> {
    const options = sessionOptions("OnnxWorkerModel.load", opts);
    const metadata = modelMetadata("OnnxWorkerModel.load", bytes);
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        ortPath: ORT_PATH,
        bytes,
        sessionOptions: options,
      },
    });
    try {
      const [m] = (await once(worker, "message")) as [FromWorker];
      if (m.type !== "ready")
        throw new Error(`OnnxWorkerModel.load: ${m.type === "failed" ? m.message : "unexpected message"}`);
      return new OnnxWorkerModel(worker, checkSignature("OnnxWorkerModel.load", m), metadata);
    } catch (error) {
      await worker.terminate();
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
   * Predicts `rows` rows of row-major float32 features (`data.length === rows * numFeatures`); the
   * features are copied to the worker, so the caller may reuse `data` once this returns.
   */
  async predict(data: Float32Array, rows: number): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    checkPredictInput("OnnxWorkerModel.predict", data, rows, this.numFeatures);
    if (rows === 0) return new Float32Array(0);
    const id = this.nextId++;
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Kept alive only while a prediction is owed, so a model nobody releases never holds the process open.
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({
        id,
        data,
        rows,
        cols: this.numFeatures,
        inputName: this.signature.inputName,
        outputName: this.signature.outputName,
      });
    });
  }

  private settled(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
  }

  async release(): Promise<void> {
    if (this.failure) return;
    this.failure = new Error("OnnxWorkerModel.predict: model has been released");
    await this.worker.terminate();
  }
}
