import { expect, it } from "vitest";
import { BikeshareError } from "../../core/errors.js";
import { PoolGate } from "../../services/predict/serving-model.js";

it("runs `limit` at once, queues `queue` more in order, and refuses the rest with resource_exhausted", async () => {
  const gate = new PoolGate(1, 2, "explanations");
  const started: number[] = [];
  const finish: (() => void)[] = [];
  const job = (i: number) =>
    gate.run(
      () =>
        new Promise<number>((resolve) => {
          started.push(i);
          finish[i] = () => resolve(i);
        }),
    );
  const running = [job(0), job(1), job(2)];
  const refused = await job(3).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(BikeshareError);
  expect((refused as BikeshareError).code).toBe("resource_exhausted");
  expect((refused as Error).message).toContain("too many explanations at once");
  await new Promise((resolve) => setImmediate(resolve));
  expect(started).toEqual([0]);
  finish[0]?.();
  await running[0];
  await new Promise((resolve) => setImmediate(resolve));
  expect(started).toEqual([0, 1]);
  finish[1]?.();
  await running[1];
  await new Promise((resolve) => setImmediate(resolve));
  finish[2]?.();
  expect(await Promise.all(running)).toEqual([0, 1, 2]);
  // Free again: the next one starts at once.
  const again = job(4);
  await new Promise((resolve) => setImmediate(resolve));
  expect(started).toEqual([0, 1, 2, 4]);
  finish[4]?.();
  expect(await again).toBe(4);
});
