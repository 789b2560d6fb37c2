import type { Interceptor } from "@connectrpc/connect";
import { BikeshareError } from "../../core/errors.js";
import { type Principal, principalKey, type Role } from "./principal.js";
import type { TokenBook } from "./tokens.js";

const RANK: Record<Role, number> = { reader: 1, trainer: 2, admin: 3 };

/** Whether `role` may do what `needed` may (roles are ordered reader < trainer < admin). */
export const roleAllows = (role: Role, needed: Role) => RANK[role] >= RANK[needed];

/** The least role each RPC needs; "open" needs no token. Unlisted methods need admin, so a new RPC is closed until listed. */
export type Policy = Record<string, Role | "open">;

export function defaultPolicy(options: { openPredict: boolean }): Policy {
  const predict = options.openPredict ? "open" : "reader";
  return {
    "bikeshare.v1.PredictService/Predict": predict,
    "bikeshare.v1.PredictService/PredictBatch": predict,
    "bikeshare.v1.PredictService/PredictStream": predict,
    "bikeshare.v1.PredictService/GetModelInfo": predict,
    // Reads and writes files on the server: a trainer's job, like starting a training.
    "bikeshare.v1.PredictService/StartScoring": "trainer",

    "bikeshare.v1.TrainService/GetJob": "reader",
    "bikeshare.v1.TrainService/WatchJob": "reader",
    "bikeshare.v1.TrainService/ListJobs": "reader",
    "bikeshare.v1.TrainService/StartTraining": "trainer",
    "bikeshare.v1.TrainService/CancelJob": "trainer",

    "bikeshare.v1.RegistryService/GetExperiment": "reader",
    "bikeshare.v1.RegistryService/ListExperiments": "reader",
    "bikeshare.v1.RegistryService/GetRun": "reader",
    "bikeshare.v1.RegistryService/GetMetricHistory": "reader",
    "bikeshare.v1.RegistryService/SearchRuns": "reader",
    "bikeshare.v1.RegistryService/ListArtifacts": "reader",
    "bikeshare.v1.RegistryService/DownloadArtifact": "reader",
    "bikeshare.v1.RegistryService/GetRegisteredModel": "reader",
    "bikeshare.v1.RegistryService/ListRegisteredModels": "reader",
    "bikeshare.v1.RegistryService/GetModelVersion": "reader",
    "bikeshare.v1.RegistryService/ListModelVersions": "reader",
    "bikeshare.v1.RegistryService/ListAliasHistory": "reader",
    "bikeshare.v1.RegistryService/CreateExperiment": "trainer",
    "bikeshare.v1.RegistryService/CreateRun": "trainer",
    "bikeshare.v1.RegistryService/LogRunData": "trainer",
    "bikeshare.v1.RegistryService/EndRun": "trainer",
    "bikeshare.v1.RegistryService/UploadArtifact": "trainer",
    "bikeshare.v1.RegistryService/CreateRegisteredModel": "trainer",
    "bikeshare.v1.RegistryService/CreateModelVersion": "trainer",
    // Moving aliases changes what serves: admins only.
    "bikeshare.v1.RegistryService/SetAlias": "admin",
    "bikeshare.v1.RegistryService/DeleteAlias": "admin",
    "bikeshare.v1.RegistryService/TransitionStage": "admin",

    "bikeshare.v1.MonitorService/GetDriftReport": "reader",
    "bikeshare.v1.MonitorService/ListReports": "reader",
    "bikeshare.v1.MonitorService/GetPerformance": "reader",
    "bikeshare.v1.MonitorService/ListAlerts": "reader",
    "bikeshare.v1.MonitorService/ReportActuals": "trainer",
    "bikeshare.v1.MonitorService/RunCheck": "trainer",

    // Open Inference Protocol v2 (services/oip): health answers without a token, like the probes below;
    // the model's metadata and inference need what Predict needs.
    "inference.GRPCInferenceService/ServerLive": "open",
    "inference.GRPCInferenceService/ServerReady": "open",
    "inference.GRPCInferenceService/ServerMetadata": "open",
    "inference.GRPCInferenceService/ModelReady": predict,
    "inference.GRPCInferenceService/ModelMetadata": predict,
    "inference.GRPCInferenceService/ModelInfer": predict,

    // Kubernetes gRPC probes and grpc-health-probe send no token; reflection describes the public protos.
    "grpc.health.v1.Health/Check": "open",
    "grpc.health.v1.Health/Watch": "open",
    "grpc.health.v1.Health/List": "open",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "open",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "open",
  };
}

/** Resolves a bearer token to a principal (or undefined); errors never echo the token. */
export function principalFromHeader(
  header: string | null,
  book: TokenBook,
): Principal | undefined | "malformed" {
  if (header === null || header === "") return undefined;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) return "malformed";
  return book.lookup(match[1] as string) ?? "malformed";
}

/** Throws BikeshareError: register it inside `errorInterceptor` (services/errors.ts). */
export function authInterceptor(book: TokenBook, policy: Policy): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const needed = policy[method] ?? "admin";
    const principal = principalFromHeader(req.header.get("authorization"), book);
    if (principal === "malformed") {
      throw new BikeshareError("unauthenticated", "the bearer token is not valid");
    }
    if (needed !== "open") {
      if (principal === undefined) {
        throw new BikeshareError(
          "unauthenticated",
          `${method} needs a bearer token with role ${needed} or higher`,
        );
      }
      if (!roleAllows(principal.role, needed)) {
        throw new BikeshareError(
          "permission_denied",
          `${principal.name} has role ${principal.role}; ${method} needs ${needed} or higher`,
        );
      }
    }
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}
