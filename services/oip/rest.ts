import { performance } from "node:perf_hooks";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import { BikeshareError } from "../../core/errors.js";
import { principalFromHeader } from "../auth/interceptor.js";
import type { TokenBook } from "../auth/tokens.js";
import { httpStatus } from "../errors.js";
import { clientAborted } from "../legacy/routes.js";
import type { Metrics } from "../observability/metrics.js";
import { formatPath, jsonTooDeep, MAX_JSON_DEPTH } from "../request-limits.js";
import {
  checkRequestedOutputs,
  infer,
  modelMetadata,
  modelReady,
  type OipOptions,
  resolveModel,
  serverMetadata,
} from "./model.js";
import {
  decodeRaw,
  encodeOutput,
  flattenJson,
  type InputTensor,
  maxElements,
  OUTPUT_TENSOR,
  tensorError,
} from "./tensors.js";

// connect-node does not export its request/response types; take them from its fallback signature.
type Fallback = NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>;
type Request = Parameters<Fallback>[0];
type Response = Parameters<Fallback>[1];

/** The binary tensor extension's header: how many leading bytes of the body are the JSON part. */
const HEADER_LENGTH = "inference-header-content-length";

export interface OipRestOptions extends OipOptions {
  metrics: Metrics;
  tokens: TokenBook;
  /** BIKESHARE_PREDICT_AUTH=required: metadata and inference need a token, as Predict does. */
  predictNeedsToken: boolean;
}

/** True for the paths the Open Inference Protocol owns, which this handler answers (404 included). */
export function isOipPath(url: string | undefined): boolean {
  const path = (url ?? "").split("?")[0] as string;
  return path === "/v2" || path.startsWith("/v2/");
}

interface Answer {
  status: number;
  json: unknown;
  /** The binary part after the JSON (binary tensor extension). */
  binary?: Uint8Array;
}

const badRequest = (message: string) => new BikeshareError("invalid_argument", message);

/** A refusal whose HTTP status has no error code of its own (405, 413). */
class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: Response, { status, json, binary }: Answer): void {
  const text = Buffer.from(JSON.stringify(json), "utf8");
  const headers: Record<string, string | number> = {
    "x-content-type-options": "nosniff",
    "content-type": binary ? "application/octet-stream" : "application/json",
    "content-length": text.length + (binary?.length ?? 0),
  };
  if (binary) headers[HEADER_LENGTH] = text.length;
  res.writeHead(status, headers);
  res.end(binary ? Buffer.concat([text, binary]) : text);
}

