import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";

/** Session storage: the token lives as long as the tab, never on disk, and is not sent to other sites. */
const TOKEN_KEY = "bikeshare.token";

export function getToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token: string): void {
  if (token === "") sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

// Read on every call, so a token entered or cleared applies to the next request without a reload.
const bearer: Interceptor = (next) => (req) => {
  const token = getToken();
  if (token !== "") req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

// The same services every other client uses, on the origin that served the page (connect-src 'self').
const transport = createConnectTransport({ baseUrl: window.location.origin, interceptors: [bearer] });

export const registry = createClient(RegistryService, transport);
export const train = createClient(TrainService, transport);
export const predict = createClient(PredictService, transport);
export const monitor = createClient(MonitorService, transport);

/**
 * What to tell the user when a call fails. The server's own message names the RPC and the role it
 * needs (services/auth/interceptor.ts); the console adds what to do about it.
 */
export function explain(error: unknown): string {
  const e = ConnectError.from(error);
  switch (e.code) {
    case Code.Unauthenticated:
      return getToken() === ""
        ? `Sign in needed: ${e.rawMessage}. Enter a token above.`
        : `The token was refused: ${e.rawMessage}.`;
    case Code.PermissionDenied:
      return `Not allowed with this token: ${e.rawMessage}.`;
    default:
      return e.rawMessage === "" ? `Request failed (${Code[e.code]})` : e.rawMessage;
  }
}
