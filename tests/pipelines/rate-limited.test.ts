/**
 * The one rate limiter for log lines (pipelines/rate-limited.ts), as the front server and the job
 * queue use it: the first event at once, then one line per interval counting what it left out.
 * Fake timers make the intervals exact, so nothing here depends on the machine's speed.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type QueueComponent, rateLimitedQueueErrors } from "../../pipelines/jobs/bullmq.js";
import { rateLimited } from "../../pipelines/rate-limited.js";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("rateLimited", () => {
  it("writes the first event at once, the rest of its interval when the interval ends, and nothing when quiet", () => {
    const lines: [number, string][] = [];
    const event = rateLimited<string>(10_000, (count, latest) => lines.push([count, latest]));
    event("a");
    event("b");
    event("c");
    expect(lines).toEqual([[1, "a"]]);
    vi.advanceTimersByTime(9_999);
    expect(lines).toEqual([[1, "a"]]);
    vi.advanceTimersByTime(1);
    expect(lines).toEqual([
      [1, "a"],
      [2, "c"],
    ]);
    // The flush opened a new interval: an event inside it waits for its end.
    event("d");
    expect(lines).toHaveLength(2);
    vi.advanceTimersByTime(10_000);
    expect(lines.at(-1)).toEqual([1, "d"]);
    // A quiet interval closes the run: the next event is written at once again.
    vi.advanceTimersByTime(10_000);
    expect(lines).toHaveLength(3);
    event("e");
    expect(lines.at(-1)).toEqual([1, "e"]);
  });
});

describe("rateLimitedQueueErrors", () => {
  it("counts every error, logs one line per component and interval, and logs the left-out ones when it ends", () => {
    const counted: QueueComponent[] = [];
    const logged: [QueueComponent, string, number][] = [];
    const onError = rateLimitedQueueErrors(
      (component) => counted.push(component),
      (component, error, suppressed) => logged.push([component, error.message, suppressed]),
    );
    onError("queue", new Error("ECONNREFUSED 1"));
    onError("queue", new Error("ECONNREFUSED 2"));
    onError("worker", new Error("Connection is closed"));
    onError("queue", new Error("ECONNREFUSED 3"));
    expect(counted).toEqual(["queue", "queue", "worker", "queue"]);
    expect(logged).toEqual([
      ["queue", "ECONNREFUSED 1", 0],
      ["worker", "Connection is closed", 0],
    ]);
    // Redis came back: no error follows, and the two the first line left out are still reported.
    vi.advanceTimersByTime(10_000);
    expect(logged.slice(2)).toEqual([["queue", "ECONNREFUSED 3", 1]]);
    vi.advanceTimersByTime(60_000);
    expect(logged).toHaveLength(3);
  });
});
