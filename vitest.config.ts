import { configDefaults, defineConfig } from "vitest/config";

/**
 * The fast tier: pure unit tests of core/ and service handlers called through connect's in-memory
 * router transport over an in-memory DuckDB (no server, no sockets, no child processes). Everything
 * else starts real servers, workers, Redis, Prometheus or Airflow.
 */
const FAST = ["tests/core/**/*.test.ts", "tests/fast/**/*.test.ts"];

export default defineConfig({
  test: {
    // Integration tests start real servers and train real models; 2 cores are shared.
    testTimeout: 120_000,
    hookTimeout: 300_000,
    fileParallelism: false,
    // `vitest run` runs both projects, so every file exactly once; `--project fast` runs the fast tier alone.
    projects: [
      { extends: true, test: { name: "fast", include: FAST } },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["tests/**/*.test.ts"],
          exclude: [...configDefaults.exclude, ...FAST],
        },
      },
    ],
  },
});
