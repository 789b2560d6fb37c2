import { posix } from "node:path";
import type { Registry, Run } from "../registry/registry.js";
import { runArtifactUri } from "../registry/search-filter.js";
import { type Call, MlflowError, type Route, requireStr, str } from "./http.js";

/**
 * Artifacts through MLflow's proxy API (mlflow-artifacts), which `mlflow.log_artifact` uses when the
 * run's artifact_uri is `mlflow-artifacts:/<experiment_id>/<run_id>/artifacts` (entities.ts), and the
 * tracking API's artifacts/list. Bytes go to and come from the run's artifacts in the registry,
 * streamed both ways; an upload needs the run to be running, as Registry.putArtifact.
 */

interface Located {
  run: Run;
  /** The path inside the run ("" for the run's root). */
  path: string;
}

function notFound(path: string): never {
  throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `No artifact at ${JSON.stringify(path)}`);
}

/** `<experiment_id>/<run_id>/artifacts[/<path>]` to the run and the path inside it. */
async function locate(registry: Registry, full: string): Promise<Located> {
  const clean = posix.normalize(full.replace(/^\/+/, ""));
  if (clean.startsWith("..") || clean.split("/").includes("..")) {
    throw new MlflowError("INVALID_PARAMETER_VALUE", `Invalid path ${JSON.stringify(full)}`);
  }
  const [experimentId, runId, root, ...rest] = clean.split("/");
  if (!experimentId || !runId || root !== "artifacts") {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `artifact paths are <experiment_id>/<run_id>/artifacts/<path>, got ${JSON.stringify(full)}`,
    );
  }
  const run = await registry.getRun(runId);
  if (!run || run.experimentId !== experimentId) notFound(full);
  return { run, path: rest.join("/") };
}

/** Files and folders directly under `dir` of a run's (flat, slash-separated) artifact paths. */
function listing(run: Run, dir: string) {
  const prefix = dir === "" ? "" : `${dir.replace(/\/+$/, "")}/`;
  const entries = new Map<string, { path: string; is_dir: boolean; file_size?: number }>();
  for (const a of run.artifacts) {
    if (!a.path.startsWith(prefix)) continue;
    const [head, ...tail] = a.path.slice(prefix.length).split("/");
    if (!head) continue;
    if (tail.length > 0) entries.set(head, { path: head, is_dir: true });
    else entries.set(head, { path: head, is_dir: false, file_size: a.sizeBytes });
  }
  return [...entries.values()].sort((x, y) => x.path.localeCompare(y.path));
}

/** The artifact path after `artifacts/` in the URL, decoded. */
function restOf(call: Call): string {
  try {
    return decodeURIComponent(call.rest);
  } catch {
    throw new MlflowError("INVALID_PARAMETER_VALUE", "the artifact path is not valid URL encoding");
  }
}

export function artifactProxyRoutes(registry: Registry): Record<string, Route> {
  return {
    // GET artifacts?path=… lists; GET artifacts/<path> downloads (told apart by `rest`).
    "GET artifacts": {
      method: "GET",
      role: "reader",
      handle: async (call) => {
        const rest = restOf(call);
        if (rest === "") {
          const { run, path } = await locate(registry, str(call.params, "path") ?? "");
          return { files: listing(run, path) };
        }
        const { run, path } = await locate(registry, rest);
        if (!run.artifacts.some((a) => a.path === path)) notFound(rest);
        const { artifact, chunks } = await registry.openArtifact(run.id, path);
        call.res.writeHead(200, {
          "content-type": artifact.contentType || "application/octet-stream",
          "content-length": artifact.sizeBytes,
          "x-content-type-options": "nosniff",
          "content-disposition": `attachment; filename="${posix.basename(path).replace(/["\\\r\n]/g, "_")}"`,
        });
        for await (const chunk of chunks) {
          if (!call.res.write(chunk)) await new Promise((r) => call.res.once("drain", r));
        }
        call.res.end();
        return undefined;
      },
    },
    "PUT artifacts": {
      method: "PUT",
      role: "trainer",
      rawBody: true,
      handle: async (call) => {
        const { run, path } = await locate(registry, restOf(call));
        if (path === "") throw new MlflowError("INVALID_PARAMETER_VALUE", "an upload needs a file path");
        const type = call.req.headers["content-type"];
        await registry.putArtifact(
          run.id,
          path,
          call.req as AsyncIterable<Uint8Array>,
          typeof type === "string" && type !== "application/octet-stream" ? type : undefined,
        );
        return {};
      },
    },
  };
}

/** The tracking API's artifacts/list (`run_id`, `path`). */
export function trackingArtifactRoutes(registry: Registry): Record<string, Route> {
  return {
    "artifacts/list": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const runId = str(params, "run_id") || requireStr(params, "run_uuid");
        const run = await registry.getRun(runId);
        if (!run) throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Run with id=${runId} not found`);
        const dir = str(params, "path") ?? "";
        const files = listing(run, dir).map((f) => ({
          ...f,
          path: dir === "" ? f.path : `${dir}/${f.path}`,
        }));
        return { root_uri: runArtifactUri(run.experimentId, run.id), files };
      },
    },
  };
}
