import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clientFor, connection } from "../../cli/client.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";

// A dummy listener on every interface records the Authorization header each request carries: the
// local admin token may reach it through loopback only, never through the machine's other address.

let server: Server;
let port: number;
let dir: string;
let tokenFile: string;
const seen: (string | undefined)[] = [];
const ADMIN = "adm_local_secret";

/** This machine's first address that is not loopback (the container's own interface). */
function outsideAddress(): string {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  throw new Error("this machine has no IPv4 address besides loopback to test with");
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cli-token-"));
  tokenFile = join(dir, "admin-token");
  await writeFile(tokenFile, `${ADMIN}\n`);
  server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ code: "unauthenticated", message: "dummy" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

async function call(env: NodeJS.ProcessEnv): Promise<unknown> {
  seen.length = 0;
  try {
    await clientFor(TrainService, { BIKESHARE_ADMIN_TOKEN_FILE: tokenFile, ...env }).listJobs({});
    return undefined;
  } catch (error) {
    return error;
  }
}

describe("CLI credentials", () => {
  it("sends the local admin token to a loopback BIKESHARE_URL (or none set)", async () => {
    for (const host of ["127.0.0.1", "localhost", "[::1]"]) {
      expect(
        connection({ BIKESHARE_ADMIN_TOKEN_FILE: tokenFile, BIKESHARE_URL: `http://${host}:${port}` }).token,
      ).toBe(ADMIN);
    }
    await call({ BIKESHARE_URL: `http://127.0.0.1:${port}` });
    expect(seen).toEqual([`Bearer ${ADMIN}`]);
    await call({ PORT: String(port) });
    expect(seen).toEqual([`Bearer ${ADMIN}`]);
  });

  it("never sends the admin token to another address: it asks for BIKESHARE_TOKEN instead", async () => {
    const url = `http://${outsideAddress()}:${port}`;
    const error = await call({ BIKESHARE_URL: url });
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain("set BIKESHARE_TOKEN");
    expect((error as Error).message).toContain(url);
    expect(seen).toEqual([]);
    for (const other of [
      "http://127.0.0.1.example.com:1",
      "http://localhost.example:1",
      "http://10.0.0.1:1",
    ]) {
      expect(
        () => connection({ BIKESHARE_ADMIN_TOKEN_FILE: tokenFile, BIKESHARE_URL: other }),
        other,
      ).toThrow(/BIKESHARE_TOKEN/);
    }
    await call({ BIKESHARE_URL: url, BIKESHARE_TOKEN: "trn_remote" });
    expect(seen).toEqual(["Bearer trn_remote"]);
  });
});
