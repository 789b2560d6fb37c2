import { BikeshareError } from "../../core/errors.js";
import type { Logger } from "../observability/log.js";
import type { Metrics } from "../observability/metrics.js";
import type { Registry } from "../registry/registry.js";
import type { ModelSlot } from "./predict-service.js";
import { ServingModel } from "./serving-model.js";

/**
 * The model behind an alias (normally `production`), swapped in place when the alias moves:
 * the new version is loaded completely before it replaces the old one, so no request fails
 * or waits during the swap.
 *
 * Moves made in this process arrive through Registry.onAliasChange. Moves made by another process on a
 * shared database are found by `follow` (a poll, and `reload` called on a notification). While the
 * registry cannot be read or the new version not loaded, the current model keeps serving and the state
 * is stale: bikeshare_state_stale is 1 and one line is logged, and another when it has caught up.
 */
export class LiveModel implements ModelSlot {
  current: ServingModel | undefined;
  private loading: Promise<void> = Promise.resolve();
  /** The reload queued behind the running one, until it starts. */
  private waiting: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  private poll: NodeJS.Timeout | undefined;
  private stale = false;
  private readonly changed = new Set<() => void>();

  constructor(
    private readonly registry: Registry,
    private readonly modelName: string,
    private readonly alias: string,
    private readonly ortThreads: number,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Loads the alias's version now and follows every later move of it. */
  async start(): Promise<void> {
    this.unsubscribe = this.registry.onAliasChange((change) => {
      if (change.modelName === this.modelName && change.alias === this.alias) void this.reload();
    });
    await this.reload();
  }

  /** Calls `listener` whenever `current` changes (a version swapped in, or the model stopped); returns its removal. */
  onChange(listener: () => void): () => void {
    this.changed.add(listener);
    return () => this.changed.delete(listener);
  }

  /** Reads the alias every `pollMs` as well, for moves made by other processes on a shared database. */
  follow(pollMs: number): void {
    clearInterval(this.poll);
    this.poll = setInterval(() => void this.reload(), pollMs).unref();
  }

  /**
   * Serialised, so that quick successive moves end on the last one. A call made while another waits for
   * its turn joins that one, which has not read the alias yet: a burst of reloads (POST /model/reload,
   * notifications, the poll) costs at most the running read and one more, never a queue of them.
   */
  reload(): Promise<void> {
    if (this.waiting) return this.waiting;
    const next = this.loading
      .then(() => {
        this.waiting = undefined;
        return this.swap();
      })
      .then(
        () => this.setStale(false),
        (error: unknown) => this.setStale(true, error),
      );
    this.waiting = next;
    this.loading = next;
    return next;
  }

  /**
   * Reads the alias now (POST /model/reload) and fails when that read or load failed, while the
   * previous version keeps serving.
   */
  async reloadNow(): Promise<void> {
    await this.reload();
    if (this.stale) {
      throw new BikeshareError(
        "unavailable",
        `could not load the model behind the ${this.alias} alias; still serving version ${this.current?.version ?? "none"} (see the server log)`,
      );
    }
  }

  private setStale(stale: boolean, error?: unknown): void {
    if (stale === this.stale) return;
    this.stale = stale;
    this.metrics.stateStale.set(stale ? 1 : 0);
    if (stale) {
      this.log.error("could not load the model behind the alias; still serving the previous one", {
        alias: this.alias,
        version: this.current?.version,
        error,
      });
    } else {
      this.log.info("the model behind the alias is read again: caught up", {
        alias: this.alias,
        version: this.current?.version,
      });
    }
  }

  private async swap(): Promise<void> {
    const target = await this.registry.getModelVersion(this.modelName, this.alias);
    if (!target || target.version === this.current?.version) return;
    const next = await ServingModel.load(this.registry, target, this.ortThreads);
    if (next.compiledDeclined) {
      this.log.warn("the compiled evaluator cannot run this model: every request goes to ONNX Runtime", {
        model: next.name,
        version: next.version,
        reason: next.compiledDeclined,
      });
    }
    const previous = this.current;
    this.current = next;
    for (const listener of this.changed) listener();
    if (previous) {
      const labels = { model: previous.name, version: previous.version, alias: this.alias };
      this.metrics.modelInfo.remove(labels);
      this.metrics.modelTestRmse.remove(labels);
    }
    const labels = { model: next.name, version: next.version, alias: this.alias };
    this.metrics.modelInfo.set(labels, 1);
    const testRmse = next.card.metrics.test_rmse;
    if (testRmse !== undefined) this.metrics.modelTestRmse.set(labels, testRmse);
    this.log.info("serving model version", {
      model: next.name,
      version: next.version,
      previous: previous?.version,
      test_rmse: next.card.metrics.test_rmse,
    });
    await previous?.retire();
  }

  async stop(): Promise<void> {
    clearInterval(this.poll);
    this.unsubscribe?.();
    await this.loading;
    await this.current?.retire();
    this.current = undefined;
    for (const listener of this.changed) listener();
  }
}
