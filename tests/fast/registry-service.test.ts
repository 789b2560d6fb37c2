import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService, RunStatus } from "../../gen/bikeshare/v1/registry_pb.js";
import { authInterceptor, defaultPolicy } from "../../services/auth/interceptor.js";
import { hashToken, TokenBook } from "../../services/auth/tokens.js";
import { errorInterceptor } from "../../services/errors.js";
import { Registry } from "../../services/registry/registry.js";
import { createRegistryService } from "../../services/registry/registry-service.js";
import { Database } from "../../services/storage/database.js";
import { violationsOf } from "../helpers/rpc-errors.js";

// RegistryService over connect's in-memory transport, an in-memory DuckDB and the real auth interceptor.

const TOKENS = { reader: "reader-token", trainer: "trainer-token", admin: "admin-token" } as const;
type Role = keyof typeof TOKENS;

let dir: string;
let db: Database;
let clientAs: (role?: Role) => Client<typeof RegistryService>;

async function failure(call: Promise<unknown>, code: Code): Promise<ConnectError> {
  const error = await call.then(
    () => expect.fail(`expected ${Code[code]}, the call succeeded`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  expect(Code[(error as ConnectError).code]).toBe(Code[code]);
  return error as ConnectError;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-fast-registry-"));
  db = await Database.open(":memory:");
  const registry = await Registry.open(db, join(dir, "artifacts"));
  const book = new TokenBook(
    (Object.keys(TOKENS) as Role[]).map((role) => ({
      name: `fast-${role}`,
      role,
      sha256: hashToken(TOKENS[role]),
    })),
  );
  const policy = defaultPolicy({ openPredict: true });
  clientAs = (role) =>
    createClient(
      RegistryService,
      createRouterTransport((router) => router.service(RegistryService, createRegistryService(registry)), {
        router: { interceptors: [errorInterceptor(), authInterceptor(book, policy)] },
        transport: {
          interceptors: role
            ? [
                (next) => (req) => {
                  req.header.set("authorization", `Bearer ${TOKENS[role]}`);
                  return next(req);
                },
              ]
            : [],
        },
      }),
    );
});

afterAll(async () => {
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("RegistryService (in-memory transport)", () => {
  it("needs a token for every method and the role each method is listed with", async () => {
    const anonymous = await failure(clientAs().listExperiments({}), Code.Unauthenticated);
    expect(anonymous.rawMessage).toContain("needs a bearer token with role reader");
    const reader = await failure(clientAs("reader").createExperiment({ name: "x" }), Code.PermissionDenied);
    expect(reader.rawMessage).toBe(
      "fast-reader has role reader; bikeshare.v1.RegistryService/CreateExperiment needs trainer or higher",
    );
    await failure(
      clientAs("trainer").setAlias({ modelName: "m", alias: "production", version: "1", reason: "x" }),
      Code.PermissionDenied,
    );
  });

  it("maps registry errors to codes, naming the field of a bad argument", async () => {
    const trainer = clientAs("trainer");
    const { experiment } = await trainer.createExperiment({ name: "demand", tags: { team: "ml" } });
    expect(experiment).toMatchObject({ name: "demand", tags: { team: "ml" } });
    await failure(trainer.createExperiment({ name: "demand" }), Code.AlreadyExists);
    const empty = violationsOf(await trainer.createExperiment({ name: "" }).catch((e: unknown) => e));
    expect(empty).toMatchObject({ code: Code.InvalidArgument, fields: ["name"] });
    expect(
      (await failure(trainer.getExperiment({ experiment: "nope" }), Code.NotFound)).rawMessage,
    ).toContain('experiment "nope"');

    const { run } = await trainer.createRun({ experiment: "demand" });
    const runId = run?.id ?? "";
    await trainer.logRunData({ runId, params: { max_depth: "6" } });
    const changed = violationsOf(
      await trainer.logRunData({ runId, params: { max_depth: "7" } }).catch((e: unknown) => e),
    );
    expect(changed).toMatchObject({ code: Code.InvalidArgument, fields: ["params.max_depth"] });
    await trainer.endRun({ runId, status: RunStatus.FINISHED });
    await failure(trainer.logRunData({ runId, tags: { a: "b" } }), Code.FailedPrecondition);
  });

  it("streams an artifact in and back out unchanged, registers it as a version, and audits alias moves by actor", async () => {
    const trainer = clientAs("trainer");
    const { run } = await trainer.createRun({ experiment: "demand", name: "with-artifact" });
    const runId = run?.id ?? "";
    const bytes = randomBytes(150_000);
    async function* upload() {
      for (let at = 0; at < bytes.length; at += 40_000) {
        yield {
          ...(at === 0 ? { runId, path: "model.onnx" } : {}),
          chunk: bytes.subarray(at, at + 40_000),
        };
      }
    }
    const { artifact } = await trainer.uploadArtifact(upload());
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    expect(artifact).toMatchObject({ path: "model.onnx", sizeBytes: 150_000n, sha256 });

    const chunks: Uint8Array[] = [];
    for await (const res of clientAs("reader").downloadArtifact({ runId, path: "model.onnx" })) {
      chunks.push(res.chunk);
    }
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    const drain = async () => {
      for await (const _ of clientAs("reader").downloadArtifact({ runId, path: "nope.bin" })) {
        // the first message never comes
      }
    };
    await failure(drain(), Code.NotFound);

    await trainer.endRun({ runId, status: RunStatus.FINISHED });
    const { version } = await trainer.createModelVersion({ modelName: "demand-model", runId });
    expect(version).toMatchObject({ modelName: "demand-model", version: "1", runId });

    const admin = clientAs("admin");
    const { change } = await admin.setAlias({
      modelName: "demand-model",
      alias: "production",
      version: "1",
      reason: "first",
      force: true,
    });
    expect(change).toMatchObject({
      alias: "production",
      toVersion: "1",
      actor: "fast-admin",
      reason: "first",
    });
    const reader = clientAs("reader");
    expect(
      (await reader.getModelVersion({ modelName: "demand-model", versionOrAlias: "production" })).version
        ?.version,
    ).toBe("1");
    const noStaging = await failure(
      reader.getModelVersion({ modelName: "demand-model", versionOrAlias: "staging" }),
      Code.NotFound,
    );
    expect(noStaging.rawMessage).toBe('model "demand-model" has no version with alias "staging"');
    const { changes } = await reader.listAliasHistory({ modelName: "demand-model" });
    expect(changes.map((c) => [c.alias, c.toVersion, c.actor])).toEqual([["production", "1", "fast-admin"]]);
  });
});
