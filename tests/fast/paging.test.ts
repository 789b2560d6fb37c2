import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BikeshareError } from "../../core/errors.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { InProcessQueue } from "../../pipelines/jobs/queue.js";
import { errorInterceptor } from "../../services/errors.js";
import { JobEvents } from "../../services/jobs/events.js";
import { JobStore } from "../../services/jobs/store.js";
import { decodePageToken, encodePageToken, pageOf, pageResult, queryKey } from "../../services/paging.js";
import { Registry, RegistryError } from "../../services/registry/registry.js";
import { Database } from "../../services/storage/database.js";
import { createTrainService } from "../../services/train/train-service.js";
import { violationsOf } from "../helpers/rpc-errors.js";

// Every List RPC pages with an opaque token bound to its query (services/paging.ts).

function rejection(work: () => unknown): BikeshareError {
  try {
    work();
  } catch (error) {
    expect(error).toBeInstanceOf(BikeshareError);
    return error as BikeshareError;
  }
  return expect.fail("expected the token to be refused");
}

describe("page tokens", () => {
  const items = Array.from({ length: 7 }, (_, i) => `item-${i}`);
  const list = (pageSize: number, token: string, query: unknown) => {
    const page = pageOf(pageSize, token, 100, query);
    return pageResult(items.slice(page.offset, page.offset + page.limit + 1), page);
  };

  it("pages through every item once, with tokens a client cannot read as offsets", () => {
    const seen: string[] = [];
    const tokens: string[] = [];
    let token = "";
    do {
      const page = list(3, token, { list: "items" });
      seen.push(...page.items);
      token = page.nextPageToken;
      if (token) tokens.push(token);
    } while (token !== "");
    expect(seen).toEqual(items);
    expect(tokens).toHaveLength(2);
    for (const t of tokens) expect(Number.isNaN(Number(t))).toBe(true);
  });

  it("refuses a token from another query, naming page_token", () => {
    const { nextPageToken } = list(3, "", { list: "items", state: "queued" });
    const error = rejection(() => list(3, nextPageToken, { list: "items", state: "failed" }));
    expect(error.code).toBe("invalid_argument");
    expect(error.violations.map((v) => v.field)).toEqual(["page_token"]);
    // The same token on its own query is fine.
    expect(list(3, nextPageToken, { list: "items", state: "queued" }).items).toEqual(items.slice(3, 6));
  });

  it("refuses garbage, an old bare offset and a negative offset, naming page_token", () => {
    const key = queryKey({ list: "items" });
    for (const token of ["garbage", "3", "%%%", encodePageToken(-3, key), encodePageToken(1.5, key)]) {
      const error = rejection(() => decodePageToken(token, key));
      expect([token, error.code, error.violations[0]?.field]).toEqual([
        token,
        "invalid_argument",
        "page_token",
      ]);
    }
    expect(decodePageToken("", key)).toBe(0);
    expect(decodePageToken(encodePageToken(40, key), key)).toBe(40);
  });

  it("refuses a negative page size, naming page_size", () => {
    expect(rejection(() => pageOf(-1, "", 100, {})).violations[0]?.field).toBe("page_size");
  });
});

describe("ListJobs and SearchRuns", () => {
  let dir: string;
  let db: Database;
  let registry: Registry;
  const queue = new InProcessQueue(async () => {});
  let client: ReturnType<typeof createClient<typeof TrainService>>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-fast-paging-"));
    db = await Database.open(":memory:");
    registry = await Registry.open(db, join(dir, "artifacts"));
    const service = createTrainService({
      jobs: await JobStore.open(db),
      queue,
      events: new JobEvents(),
      defaultExperiment: "paging",
    });
    client = createClient(
      TrainService,
      createRouterTransport((router) => router.service(TrainService, service), {
        router: { interceptors: [errorInterceptor()] },
      }),
    );
  });

  afterAll(async () => {
    await queue.close();
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("ListJobs returns each job once over its pages and refuses a token from another state", async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i++) {
      created.push((await client.startTraining({ reason: `job ${i}` })).job?.id ?? "");
    }
    const listed: string[] = [];
    let pageToken = "";
    let firstToken = "";
    do {
      const page = await client.listJobs({ pageSize: 2, pageToken });
      listed.push(...page.jobs.map((j) => j.id));
      pageToken = page.nextPageToken;
      firstToken ||= pageToken;
    } while (pageToken !== "");
    expect([...listed].sort()).toEqual([...created].sort());
    expect(new Set(listed).size).toBe(5);

    const other = await client
      .listJobs({ state: JobState.QUEUED, pageSize: 2, pageToken: firstToken })
      .catch((e: unknown) => e);
    expect(violationsOf(other)).toMatchObject({ code: Code.InvalidArgument, fields: ["page_token"] });
    const garbage = await client.listJobs({ pageToken: "garbage" }).catch((e: unknown) => e);
    expect(violationsOf(garbage)).toMatchObject({ code: Code.InvalidArgument, fields: ["page_token"] });
  });

  it("SearchRuns refuses a token from another filter, as a RegistryError on page_token", async () => {
    await registry.createExperiment("paging");
    for (let i = 0; i < 3; i++) await registry.createRun({ experiment: "paging", name: `run-${i}` });
    const first = await registry.searchRuns({ pageSize: 2 });
    expect(first.nextPageToken).not.toBe("");
    const error = await registry
      .searchRuns({ pageSize: 2, filter: "attributes.status = 'RUNNING'", pageToken: first.nextPageToken })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).violations.map((v) => v.field)).toEqual(["page_token"]);
    const rest = await registry.searchRuns({ pageSize: 2, pageToken: first.nextPageToken });
    expect([...first.runs, ...rest.runs].map((r) => r.name).sort()).toEqual(["run-0", "run-1", "run-2"]);
  });
});
