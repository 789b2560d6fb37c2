import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { findBrowser } from "../helpers/browser.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

/** What page.evaluate callbacks use of the browser's window (this project compiles without the DOM lib). */
type BrowserWindow = { getComputedStyle(el: unknown): Record<string, string> };

let t: TestServer;
let browser: Browser;
let profile: string;

beforeAll(async () => {
  t = await startTestServer();
  profile = await mkdtemp(join(tmpdir(), "bikeshare-chromium-"));
  browser = await chromium.launch({
    executablePath: findBrowser(),
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await rm(profile, { recursive: true, force: true });
});

describe("finding the browser", () => {
  it("takes CHROMIUM_PATH, else the first browser name on PATH, and names what it tried when there is none", async () => {
    const empty = await mkdtemp(join(tmpdir(), "bikeshare-no-browser-"));
    try {
      const bin = await mkdtemp(join(tmpdir(), "bikeshare-fake-bin-"));
      try {
        // A fake chromium-browser on a PATH of its own: found by its Ubuntu name.
        const fake = join(bin, "chromium-browser");
        await writeFile(fake, "#!/bin/sh\n", { mode: 0o755 });
        expect(findBrowser({ PATH: `${empty}:${bin}` })).toBe(fake);
        expect(findBrowser({ PATH: empty, CHROMIUM_PATH: fake })).toBe(fake);
      } finally {
        await rm(bin, { recursive: true, force: true });
      }
      expect(() => findBrowser({ PATH: empty })).toThrow(
        /no Chromium found: none of chromium, chromium-browser, google-chrome, google-chrome-stable is on PATH/,
      );
      expect(() => findBrowser({ PATH: empty, CHROMIUM_PATH: join(empty, "nope") })).toThrow(
        `CHROMIUM_PATH is ${join(empty, "nope")}, which is not an executable file`,
      );
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe("HTML drift report in a real browser", () => {
  it("renders a reference-vs-current chart with visible bars for every feature", async () => {
    const rows = readHourCsvRecords().filter(
      (r) => (r.dteday as string) >= "2012-10-01" && (r.dteday as string) < "2012-10-08",
    );
    const transport = createConnectTransport({ baseUrl: t.baseUrl, httpVersion: "1.1" });
    await createClient(PredictService, transport).predictBatch({
      rows: rows.map((r) => ({
        ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
        hour: timestampFromMs(instantOfLocalHour(dayNumber(r.dteday as string), r.hr as number).getTime()),
      })),
    });
    const monitor = createClient(MonitorService, transport);
    const window = {
      from: timestampFromMs(instantOfLocalHour(dayNumber("2012-10-01"), 0).getTime()),
      to: timestampFromMs(instantOfLocalHour(dayNumber("2012-10-08"), 0).getTime()),
    };
    const { report } = await monitor.getDriftReport(
      { window },
      { headers: { authorization: `Bearer ${t.tokens.reader}` } },
    );

    const page = await browser.newPage();
    const refused: string[] = [];
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) refused.push(m.text());
    });
    const response = await page.goto(`${t.baseUrl}${report?.htmlPath}`);
    expect(response?.status()).toBe(200);
    // The page is served with a Content-Security-Policy: its inline styles must still apply.
    expect(response?.headers()["content-security-policy"]).toContain("default-src 'none'");
    const fill = await page
      .locator("svg.chart rect.ref")
      .first()
      .evaluate((el) => (globalThis as unknown as BrowserWindow).getComputedStyle(el).fill);
    expect(fill).toBe("rgb(74, 120, 181)");
    expect(refused).toEqual([]);
    const charts = page.locator("svg.chart");
    expect(await charts.count()).toBe((report?.features.length ?? 0) + 1);
    // Every chart is laid out with a real size and draws bars of both series.
    for (const chart of await charts.all()) {
      const box = await chart.boundingBox();
      expect(box?.width).toBeGreaterThan(300);
      expect(box?.height).toBeGreaterThan(100);
      expect(await chart.locator("rect.ref").count()).toBeGreaterThan(0);
      expect(await chart.locator("rect.cur").count()).toBeGreaterThan(0);
    }
    const heights = await page
      .locator("rect.cur")
      .evaluateAll((rects) =>
        rects.map((r) => (r as unknown as { getBBox(): { height: number } }).getBBox().height),
      );
    expect(heights.some((h) => h > 5)).toBe(true);
    expect(await page.locator("h1").textContent()).toBe("Drift report");
    await page.screenshot({ path: join(profile, "report.png"), fullPage: true });
    await page.close();
  });
});
