import { tmpdir } from "node:os";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BikeshareError, type ErrorCode } from "../../core/errors.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { TaskCancelled } from "../../pipelines/jobs/cancelled.js";
import type { JobQueue } from "../../pipelines/jobs/queue.js";
import { InputError } from "../../pipelines/scoring/format.js";
import {
  connectCode,
  ERROR_CODES,
  errorInterceptor,
  httpStatus,
  INTERNAL_MESSAGE,
  invalidArgument,
  toConnectError,
} from "../../services/errors.js";
import type { JobEvents } from "../../services/jobs/events.js";
import { checkScoringPath } from "../../services/jobs/scoring-paths.js";
import type { JobStore } from "../../services/jobs/store.js";
import { NotEnoughData } from "../../services/monitor/drift-reports.js";
import { createMonitorService, type MonitorDeps } from "../../services/monitor/monitor-service.js";
import { createLogger } from "../../services/observability/log.js";
import { RegistryError } from "../../services/registry/errors.js";
import type { Registry } from "../../services/registry/registry.js";
import { createRegistryService } from "../../services/registry/registry-service.js";
import { StoreUnavailableError, StoreUnwritableError } from "../../services/storage/database.js";
import { createTrainService } from "../../services/train/train-service.js";
import { violationsOf } from "../helpers/rpc-errors.js";

// The one mapping from domain errors to what a client sees (services/errors.ts), checked as a table and
// end to end through connect's in-memory transport with handlers that throw domain errors.

/** What each code must become: the Connect/gRPC code, and the HTTP status REST and Connect answer with. */
const EXPECTED: Record<ErrorCode, [Code, number]> = {
  cancelled: [Code.Canceled, 499],
  invalid_argument: [Code.InvalidArgument, 400],
  not_found: [Code.NotFound, 404],
  already_exists: [Code.AlreadyExists, 409],
  permission_denied: [Code.PermissionDenied, 403],
  unauthenticated: [Code.Unauthenticated, 401],
  resource_exhausted: [Code.ResourceExhausted, 429],
  failed_precondition: [Code.FailedPrecondition, 400],
  unavailable: [Code.Unavailable, 503],
  data_loss: [Code.DataLoss, 500],
  internal: [Code.Internal, 500],
};

const SECRET = "open /var/lib/bikeshare/secret.duckdb: permission denied";

function clientWith(interceptors: Interceptor[], lines: string[] = []) {
  const log = createLogger({}, "error", (line) => lines.push(line));
  const transport = createRouterTransport(
    (router) => {
      router.service(PredictService, {
        async predict() {
          throw invalidArgument([
            { field: "conditions.hr", type: "range", description: "must be an integer in 0..23, got 25" },
            { field: "conditions.temp", type: "missing", description: "is required" },
          ]);
        },
        async predictBatch() {
          throw new Error(SECRET);
        },
        async getModelInfo() {
          throw new ConnectError("left as it is", Code.Unimplemented);
        },
      });
      router.service(TrainService, {
        async getJob() {
          throw new BikeshareError("not_found", "no training job j-1");
        },
        async *watchJob() {
          yield { jobId: "j-1", message: "queued" };
          throw new BikeshareError("failed_precondition", "job j-1 was lost", {
            violations: [{ field: "job_id", description: "names a lost job" }],
          });
        },
      });
    },
    { router: { interceptors: [errorInterceptor(log), ...interceptors] } },
  );
  return { predict: createClient(PredictService, transport), train: createClient(TrainService, transport) };
}

