import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";

/** Names the browser has under Debian (what scripts/setup.sh installs), Ubuntu and Google's packages. */
export const BROWSER_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The Chromium that drives the browser tests: CHROMIUM_PATH when set, else the first of
 * BROWSER_NAMES on PATH, found the way `command -v` finds it. Throws, naming what was tried:
 * a missing browser is a broken test machine, not a reason to skip.
 */
export function findBrowser(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.CHROMIUM_PATH;
  if (configured) {
    if (executable(configured)) return configured;
    throw new Error(`CHROMIUM_PATH is ${configured}, which is not an executable file`);
  }
  const dirs = (env.PATH ?? "").split(delimiter).filter((d) => d !== "");
  for (const name of BROWSER_NAMES) {
    for (const dir of dirs) {
      const candidate = join(dir, name);
      if (executable(candidate)) return candidate;
    }
  }
  throw new Error(
    `no Chromium found: none of ${BROWSER_NAMES.join(", ")} is on PATH (${dirs.join(delimiter) || "empty"}) ` +
      "and CHROMIUM_PATH is not set; install it with `bash scripts/setup.sh` (Debian package chromium) " +
      "or set CHROMIUM_PATH to the browser's executable",
  );
}
