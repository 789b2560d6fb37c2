import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../services/config.js";

describe("configuration from the environment", () => {
  it("uses defaults that work from a fresh clone", () => {
    const config = configFromEnv({});
    expect(config).toMatchObject({
      port: 8080,
      host: "127.0.0.1",
      maxBatchSize: 10_000,
      ortThreads: 1,
      rmseFactor: 1.5,
      autoRetrain: true,
    });
    expect(config.dbPath).toMatch(/data\/runtime\/bikeshare\.duckdb$/);
  });

  it.each([
    ["PORT", "abc", "PORT must be an integer in 0..65535"],
    ["PORT", "70000", "PORT must be an integer in 0..65535"],
    ["BIKESHARE_MAX_BATCH", "2.5", "BIKESHARE_MAX_BATCH must be an integer"],
    ["BIKESHARE_RMSE_FACTOR", "0.5", "BIKESHARE_RMSE_FACTOR must be a number in [1, 100]"],
    ["BIKESHARE_RETRAIN_COOLDOWN_DAYS", "soon", "BIKESHARE_RETRAIN_COOLDOWN_DAYS must be a number"],
  ])("rejects %s=%s with an error naming the variable", (name, value, message) => {
    expect(() => configFromEnv({ [name]: value })).toThrow(message);
  });
});