describe("the error mapping", () => {
  it("maps every code to its Connect code and HTTP status", () => {
    expect([...ERROR_CODES].sort()).toEqual(Object.keys(EXPECTED).sort());
    for (const code of ERROR_CODES) {
      const [connect, status] = EXPECTED[code];
      expect([code, Code[connectCode(code)], httpStatus(code)]).toEqual([code, Code[connect], status]);
      expect(Code[toConnectError(new BikeshareError(code, "m")).code]).toBe(Code[connect]);
    }
  });

  it("gives each domain error class the code a client can act on", () => {
    const cases: [Error, ErrorCode][] = [
      [new TaskCancelled(), "cancelled"],
      [new InputError("data.csv is empty"), "invalid_argument"],
      [new NotEnoughData("the window holds 3 logged predictions"), "failed_precondition"],
      [new StoreUnwritableError("/data/bikeshare.duckdb", new Error("ENOSPC")), "resource_exhausted"],
      [new StoreUnavailableError("postgres://db/bikeshare", new Error("ECONNREFUSED")), "unavailable"],
      [new RegistryError("not_found", "run r1 does not exist", "run_id"), "not_found"],
    ];
    for (const [error, code] of cases) {
      expect(error).toBeInstanceOf(BikeshareError);
      expect([error.name, toConnectError(error).code]).toEqual([error.name, connectCode(code)]);
    }
  });

  it("names the field of a registry input error, but not of a missing run", () => {
    const bad = violationsOf(
      toConnectError(new RegistryError("invalid_argument", "name is required", "name")),
    );
    expect(bad).toEqual({ code: Code.InvalidArgument, fields: ["name"], descriptions: ["name is required"] });
    expect(
      violationsOf(toConnectError(new RegistryError("not_found", "no run r1", "run_id"))).fields,
    ).toEqual([]);
  });

  it("delivers a BikeshareError thrown in a handler with its code, message and field violations", async () => {
    const { predict } = clientWith([]);
    const error = await predict.predict({}).catch((e: unknown) => e);
    const bad = violationsOf(error);
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(["conditions.hr", "conditions.temp"]);
    expect(bad.descriptions).toEqual(["must be an integer in 0..23, got 25", "is required"]);
    expect((error as ConnectError).rawMessage).toBe(
      "invalid argument: conditions.hr must be an integer in 0..23, got 25; conditions.temp is required",
    );
  });

  it("maps an error that ends a response stream, after the messages sent before it", async () => {
    const { train } = clientWith([]);
    expect((await train.getJob({ jobId: "j-1" }).catch((e: unknown) => e)) as ConnectError).toMatchObject({
      code: Code.NotFound,
      rawMessage: "no training job j-1",
    });
    const received: string[] = [];
    const error = await (async () => {
      for await (const event of train.watchJob({ jobId: "j-1" })) received.push(event.message);
    })().catch((e: unknown) => e);
    expect(received).toEqual(["queued"]);
    expect(violationsOf(error)).toEqual({
      code: Code.FailedPrecondition,
      fields: ["job_id"],
      descriptions: ["names a lost job"],
    });
  });

  it("maps what an inner interceptor (auth) throws", async () => {
    const denied: Interceptor = () => async () => {
      throw new BikeshareError("permission_denied", "reader has role reader; Predict needs trainer");
    };
    const error = await clientWith([denied])
      .predict.getModelInfo({})
      .catch((e: unknown) => e);
    expect((error as ConnectError).code).toBe(Code.PermissionDenied);
  });

  it("leaves a ConnectError as it is", async () => {
    const error = await clientWith([])
      .predict.getModelInfo({})
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: Code.Unimplemented, rawMessage: "left as it is" });
  });

  it("turns any other error into internal, without its message, and logs it", async () => {
    const lines: string[] = [];
    const error = await clientWith([], lines)
      .predict.predictBatch({})
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Internal);
    expect((error as ConnectError).rawMessage).toBe(INTERNAL_MESSAGE);
    expect(JSON.stringify((error as ConnectError).details)).not.toContain("secret");
    expect(lines.join("\n")).toContain(SECRET);
    expect(lines.join("\n")).toContain("bikeshare.v1.PredictService/PredictBatch");
  });
});

/** Stands in for a store that validation must not reach: any use of it fails the test. */
function untouched<T extends object>(what: string): T {
  return new Proxy({} as T, {
    get: (_target, name) => {
      throw new Error(`${what}.${String(name)} used before the request was validated`);
    },
  });
}

describe("client input that once became internal", () => {
  it("a scoring file name longer than the file system allows is a bad field, not a server fault", async () => {
    const long = `${"a".repeat(300)}.csv`;
    for (const role of ["input", "output"] as const) {
      const checked = await checkScoringPath(tmpdir(), role, long, [".csv"], role);
      expect(checked.error).toMatchObject({
        field: role,
        description: "is longer than the file system allows",
      });
    }
  });

  it("a timestamp beyond google.protobuf.Timestamp's range in ReportActuals or a window is a bad field", async () => {
    const far = { seconds: 10n ** 15n, nanos: 0 };
    const transport = createRouterTransport(
      (router) => router.service(MonitorService, createMonitorService(untouched<MonitorDeps>("MonitorDeps"))),
      { router: { interceptors: [errorInterceptor()] } },
    );
    const monitor = createClient(MonitorService, transport);
    const actuals = await monitor
      .reportActuals({ actuals: [{ hour: far, cnt: 3 }] })
      .catch((e: unknown) => e);
    expect(violationsOf(actuals)).toMatchObject({ code: Code.InvalidArgument, fields: ["actuals[0].hour"] });
    const alerts = await monitor.listAlerts({ window: { from: far } }).catch((e: unknown) => e);
    expect(violationsOf(alerts)).toMatchObject({ code: Code.InvalidArgument, fields: ["window.from"] });
  });

  it("a Timestamp out of range in StartTraining or LogRunData is a bad field", async () => {
    const far = { seconds: -(10n ** 15n), nanos: 0 };
    const transport = createRouterTransport(
      (router) => {
        router.service(
          TrainService,
          createTrainService({
            jobs: untouched<JobStore>("JobStore"),
            queue: untouched<JobQueue>("JobQueue"),
            events: untouched<JobEvents>("JobEvents"),
            defaultExperiment: "x",
          }),
        );
        router.service(RegistryService, createRegistryService(untouched<Registry>("Registry")));
      },
      { router: { interceptors: [errorInterceptor()] } },
    );
    const train = createClient(TrainService, transport);
    const training = await train.startTraining({ dataFrom: far, dataUntil: far }).catch((e: unknown) => e);
    expect(violationsOf(training)).toMatchObject({
      code: Code.InvalidArgument,
      fields: ["data_from", "data_until"],
    });
    const registry = createClient(RegistryService, transport);
    const logged = await registry
      .logRunData({ runId: "r1", metrics: [{ key: "rmse", value: 1, time: far }] })
      .catch((e: unknown) => e);
    expect(violationsOf(logged)).toMatchObject({ code: Code.InvalidArgument, fields: ["metrics[0].time"] });
  });
});
