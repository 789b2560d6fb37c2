import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { projectRoot } from "../services/config.js";

/**
 * A generated section of docs/benchmarks.md between two HTML comments, so that each benchmark can
 * rewrite its own figures (bench/run.ts rewrites the rest of the file and keeps these sections).
 */
export function docSection(name: string) {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const path = join(projectRoot(), "docs/benchmarks.md");
  return {
    start,
    end,
    /** The section as the last run wrote it, or "". */
    async current(): Promise<string> {
      const doc = await readFile(path, "utf8").catch(() => "");
      const from = doc.indexOf(start);
      const to = doc.indexOf(end);
      return from >= 0 && to > from ? `${doc.slice(from, to + end.length)}\n` : "";
    },
    /** Puts the section into the file, replacing an earlier one. */
    async write(section: string): Promise<void> {
      const doc = await readFile(path, "utf8").catch(() => "# Benchmarks\n");
      const from = doc.indexOf(start);
      const to = doc.indexOf(end);
      const next =
        from >= 0 && to > from
          ? `${doc.slice(0, from)}${section.trimEnd()}${doc.slice(to + end.length)}`
          : `${doc.trimEnd()}\n\n${section}`;
      await writeFile(path, next);
    },
    /**
     * When the module at `moduleUrl` is the script node runs (`npx tsx bench/<name>.ts`), runs the
     * benchmark and writes its section; exits 1 on failure.
     */
    runIfMain(moduleUrl: string, benchmark: () => Promise<string>): void {
      if (moduleUrl !== `file://${process.argv[1]}`) return;
      benchmark()
        .then((section) => this.write(section))
        .then(
          () => console.log(`wrote the ${name} section of docs/benchmarks.md`),
          (error: unknown) => {
            console.error(error);
            process.exit(1);
          },
        );
    },
  };
}
