// Bundles the web console (docs/ui.md) into dist/ui: one hashed script and stylesheet and an index that
// names them, so the server can let browsers keep the bundle forever and check only the index.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "dist", "ui");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(here, "src", "main.tsx"), join(here, "styles.css")],
  outdir: out,
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  metafile: true,
  logLevel: "warning",
});
const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const script = outputs.find((n) => n.startsWith("main-") && n.endsWith(".js"));
const style = outputs.find((n) => n.startsWith("styles-") && n.endsWith(".css"));
if (!script || !style) throw new Error(`esbuild wrote no main script or stylesheet: ${outputs.join(", ")}`);
const html = (await readFile(join(here, "index.html"), "utf8"))
  .replace("%SCRIPT%", `./${script}`)
  .replace("%STYLE%", `./${style}`);
await writeFile(join(out, "index.html"), html);
console.log(`web console: ${out} (${script}, ${style})`);