async function readBody(req: Request, maxBytes: number): Promise<Buffer> {
  const tooLarge = () =>
    new HttpRefusal(413, `request body is larger than ${maxBytes} bytes (BIKESHARE_MAX_BATCH rows)`);
  if (Number(req.headers["content-length"] ?? 0) > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseJson(text: string): unknown {
  if (text.trim() === "") throw badRequest("the request body is empty: send the inference request JSON");
  const deep = jsonTooDeep(text);
  if (deep !== undefined)
    throw badRequest(
      `${formatPath(deep, "body")} nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects`,
    );
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest(`the request body is not valid JSON: ${(error as Error).message}`);
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A tensor's `parameters` entry, when it is an object. */
const parameter = (tensor: Record<string, unknown>, key: string): unknown =>
  isObject(tensor.parameters) ? tensor.parameters[key] : undefined;

/**
 * The inference request's input tensors: `data` as JSON (flat or nested), or `binary_data_size` bytes
 * taken in order from the binary part after the JSON.
 */
function inputTensors(body: Record<string, unknown>, binary: Uint8Array, limit: number): InputTensor[] {
  if (!Array.isArray(body.inputs)) throw badRequest("inputs is required: a list of input tensors");
  let offset = 0;
  const tensors = body.inputs.map((input: unknown, i): InputTensor => {
    if (!isObject(input))
      throw badRequest(`inputs[${i}] must be a tensor object with name, datatype, shape and data`);
    const name = typeof input.name === "string" ? input.name : undefined;
    if (name === undefined) throw badRequest(`inputs[${i}].name is required: the tensor's name`);
    if (typeof input.datatype !== "string") throw tensorError(name, "has no datatype");
    const shape = input.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
      throw tensorError(name, "has no valid shape: a list of non-negative integers");
    const size = parameter(input, "binary_data_size");
    if (size === undefined)
      return { name, datatype: input.datatype, shape, data: flattenJson(name, input.data, shape) };
    if (input.data !== undefined) throw tensorError(name, "has both data and binary_data_size: use one");
    if (!Number.isInteger(size) || (size as number) < 0)
      throw tensorError(name, "has a binary_data_size that is not a non-negative integer");
    const end = offset + (size as number);
    if (end > binary.length)
      throw tensorError(
        name,
        `has binary_data_size ${size} but only ${binary.length - offset} bytes of binary data remain after the JSON`,
      );
    const bytes = binary.subarray(offset, end);
    offset = end;
    return { name, datatype: input.datatype, shape, data: decodeRaw(name, input.datatype, bytes, limit) };
  });
  if (offset !== binary.length)
    throw badRequest(
      `the body has ${binary.length - offset} bytes of binary data after the JSON that no input's binary_data_size claims`,
    );
  return tensors;
}

/**
 * Whether `cnt` is answered as binary data: when the request's outputs ask for it, or when the request
 * sets binary_data_output and the output does not say otherwise.
 */
function binaryOutput(body: Record<string, unknown>): boolean {
  const byDefault = parameter(body, "binary_data_output") === true;
  if (body.outputs === undefined) return byDefault;
  if (!Array.isArray(body.outputs)) throw badRequest("outputs must be a list of requested output tensors");
  const outputs = body.outputs.map((o: unknown, i) => {
    if (!isObject(o) || typeof o.name !== "string") throw badRequest(`outputs[${i}].name is required`);
    return o;
  });
  checkRequestedOutputs(outputs.map((o) => o.name as string));
  const asked = outputs.find((o) => o.name === OUTPUT_TENSOR);
  const flag = asked ? parameter(asked, "binary_data") : undefined;
  return typeof flag === "boolean" ? flag : byDefault;
}

const DECODE_FAILED = Symbol("bad percent-encoding");

function segments(path: string): (string | typeof DECODE_FAILED)[] {
  return path
    .split("/")
    .slice(1)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return DECODE_FAILED;
      }
    });
}

/**
 * The Open Inference Protocol v2 REST API (docs/oip-v2.md) on the server's HTTP port: health, server and
 * model metadata, readiness and inference with JSON or binary tensor data. Errors are the protocol's
 * `{"error": "…"}` with the HTTP status of their code (400 for bad input, 404 for a model or version
 * not served).
 */
