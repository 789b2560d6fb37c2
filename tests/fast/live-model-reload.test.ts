import { expect, it } from "vitest";
import { createLogger } from "../../services/observability/log.js";
import { Metrics } from "../../services/observability/metrics.js";
import { LiveModel } from "../../services/predict/live-model.js";
import type { Registry } from "../../services/registry/registry.js";

it("a burst of reloads reads the alias at most twice: the running read and one queued behind it", async () => {
  let reads = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  // No version behind the alias: each read is the whole reload, and the first one waits on the gate.
  const registry = {
    async getModelVersion() {
      reads++;
      if (reads === 1) await gate;
      return undefined;
    },
  } as unknown as Registry;
  const live = new LiveModel(
    registry,
    "bike-demand",
    "production",
    1,
    createLogger({}, "error"),
    new Metrics(),
  );
  const first = live.reload();
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(reads).toBe(1);
  const burst = [first, ...Array.from({ length: 50 }, () => live.reload())];
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(reads).toBe(1);
  release();
  await Promise.all(burst);
  expect(reads).toBe(2);
  // Once idle, a reload reads again.
  await live.reload();
  expect(reads).toBe(3);
});
