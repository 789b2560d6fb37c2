import { existsSync, readFileSync } from "node:fs";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { configFromEnv } from "../services/config.js";

/** Whether `baseUrl` names this machine's loopback interface (where the local admin token belongs). */
export function isLoopback(baseUrl: string): boolean {
  let host: string;
  try {
    host = new URL(baseUrl).hostname.toLowerCase();
  } catch {
    return false;
  }
  return (
    host === "localhost" ||
    host === "[::1]" ||
    host === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

/**
 * Where the CLI finds the server and its credentials: BIKESHARE_URL (default: this machine's
 * PORT) and BIKESHARE_TOKEN, else the local admin token that the server wrote on its first start.
 * The admin token is sent only to a server on this machine: a BIKESHARE_URL elsewhere (a typo, a
 * shared profile) must not receive it, so such a URL needs BIKESHARE_TOKEN.
 */
export function connection(env: NodeJS.ProcessEnv = process.env): { baseUrl: string; token?: string } {
  const config = configFromEnv(env);
  const baseUrl = env.BIKESHARE_URL || `http://127.0.0.1:${config.port}`;
  if (env.BIKESHARE_TOKEN) return { baseUrl, token: env.BIKESHARE_TOKEN };
  if (!isLoopback(baseUrl)) {
    throw new Error(
      `BIKESHARE_URL ${baseUrl} is not this machine (127.0.0.1, ::1 or localhost): set BIKESHARE_TOKEN to a token for that server; the local admin token (${config.adminTokenPath}) is only sent to this machine`,
    );
  }
  if (existsSync(config.adminTokenPath))
    return { baseUrl, token: readFileSync(config.adminTokenPath, "utf8").trim() };
  return { baseUrl };
}

export function clientFor<T extends DescService>(
  service: T,
  env: NodeJS.ProcessEnv = process.env,
): Client<T> {
  const { baseUrl, token } = connection(env);
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(service, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [auth] }));
}

/** A plain text table: columns as wide as their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