export function createOipRestHandler(
  options: OipRestOptions,
): (req: Request, res: Response) => Promise<void> {
  const { slot, metrics, tokens, maxBatchSize } = options;
  // JSON of 13 tensors with a timestamp string each row stays well under 1 KiB a row.
  const maxBytes = 4096 + maxBatchSize * 1024;

  /** Metadata, readiness and inference need what Predict needs: a token when BIKESHARE_PREDICT_AUTH=required. */
  const authorize = (req: Request) => {
    const header = req.headers.authorization;
    const principal = principalFromHeader(typeof header === "string" ? header : null, tokens);
    if (principal === "malformed")
      throw new BikeshareError("unauthenticated", "the bearer token is not valid");
    if (options.predictNeedsToken && principal === undefined)
      throw new BikeshareError(
        "unauthenticated",
        "the inference API needs a bearer token with role reader or higher",
      );
  };

  /** `matched.key` names the route for the metrics as soon as it is known, so failures count under it. */
  const route = async (req: Request, path: string[], matched: { key: string }): Promise<Answer> => {
    const method = req.method ?? "GET";
    const [, first, name, ...rest] = path;
    const only = (allowed: string, route: string) => {
      matched.key = `${allowed} ${route}`;
      if (method !== allowed) throw new HttpRefusal(405, `${route} answers ${allowed}, not ${method}`);
    };
    if (path.length === 1) {
      only("GET", "/v2");
      return { status: 200, json: serverMetadata() };
    }
    if (first === "health" && path.length === 3 && (name === "live" || name === "ready")) {
      only("GET", `/v2/health/${name}`);
      if (name === "live") return { status: 200, json: { live: true } };
      const ready = slot.current !== undefined;
      return { status: ready ? 200 : 503, json: { ready } };
    }
    if (first === "models" && name !== undefined && name !== "") {
      let version: string | undefined;
      let tail = rest;
      if (tail[0] === "versions" && tail.length >= 2) {
        version = tail[1] as string;
        tail = tail.slice(2);
      }
      const base = `/v2/models/:name${version === undefined ? "" : "/versions/:version"}`;
      if (tail.length === 0) {
        only("GET", base);
        authorize(req);
        return { status: 200, json: modelMetadata(resolveModel(slot, name, version)) };
      }
      if (tail.length === 1 && tail[0] === "ready") {
        only("GET", `${base}/ready`);
        authorize(req);
        const ready = modelReady(slot, name, version);
        return { status: ready ? 200 : 503, json: { name, ready } };
      }
      if (tail.length === 1 && tail[0] === "infer") {
        only("POST", `${base}/infer`);
        authorize(req);
        return await inferRoute(req, name, version);
      }
    }
    throw new BikeshareError(
      "not_found",
      `no such Open Inference Protocol route: ${method} /${path.join("/").slice(0, 200)}`,
    );
  };

  const inferRoute = async (req: Request, name: string, version: string | undefined): Promise<Answer> => {
    const body = await readBody(req, maxBytes);
    const declared = req.headers[HEADER_LENGTH];
    let jsonBytes = body.length;
    if (declared !== undefined) {
      jsonBytes = Number(declared);
      if (!Number.isInteger(jsonBytes) || jsonBytes < 0 || jsonBytes > body.length)
        throw badRequest(
          `Inference-Header-Content-Length is ${JSON.stringify(declared)}; it must be the JSON part's length, at most the body's ${body.length} bytes`,
        );
    }
    const request = parseJson(body.subarray(0, jsonBytes).toString("utf8"));
    if (!isObject(request)) throw badRequest("the body must be a JSON object: the inference request");
    const tensors = inputTensors(request, body.subarray(jsonBytes), maxElements(maxBatchSize));
    const binary = binaryOutput(request);
    const id = typeof request.id === "string" ? request.id : undefined;
    const { model, predictions } = await infer(options, name, version, tensors, id);
    const shape = [predictions.length, 1];
    const output = binary
      ? {
          name: OUTPUT_TENSOR,
          datatype: "FP32",
          shape,
          parameters: { binary_data_size: predictions.length * 4 },
        }
      : { name: OUTPUT_TENSOR, datatype: "FP32", shape, data: Array.from(predictions) };
    return {
      status: 200,
      json: {
        model_name: model.name,
        model_version: model.version,
        ...(id !== undefined ? { id } : {}),
        outputs: [output],
      },
      ...(binary ? { binary: encodeOutput(predictions) } : {}),
    };
  };

  return async (req, res) => {
    const started = performance.now();
    const path = segments((req.url ?? "/").split("?")[0] as string);
    const matched = { key: "unmatched" };
    let status = 500;
    try {
      if (path.includes(DECODE_FAILED)) throw badRequest("the path is not valid percent-encoding");
      const answer = await route(req, path as string[], matched);
      status = answer.status;
      send(res, answer);
    } catch (error) {
      if (error instanceof HttpRefusal) {
        status = error.status;
        send(res, { status, json: { error: error.message } });
      } else if (error instanceof BikeshareError && error.code !== "internal") {
        status = httpStatus(error.code);
        send(res, { status, json: { error: error.message } });
      } else if (clientAborted(req)) {
        // Nobody is left to answer (nginx's "client closed request"), and it is not the server's fault.
        status = 499;
        throw error;
      } else {
        send(res, { status: 500, json: { error: "internal error; the server logged the details" } });
        throw error;
      }
    } finally {
      metrics.observe("oip", matched.key, String(status), "rest", (performance.now() - started) / 1000);
    }
  };
}
