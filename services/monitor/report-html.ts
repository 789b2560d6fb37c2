import type { DriftHistogram } from "../../core/drift/index.js";
import type { DriftReport } from "./drift-reports.js";

const esc = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
const num = (x: number) =>
  Math.abs(x) >= 1000 || Math.abs(x) < 0.001 ? x.toExponential(2) : x.toPrecision(3);

/** Reference vs current proportions as grouped bars: an inline SVG, so the page needs no script or CDN. */
function chart(name: string, h: DriftHistogram): string {
  const labels =
    h.kind === "numeric" ? h.reference.map((_, i) => num(h.edges[i] as number)) : h.categories.map(num);
  const n = h.reference.length;
  const width = 560;
  const height = 180;
  const top = 10;
  const bottom = 30;
  const left = 40;
  const max = Math.max(1e-9, ...h.reference, ...h.current);
  const slot = (width - left) / Math.max(1, n);
  const bar = Math.max(1, slot / 2 - 1);
  const y = (p: number) => top + (height - top - bottom) * (1 - p / max);
  const bars = h.reference
    .map((p, i) => {
      const c = h.current[i] as number;
      const x = left + i * slot;
      return (
        `<rect class="ref" x="${x.toFixed(1)}" y="${y(p).toFixed(1)}" width="${bar.toFixed(1)}" height="${(height - bottom - y(p)).toFixed(1)}"><title>reference ${labels[i]}: ${(p * 100).toFixed(1)}%</title></rect>` +
        `<rect class="cur" x="${(x + bar + 1).toFixed(1)}" y="${y(c).toFixed(1)}" width="${bar.toFixed(1)}" height="${(height - bottom - y(c)).toFixed(1)}"><title>current ${labels[i]}: ${(c * 100).toFixed(1)}%</title></rect>`
      );
    })
    .join("");
  const step = Math.max(1, Math.ceil(n / 8));
  const ticks = labels
    .map((l, i) =>
      i % step === 0 ? `<text x="${(left + i * slot).toFixed(1)}" y="${height - 12}">${esc(l)}</text>` : "",
    )
    .join("");
  return `<svg class="chart" data-feature="${esc(name)}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${esc(name)}: reference vs current">
<line x1="${left}" y1="${height - bottom}" x2="${width}" y2="${height - bottom}" stroke="#999"/>
<text x="2" y="${top + 8}">${(max * 100).toFixed(0)}%</text>${bars}${ticks}</svg>`;
}

export function renderDriftReport(report: DriftReport): string {
  const window = (ms: number | undefined) =>
    ms === undefined ? "…" : new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  const rows = [...report.dataset.features, report.prediction]
    .map((f) => {
      const h = report.histograms[f.feature];
      return `<section class="feature${f.drifted ? " drifted" : ""}">
<h2>${esc(f.feature)} <span class="badge">${f.drifted ? "drift" : "no drift"}</span></h2>
<p>${esc(f.test)} ${f.test === "wasserstein" || f.test === "jensenshannon" ? "distance" : "p-value"} ${num(f.statistic)} (threshold ${num(f.threshold)}), PSI ${num(f.psi)}; ${f.rows.reference} reference and ${f.rows.current} current values</p>
${h ? chart(f.feature, h) : ""}
</section>`;
    })
    .join("\n");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Drift report ${esc(report.id)}</title>
<style>body{font:14px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}
.chart text{font-size:10px;fill:#555}.ref{fill:#4a78b5}.cur{fill:#e08a2c}.badge{font-size:70%;padding:0 .4em;border-radius:3px;background:#ddd}
.drifted .badge{background:#c0392b;color:#fff}section{border-top:1px solid #ddd}.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em}.legend .ref{background:#4a78b5}.legend .cur{background:#e08a2c}</style></head>
<body><h1>Drift report</h1>
<p>Model version ${esc(report.modelVersion)}; current window ${window(report.window.from)} – ${window(report.window.until)} UTC;
${report.referenceRows} reference rows (training sample), ${report.currentRows} current rows (logged predictions).</p>
<p><strong>${report.dataset.datasetDrift ? "Dataset drift" : "No dataset drift"}</strong>: ${(report.dataset.driftedShare * 100).toFixed(0)}% of features drifted.
Prediction drift: ${report.prediction.drifted ? "yes" : "no"}.${report.skipped.length > 0 ? ` Not compared (no values on one side): ${esc(report.skipped.join(", "))}.` : ""}</p>
<p class="legend"><span class="ref"></span>reference <span class="cur"></span>current</p>
${rows}
</body></html>`;
}
