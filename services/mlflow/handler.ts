import { principalFromHeader } from "../auth/interceptor.js";
import type { Role } from "../auth/principal.js";
import type { TokenBook } from "../auth/tokens.js";
import type { Registry } from "../registry/registry.js";
import { artifactProxyRoutes, trackingArtifactRoutes } from "./artifacts.js";
import {
  MlflowError,
  queryParams,
  type Request,
  type Response,
  type Route,
  readJsonBody,
  sendError,
  sendJson,
  toMlflowError,
} from "./http.js";
import { modelRegistryRoutes } from "./model-registry.js";
import { trackingRoutes } from "./tracking.js";

/**
 * MLflow's REST API 2.0 on the server's port (docs/mlflow-api.md): `/api/2.0/mlflow/…` and its
 * `/ajax-api/2.0/mlflow/…` alias for tracking and the model registry, `/api/2.0/mlflow-artifacts/…`
 * for artifacts, all backed by the Registry. Bearer tokens and roles as RegistryService
 * (services/auth/interceptor.ts); answers and errors in MLflow's JSON. A route outside the subset
 * answers ENDPOINT_NOT_FOUND, as MLflow's own server.
 */

const RANK: Record<Role, number> = { reader: 1, trainer: 2, admin: 3 };

/** JSON bodies: MLflow's largest request, a log-batch of 1000 metrics, 100 params and 100 tags, fits well. */
export const MLFLOW_MAX_JSON_BYTES = 4 * 1024 * 1024;

const API = /^\/(?:api|ajax-api)\/2\.0\/(mlflow|mlflow-artifacts)\/(.*)$/;
const PREFIXES = ["/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/", "/ajax-api/", "/api/3.0/mlflow/"];

export interface MlflowApi {
  /** Whether `url` is MLflow's (to be routed here rather than to the legacy routes). */
  matches(url: string | undefined): boolean;
  handle(req: Request, res: Response): Promise<void>;
}

export function createMlflowHandler(options: {
  registry: Registry;
  tokens: TokenBook;
  /** The model this server serves, which the rename endpoint leaves alone. */
  servedModel: string;
  /** Why every call is refused, on a process without the control plane (`--role predict`), where the MLflow API is not served. */
  unavailable?: string;
  onError?: (error: unknown) => void;
}): MlflowApi {
  const { registry, tokens } = options;
  const table = (routes: Record<string, Route>) => {
    const out = new Map<string, Route>();
    for (const [key, route] of Object.entries(routes)) {
      out.set(`${route.method} ${key.replace(/^[A-Z]+ /, "")}`, route);
    }
    return out;
  };
  const tracking = table({
    ...trackingRoutes(registry),
    ...trackingArtifactRoutes(registry),
    ...modelRegistryRoutes(registry, options.servedModel),
  });
  const proxy = table(artifactProxyRoutes(registry));

  const find = (method: string, url: URL): { route: Route; rest: string } => {
    const m = API.exec(url.pathname);
    const notFound = () =>
      new MlflowError(
        "ENDPOINT_NOT_FOUND",
        `${method} ${url.pathname} is not an endpoint of this server's MLflow API (docs/mlflow-api.md lists the subset served)`,
      );
    if (!m) throw notFound();
    const [, api, path] = m as unknown as [string, string, string];
    if (api === "mlflow") {
      const route = tracking.get(`${method} ${path}`);
      if (!route) {
        // A known path asked with another method: Flask, under MLflow's server, answers 405.
        const allowed = ["GET", "POST", "PATCH", "DELETE", "PUT"].filter((m) => tracking.has(`${m} ${path}`));
        if (allowed.length > 0) {
          throw new MlflowError(
            "BAD_REQUEST",
            `${method} is not allowed on ${url.pathname}; use ${allowed.join(" or ")}`,
            405,
          );
        }
        throw notFound();
      }
      return { route, rest: "" };
    }
    const artifact = /^artifacts(?:\/(.*))?$/.exec(path);
    const route = artifact ? proxy.get(`${method} artifacts`) : undefined;
    if (!route || !artifact) throw notFound();
    return { route, rest: artifact[1] ?? "" };
  };

  const handle = async (req: Request, res: Response): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const method = (req.method ?? "GET").toUpperCase();
    try {
      if (options.unavailable !== undefined) {
        throw new MlflowError("TEMPORARILY_UNAVAILABLE", options.unavailable);
      }
      const { route, rest } = find(method, url);
      const principal = principalFromHeader(
        typeof req.headers.authorization === "string" ? req.headers.authorization : null,
        tokens,
      );
      if (principal === "malformed")
        throw new MlflowError("UNAUTHENTICATED", "the bearer token is not valid");
      const what = `${method} ${url.pathname}`;
      if (principal === undefined) {
        throw new MlflowError(
          "UNAUTHENTICATED",
          `${what} needs a bearer token with role ${route.role} or higher (set MLFLOW_TRACKING_TOKEN)`,
        );
      }
      if (RANK[principal.role] < RANK[route.role]) {
        throw new MlflowError(
          "PERMISSION_DENIED",
          `${principal.name} has role ${principal.role}; ${what} needs ${route.role} or higher`,
        );
      }
      const body = route.rawBody || method === "GET" ? {} : await readJsonBody(req, MLFLOW_MAX_JSON_BYTES);
      const params = { ...queryParams(url), ...body };
      const answer = await route.handle({ params, principal, req, res, rest });
      if (answer !== undefined) sendJson(res, 200, answer);
    } catch (error) {
      const mlflow = toMlflowError(error);
      if (!mlflow) options.onError?.(error);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // An upload refused before its body was read: drain what is left so the answer reaches the client.
      if (!req.complete) req.resume();
      sendError(res, mlflow ?? new MlflowError("INTERNAL_ERROR", "internal error"));
    }
  };

  return {
    matches: (url) => url !== undefined && PREFIXES.some((p) => url.startsWith(p) || `${url}/` === p),
    handle,
  };
}
