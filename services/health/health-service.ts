import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";

export { Health };

/** What the health statuses follow: the served model (a `LiveModel`). */
export interface ModelReadiness {
  readonly current: unknown;
  onChange(listener: () => void): () => void;
}

export interface HealthService {
  impl: ServiceImpl<typeof Health>;
  /** Every status becomes NOT_SERVING and every Watch stream ends: call it when the drain starts. */
  close(): void;
}

/**
 * `grpc.health.v1.Health` (https://grpc.io/docs/guides/health-checking/), for Kubernetes `grpc:` probes and
 * grpc-health-probe. `""` (the whole server) and PredictService are SERVING while a model is loaded, as
 * /readyz answers 200; the other services this process serves (`alwaysServing`) are SERVING until
 * shutdown. A name this process does not serve is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch,
 * which the protocol keeps open in case it becomes known.
 */
export function createHealthService(
  model: ModelReadiness,
  alwaysServing: readonly DescService[],
): HealthService {
  const followsModel = new Set(["", PredictService.typeName]);
  const others = new Set(alwaysServing.map((s) => s.typeName));
  let closed = false;
  const statusOf = (service: string): Status | undefined => {
    if (followsModel.has(service)) return !closed && model.current ? Status.SERVING : Status.NOT_SERVING;
    if (others.has(service)) return closed ? Status.NOT_SERVING : Status.SERVING;
    return undefined;
  };
  const wakeups = new Set<() => void>();
  const wakeAll = () => {
    for (const wake of [...wakeups]) wake();
  };
  const stopFollowing = model.onChange(wakeAll);

  const impl: ServiceImpl<typeof Health> = {
    check(req) {
      const status = statusOf(req.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service ${JSON.stringify(req.service.slice(0, 200))}`, Code.NotFound);
      }
      return { status };
    },
    async *watch(req, ctx) {
      let last: Status | undefined;
      for (;;) {
        const now = statusOf(req.service) ?? Status.SERVICE_UNKNOWN;
        if (now !== last) {
          last = now;
          yield { status: now };
        }
        if (closed || ctx.signal.aborted) return;
        await new Promise<void>((resolve) => {
          const wake = () => {
            wakeups.delete(wake);
            ctx.signal.removeEventListener("abort", wake);
            resolve();
          };
          wakeups.add(wake);
          ctx.signal.addEventListener("abort", wake);
        });
      }
    },
    list() {
      const statuses: Record<string, { status: Status }> = {};
      for (const service of [...followsModel, ...others])
        statuses[service] = { status: statusOf(service) as Status };
      return { statuses };
    },
  };
  return {
    impl,
    close() {
      closed = true;
      stopFollowing();
      wakeAll();
    },
  };
}
