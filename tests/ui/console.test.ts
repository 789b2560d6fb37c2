import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayNumber, instantOfLocalHour } from "../../core/features/index.js";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { MonitorService } from "../../gen/bikeshare/v1/monitor_pb.js";
import { PredictService } from "../../gen/bikeshare/v1/predict_pb.js";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { UI_POLICY } from "../../services/http/ui-static.js";
import { findBrowser } from "../helpers/browser.js";
import { MODEL_FIELDS, readHourCsvRecords } from "../helpers/hour-csv.js";
import { connectClient, startTestServer, type TestServer } from "../helpers/server.js";

/**
 * The web console (docs/ui.md) in a real Chromium against a real server with a trained model: the
 * same build `npm run build` makes, the same services every client calls.
 * Set UI_SCREENSHOTS=docs/ui to refresh the README's screenshots while the test runs.
 */
const SHOTS = process.env.UI_SCREENSHOTS;
const MODEL = "bike-demand";

let t: TestServer;
let browser: Browser;
let profile: string;

beforeAll(async () => {
  // The console is built by `npm run build`; build just that part here, so the test checks this checkout.
  await promisify(execFile)(process.execPath, ["ui/build.mjs"], {
    cwd: join(import.meta.dirname, "..", ".."),
  });
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
  if (SHOTS) await mkdir(SHOTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await rm(profile, { recursive: true, force: true });
});

interface Session {
  context: BrowserContext;
  page: Page;
  /** Console errors, uncaught exceptions and CSP violations the page produced. */
  errors: string[];
}

async function open(hash: string, token?: string): Promise<Session> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${t.baseUrl}/ui/${hash}`);
  if (token) {
    await page.waitForLoadState("networkidle");
    // Entered once, the way a user does; kept in session storage for the tab's later pages.
    await page.getByPlaceholder(/bearer token/).fill(token);
    await page.getByRole("button", { name: "Use token" }).click();
    await page.getByTestId("token-state").waitFor();
    // The first load, before the token, is the no-token view (tested on its own): its refusals are expected.
    errors.length = 0;
  }
  return { context, page, errors };
}

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

/** Pixels a canvas has drawn (alpha above 0): a chart that rendered nothing has none. */
async function drawnPixels(page: Page, figure: string): Promise<number> {
  // A string, as the tests compile without the DOM library; it runs in the page.
  return (await page.evaluate(`(() => {
    const canvas = document.querySelector(${JSON.stringify(`${figure} canvas`)});
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
    return drawn;
  })()`)) as number;
}

/**
 * Presses Tab (or Shift+Tab) until the focused element matches `selector`, as a keyboard user moves,
 * and returns whether the focus is visible there (an outline drawn by :focus-visible).
 */
async function tabTo(page: Page, selector: string, backward = false): Promise<void> {
  for (let i = 0; i < 120; i++) {
    await page.keyboard.press(backward ? "Shift+Tab" : "Tab");
    const state = (await page.evaluate(`(() => {
      const el = document.activeElement;
      if (!el || !el.matches(${JSON.stringify(selector)})) return undefined;
      const style = getComputedStyle(el);
      return { visible: el.matches(":focus-visible"), outline: style.outlineStyle, width: style.outlineWidth };
    })()`)) as { visible: boolean; outline: string; width: string } | undefined;
    if (state) {
      expect(state.visible, selector).toBe(true);
      expect(state.outline, selector).not.toBe("none");
      expect(Number.parseFloat(state.width), selector).toBeGreaterThan(0);
      return;
    }
  }
  throw new Error(`Tab never reached ${selector}`);
}

describe("serving /ui/", () => {
  it("answers the index with a strict CSP and no-cache, hashed bundles as immutable, and 404 for unknown paths", async () => {
    const index = await fetch(`${t.baseUrl}/ui/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(index.headers.get("content-security-policy")).toBe(UI_POLICY);
    expect(UI_POLICY).toContain("script-src 'self'");
    expect(UI_POLICY).not.toContain("unsafe-inline");
    expect(index.headers.get("x-content-type-options")).toBe("nosniff");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    const html = await index.text();
    expect(html).not.toMatch(/<script>|<script [^>]*>[^<]/); // no inline script anywhere
    const script = /src="\.\/(main-[A-Z0-9]{8}\.js)"/.exec(html)?.[1];
    const style = /href="\.\/(styles-[A-Z0-9]{8}\.css)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    expect(style).toBeDefined();

    const js = await fetch(`${t.baseUrl}/ui/${script}`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(js.headers.get("x-content-type-options")).toBe("nosniff");
    expect((await fetch(`${t.baseUrl}/ui/${style}`)).headers.get("content-type")).toBe(
      "text/css; charset=utf-8",
    );

    const again = await fetch(`${t.baseUrl}/ui/`, {
      headers: { "if-none-match": index.headers.get("etag") ?? "" },
    });
    expect(again.status).toBe(304);

    const redirect = await fetch(`${t.baseUrl}/ui`, { redirect: "manual" });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get("location")).toBe("/ui/");

    // Routing is in the hash, so an unknown path is an error, not the index under another name.
    for (const path of [
      "/ui/runs",
      "/ui/nope.js",
      "/ui/..%2F..%2Fpackage.json",
      "/ui/..%2fcli%2fbikeshare.js",
    ]) {
      const res = await fetch(`${t.baseUrl}${path}`);
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type"), path).toBe("text/plain; charset=utf-8");
    }
    // fetch normalises a literal `..` away; a raw request sends it as a hostile client would.
    const raw = await new Promise<{ status: number; type: string | undefined }>((resolve, reject) => {
      const req = request(`${t.baseUrl}/ui/`, { path: "/ui/../../package.json" }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"] });
      });
      req.on("error", reject);
      req.end();
    });
    expect(raw).toEqual({ status: 404, type: "text/plain; charset=utf-8" });
    const post = await fetch(`${t.baseUrl}/ui/`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });
});

describe("the console in Chromium", () => {
  it("without a token shows the served model and says that runs need a reader token", async () => {
    const s = await open("#/runs");
    try {
      await expect
        .poll(() => s.page.getByTestId("serving").textContent())
        .toMatch(/^serving bike-demand v1$/);
      const error = s.page.getByTestId("error");
      await error.waitFor();
      expect(await error.textContent()).toBe(
        "Sign in needed: bikeshare.v1.RegistryService/SearchRuns needs a bearer token with role reader or higher. Enter a token above.",
      );
      expect(await s.page.getByTestId("runs").count()).toBe(0);
      await shot(s.page, "no-token");
      // The refused call is the browser's only complaint: it logs a failed request's status itself.
      expect(s.errors.filter((e) => !/status of 401 \(Unauthorized\)/.test(e))).toEqual([]);
    } finally {
      await s.context.close();
    }
  });

  it("lists the same runs as SearchRuns, in its order, with their metrics, and searches with a filter", async () => {
    const s = await open("#/runs", t.tokens.reader);
    try {
      const client = connectClient(t.baseUrl, RegistryService, t.tokens.reader);
      const expected = await client.searchRuns({ orderBy: ["start_time DESC"], pageSize: 100 });
      expect(expected.runs.length).toBeGreaterThan(0);
      const rows = s.page.locator("[data-testid=runs] tbody tr");
      await expect.poll(() => rows.count()).toBe(expected.runs.length);
      const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-run-id")));
      expect(ids).toEqual(expected.runs.map((r) => r.id));
      for (const run of expected.runs) {
        const row = s.page.locator(`tr[data-run-id="${run.id}"]`);
        for (const [key, value] of Object.entries(run.metrics)) {
          expect(await row.locator(`td[data-key="metrics.${key}"]`).getAttribute("data-value"), key).toBe(
            String(value),
          );
        }
        for (const [key, value] of Object.entries(run.params)) {
          expect(await row.locator(`td[data-key="params.${key}"]`).textContent(), key).toBe(value);
        }
      }
      await shot(s.page, "runs");

      // A search typed into the form: the URL carries it and the table holds what SearchRuns returns for it.
      const best = expected.runs.find((r) => r.metrics.valid_rmse !== undefined);
      expect(best).toBeDefined();
      const filter = `metrics.valid_rmse <= ${best?.metrics.valid_rmse}`;
      await s.page.getByLabel("Filter").fill(filter);
      await s.page.getByLabel("Order by").fill("metrics.valid_rmse ASC");
      await s.page.getByRole("button", { name: "Search" }).click();
      const filtered = await client.searchRuns({
        filter,
        orderBy: ["metrics.valid_rmse ASC"],
        pageSize: 100,
      });
      await expect
        .poll(() => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-run-id"))))
        .toEqual(filtered.runs.map((r) => r.id));
      expect(decodeURIComponent(new URL(s.page.url()).hash)).toContain(
        `filter=${filter}`.replaceAll(" ", "+"),
      );

      // A filter the grammar rejects: the server's message, naming the problem, shows in the page.
      await s.page.getByLabel("Filter").fill("metrics.valid_rmse == 3");
      await s.page.getByRole("button", { name: "Search" }).click();
      await expect.poll(() => s.page.getByTestId("error").textContent()).toMatch(/==/);
      expect(s.errors.filter((e) => !/status of 400 \(Bad Request\)/.test(e))).toEqual([]);
    } finally {
      await s.context.close();
    }
  });

  it("is readable at phone width: the page never scrolls sideways, the wide runs table scrolls in its box", async () => {
    const s = await open("#/runs", t.tokens.reader);
    try {
      await s.page.setViewportSize({ width: 390, height: 844 });
      await s.page.locator("[data-testid=runs] tbody tr").first().waitFor();
      const widths = (await s.page.evaluate(
        "({ page: document.documentElement.scrollWidth, view: window.innerWidth, table: document.querySelector('.scroll').scrollWidth, box: document.querySelector('.scroll').clientWidth })",
      )) as { page: number; view: number; table: number; box: number };
      expect(widths.page).toBeLessThanOrEqual(widths.view);
      expect(widths.table).toBeGreaterThan(widths.box);
      await shot(s.page, "runs-phone");
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  });

  it("shows versions with aliases and test metrics; refuses a reader's alias move; shows an admin's in the history", async () => {
    const versions = (
      await connectClient(t.baseUrl, RegistryService, t.tokens.reader).listModelVersions({ modelName: MODEL })
    ).versions;
    expect(versions.length).toBeGreaterThan(0);

    const reader = await open("#/models", t.tokens.reader);
    try {
      const rows = reader.page.locator("[data-testid=versions] tbody tr");
      await expect.poll(() => rows.count()).toBe(versions.length);
      for (const v of versions) {
        const row = reader.page.locator(`tr[data-version="${v.version}"]`);
        expect(await row.locator("td[data-key=aliases] .badge").allTextContents()).toEqual(v.aliases);
        const test = Object.entries(v.metrics).filter(([k]) => k.startsWith("test_"));
        expect(test.length).toBeGreaterThan(0);
        for (const [key, value] of test) {
          expect(await row.locator(`[data-key="metrics.${key}"]`).getAttribute("data-value")).toBe(
            String(value),
          );
        }
      }
      await reader.page.getByRole("textbox", { name: "Alias" }).fill("staging");
      await reader.page.getByLabel("Reason").fill("try from the console");
      await reader.page.getByRole("button", { name: "Move alias" }).click();
      const result = reader.page.getByTestId("promote-result");
      await result.waitFor();
      expect(await result.textContent()).toBe(
        "Not allowed with this token: test-reader has role reader; bikeshare.v1.RegistryService/SetAlias needs admin or higher.",
      );
      expect(reader.errors.filter((e) => !/status of 403 \(Forbidden\)/.test(e))).toEqual([]);
    } finally {
      await reader.context.close();
    }

    const admin = await open("#/models", t.tokens.admin);
    try {
      const history = admin.page.locator("[data-testid=history] tbody tr");
      await expect.poll(() => history.count()).toBeGreaterThan(0);
      const before = await history.count();
      // An alias nothing else sets (training moves staging itself), so this move is the audit's only entry.
      await admin.page.getByRole("textbox", { name: "Alias" }).fill("reviewed");
      await admin.page.getByLabel("Reason").fill("staged from the console");
      await admin.page.getByRole("button", { name: "Move alias" }).click();
      await expect
        .poll(() => admin.page.getByTestId("promote-result").textContent())
        .toBe(`reviewed now points at v${versions.at(-1)?.version} (was unset).`);
      await expect.poll(() => history.count()).toBe(before + 1);
      const audit = await connectClient(t.baseUrl, RegistryService, t.tokens.admin).listAliasHistory({
        modelName: MODEL,
        alias: "reviewed",
      });
      expect(audit.changes.map((c) => [c.actor, c.reason])).toEqual([
        ["test-admin", "staged from the console"],
      ]);
      const rowTexts = await history.allTextContents();
      expect(
        rowTexts.some(
          (r) => r.includes("reviewed") && r.includes("test-admin") && r.includes("staged from the console"),
        ),
      ).toBe(true);
      await shot(admin.page, "models");
      expect(admin.errors).toEqual([]);
    } finally {
      await admin.context.close();
    }
  });

  it("refuses a reader's training with a clear message; follows a trainer's, started in the page, live to the end", async () => {
    const reader = await open("#/jobs", t.tokens.reader);
    try {
      await reader.page.getByRole("textbox", { name: "Reason" }).fill("a reader tries");
      await reader.page.getByRole("button", { name: "Start training" }).click();
      await expect
        .poll(() => reader.page.getByTestId("start-result").textContent())
        .toBe(
          "Not allowed with this token: test-reader has role reader; bikeshare.v1.TrainService/StartTraining needs trainer or higher.",
        );
      expect(reader.errors.filter((e) => !/status of 403 \(Forbidden\)/.test(e))).toEqual([]);
    } finally {
      await reader.context.close();
    }

    const s = await open("#/jobs", t.tokens.trainer);
    // The form's defaults (gradient-boosted trees, no search trials) are the quickest real training.
    await s.page.getByRole("textbox", { name: "Reason" }).fill("watched from the console");
    await s.page.getByRole("button", { name: "Start training" }).click();
    await s.page.waitForURL(/#\/jobs\?job=/);
    const id = new URLSearchParams(new URL(s.page.url()).hash.split("?")[1]).get("job") as string;
    const train = connectClient(t.baseUrl, TrainService, t.tokens.trainer);
    const started = (await train.getJob({ jobId: id })).job;
    expect(started?.reason).toBe("watched from the console");
    expect(started?.requestedBy).toBe("test-trainer");
    try {
      const state = s.page.getByTestId("job-state");
      const seen = new Set<string>();
      // Whatever the page shows along the way, read while the job runs: progress must move in place.
      const deadline = Date.now() + 280_000;
      while (Date.now() < deadline) {
        const text = (await state.textContent().catch(() => "")) ?? "";
        seen.add(
          `${text} ${await s.page
            .getByTestId("job-progress-text")
            .textContent()
            .catch(() => "")}`,
        );
        if (/succeeded|failed|cancelled/.test(text)) break;
        await s.page.waitForTimeout(250);
      }
      expect(await state.textContent()).toBe("succeeded");
      expect(await s.page.getByTestId("job-progress-text").textContent()).toBe("100%");
      const final = (await train.getJob({ jobId: id })).job;
      expect(final?.state).toBe(JobState.SUCCEEDED);
      // Seen queued or running, then more than one stage of progress: the page was updated by the stream.
      expect(seen.size).toBeGreaterThan(2);
      expect(await s.page.locator("[data-testid=job-events] li").count()).toBeGreaterThan(1);
      // The list's row follows the watched job too, without a reload.
      await expect
        .poll(() => s.page.locator(`[data-testid=jobs] tr[data-job-id="${id}"] td`).nth(2).textContent())
        .toBe("succeeded");
      await shot(s.page, "jobs");
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  }, 300_000);

  it("cancels a started job (queued or training) from the page with a trainer token", async () => {
    const s = await open("#/jobs", t.tokens.trainer);
    try {
      // A search with trials runs long enough to be cancelled while it trains.
      await s.page.getByRole("checkbox", { name: "random forest" }).check();
      await s.page.getByRole("spinbutton", { name: "Search trials per family" }).fill("8");
      await s.page.getByRole("textbox", { name: "Reason" }).fill("to be cancelled");
      await s.page.getByRole("button", { name: "Start training" }).click();
      await s.page.waitForURL(/#\/jobs\?job=/);
      const id = new URLSearchParams(new URL(s.page.url()).hash.split("?")[1]).get("job") as string;
      await s.page.getByRole("button", { name: "Cancel job (trainer)" }).click();
      await expect.poll(() => s.page.getByTestId("cancel-result").textContent()).toBe("Cancel requested.");
      await expect
        .poll(() => s.page.getByTestId("job-state").textContent(), { timeout: 60_000 })
        .toBe("cancelled");
      const job = (await connectClient(t.baseUrl, TrainService, t.tokens.reader).getJob({ jobId: id })).job;
      expect(job?.state).toBe(JobState.CANCELLED);
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  }, 120_000);

  it("shows each version's job, data fingerprint and champion/challenger figures as the registry holds them", async () => {
    // Runs after the training tests, so a second version exists that was evaluated against the first.
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.reader);
    const versions = (await registry.listModelVersions({ modelName: MODEL })).versions;
    expect(versions.length).toBeGreaterThan(1);
    const jobs = (await connectClient(t.baseUrl, TrainService, t.tokens.reader).listJobs({ pageSize: 50 }))
      .jobs;
    const s = await open("#/models", t.tokens.reader);
    try {
      let evaluated = 0;
      for (const v of versions) {
        const run = (await registry.getRun({ runId: v.runId })).run;
        const row = s.page.locator(`tr[data-version="${v.version}"]`);
        await expect
          .poll(() => row.locator("td[data-key=fingerprint]").getAttribute("title"))
          .toBe(run?.dataFingerprint);
        const job = jobs.find((j) => j.modelVersion === v.version);
        expect(job).toBeDefined();
        expect(await row.locator("td[data-key=job] a").getAttribute("href")).toBe(`#/jobs?job=${job?.id}`);
        const gate = row.locator("td[data-key=gate]");
        const challenger = run?.metrics["gate.challenger_rmse"];
        const champion = run?.metrics["gate.champion_rmse"];
        if (challenger === undefined || champion === undefined) {
          expect(await gate.textContent()).toBe("no evaluation (first model or registered by hand)");
        } else {
          evaluated++;
          expect(await gate.getAttribute("data-challenger")).toBe(String(challenger));
          expect(await gate.getAttribute("data-champion")).toBe(String(champion));
          expect(await gate.textContent()).toMatch(
            new RegExp(
              `^${challenger < champion ? "beat" : "did not beat"} v${run?.tags["gate.champion_version"]}: RMSE `,
            ),
          );
        }
      }
      expect(evaluated).toBeGreaterThan(0);
      await shot(s.page, "models");
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  });

  // The tests below run after the training tests, so more than one boosted run has a per-round history.

  it("picks the runs table's columns, kept in the URL, and compares two runs with their metric histories as charts", async () => {
    // A boosted run trained differently from the others (shallower, faster-learning trees), so that the
    // comparison has two curves that differ.
    const trainer = connectClient(t.baseUrl, TrainService, t.tokens.trainer);
    const started = (
      await trainer.startTraining({
        families: [ModelFamily.GBTREE],
        searchTrials: 0,
        paramOverrides: { max_depth: "3", eta: "0.2" },
        reason: "a second curve to compare",
      })
    ).job;
    await expect
      .poll(async () => (await trainer.getJob({ jobId: started?.id ?? "" })).job?.state, { timeout: 200_000 })
      .toBe(JobState.SUCCEEDED);
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.reader);
    const { runs } = await registry.searchRuns({ orderBy: ["start_time DESC"], pageSize: 100 });
    // Runs with a validation RMSE per round (boosted models), as the MLflow API's get-history reads them.
    const boosted = [];
    for (const run of runs) {
      const { points } = await registry.getMetricHistory({ runId: run.id, key: "valid_rmse" });
      if (points.length > 1) boosted.push({ run, points });
    }
    expect(boosted.length).toBeGreaterThanOrEqual(2);
    // Bad input names the field; an unknown run is not found.
    const noKey = await registry
      .getMetricHistory({ runId: boosted[0]?.run.id ?? "", key: "" })
      .catch((e) => e);
    expect([noKey.code, noKey.rawMessage]).toEqual([Code.InvalidArgument, "key is required"]);
    const noRun = await registry
      .getMetricHistory({ runId: "no-such-run", key: "valid_rmse" })
      .catch((e) => e);
    expect([noRun.code, noRun.rawMessage]).toEqual([Code.NotFound, "run no-such-run does not exist"]);
    // GetMetricHistory (added for the console) answers what the MLflow API's get-history does.
    const mlflow = (await (
      await fetch(
        `${t.baseUrl}/api/2.0/mlflow/metrics/get-history?run_id=${boosted[0]?.run.id}&metric_key=valid_rmse`,
        { headers: { authorization: `Bearer ${t.tokens.reader}` } },
      )
    ).json()) as { metrics: { step: number; value: number }[] };
    expect(boosted[0]?.points.map((p) => [Number(p.step), p.value])).toEqual(
      mlflow.metrics.map((m) => [m.step, m.value]),
    );
    // Two runs that differ, when there are such, so that the two lines can be told apart.
    const first = boosted[0] as (typeof boosted)[number];
    const pair = [
      first,
      boosted.find((b) => b.run.metrics.valid_rmse !== first.run.metrics.valid_rmse) ??
        (boosted[1] as (typeof boosted)[number]),
    ];
    expect(pair[1]?.run.metrics.valid_rmse).not.toBe(first.run.metrics.valid_rmse);

    const s = await open("#/runs", t.tokens.reader);
    try {
      const header = s.page.locator("[data-testid=runs] thead th");
      await s.page.locator("[data-testid=runs] tbody tr").first().waitFor();
      const before = await header.allTextContents();
      expect(before.some((h) => h.startsWith("params."))).toBe(true);
      expect(before.some((h) => h.startsWith("tags."))).toBe(false);
      // Only the validation RMSE: every param and metric off, then the one column on.
      await s.page.getByText(/^Columns \(/).click();
      await s.page.getByRole("checkbox", { name: "all params" }).uncheck();
      await expect.poll(() => s.page.url()).toContain("cols=");
      await s.page.getByRole("checkbox", { name: "all metrics" }).uncheck();
      await expect
        .poll(() => header.allTextContents())
        .toEqual(["Compare", "Run", "Name", "Status", "Started"]);
      await s.page.getByRole("checkbox", { name: "valid_rmse", exact: true }).check();
      await expect
        .poll(() => header.allTextContents())
        .toEqual(["Compare", "Run", "Name", "Status", "Started", "metrics.valid_rmse"]);
      expect(new URL(s.page.url()).hash).toContain("cols=metrics.valid_rmse");
      // The URL alone gives the same table: a link to it, or a reload, shows the chosen columns.
      await s.page.reload();
      await s.page.locator("[data-testid=runs] tbody tr").first().waitFor();
      expect(await header.allTextContents()).toEqual([
        "Compare",
        "Run",
        "Name",
        "Status",
        "Started",
        "metrics.valid_rmse",
      ]);
      for (const { run } of boosted) {
        expect(
          await s.page
            .locator(`tr[data-run-id="${run.id}"] td[data-key="metrics.valid_rmse"]`)
            .getAttribute("data-value"),
        ).toBe(String(run.metrics.valid_rmse));
      }

      const compare = s.page.getByTestId("compare");
      expect(await compare.isDisabled()).toBe(true);
      for (const { run } of pair) {
        await s.page.locator(`tr[data-run-id="${run.id}"] input[type=checkbox]`).check();
      }
      await compare.click();
      await s.page.waitForURL(/#\/compare\?runs=/);
      const figure = "[data-testid=history-valid_rmse]";
      await s.page.locator(`${figure} canvas`).waitFor();
      expect(await s.page.locator(figure).getAttribute("data-series")).toBe("2");
      await expect.poll(() => drawnPixels(s.page, figure)).toBeGreaterThan(500);
      // Each line holds every point GetMetricHistory returns for its run.
      const summary = (await s.page.locator(`${figure} [role=img]`).getAttribute("aria-label")) ?? "";
      for (const { run, points } of pair) {
        expect(summary).toContain(`(${run.id.slice(0, 12)}): ${points.length} points`);
      }
      // The side-by-side table: one column per run, metrics as GetRun returns them.
      for (const { run } of pair) {
        const full = (await registry.getRun({ runId: run.id })).run;
        const index = pair.findIndex((p) => p.run.id === run.id);
        for (const [key, value] of Object.entries(full?.metrics ?? {})) {
          const cells = s.page.locator(`[data-testid=comparison] td[data-key="metrics.${key}"]`);
          expect(await cells.nth(index).getAttribute("data-value"), key).toBe(String(value));
        }
      }
      await shot(s.page, "compare");
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  }, 240_000);

  describe("monitoring", () => {
    const rows = readHourCsvRecords();
    const week = rows.filter(
      (r) => (r.dteday as string) >= "2012-07-01" && (r.dteday as string) < "2012-07-08",
    );
    const hourOf = (r: Record<string, number | string>) =>
      instantOfLocalHour(dayNumber(r.dteday as string), r.hr as number).getTime();
    // The page's window: UTC dates in its URL.
    const window = {
      from: timestampFromMs(Date.parse("2012-07-01T00:00:00Z")),
      to: timestampFromMs(Date.parse("2012-07-08T00:00:00Z")),
    };
    const PAGE = "#/monitoring?from=2012-07-01&to=2012-07-08";

    beforeAll(async () => {
      // A served week with 90 % intervals, then its observed counts: live accuracy to show.
      await connectClient(t.baseUrl, PredictService, t.tokens.trainer).predictBatch({
        rows: week.map((r) => ({
          ...Object.fromEntries(MODEL_FIELDS.map((f) => [f, r[f] as number])),
          hour: timestampFromMs(hourOf(r)),
        })),
        intervalLevel: 0.9,
      });
      await connectClient(t.baseUrl, MonitorService, t.tokens.trainer).reportActuals({
        actuals: week.map((r) => ({ hour: timestampFromMs(hourOf(r)), cnt: r.cnt as number })),
      });
    });

    it("shows the performance rows GetPerformance returns, with a chart over time; refuses a reader's check with the server's message", async () => {
      const monitor = connectClient(t.baseUrl, MonitorService, t.tokens.reader);
      const expected = (await monitor.getPerformance({ window })).versions;
      expect(expected.some((v) => v.labelledHours > 0 && v.intervals.length > 0)).toBe(true);
      const s = await open(PAGE, t.tokens.reader);
      try {
        const rowsOf = s.page.locator("[data-testid=performance] tbody tr");
        await expect.poll(() => rowsOf.count()).toBe(expected.length);
        for (const v of expected) {
          const row = s.page.locator(`[data-testid=performance] tr[data-version="${v.modelVersion}"]`);
          const read = (key: string) => row.locator(`td[data-key=${key}]`).getAttribute("data-value");
          expect(await read("labelled_hours")).toBe(String(v.labelledHours));
          expect(await read("rmse")).toBe(String(v.rmse));
          expect(await read("mae")).toBe(String(v.mae));
          expect(await read("within_20pct")).toBe(String(v.within20pct));
          expect(await read("estimated_rmse")).toBe(String(v.estimatedRmse));
          expect(await read("rmse_threshold")).toBe(String(v.rmseThreshold));
          const coverage = await row
            .locator("td[data-key=intervals] [data-level]")
            .evaluateAll((els) =>
              els.map((e) => [e.getAttribute("data-level"), e.getAttribute("data-value")]),
            );
          expect(coverage).toEqual(v.intervals.map((i) => [String(i.level), String(i.coverage)]));
        }
        const chart = "[data-testid=performance-chart]";
        await s.page.locator(`${chart} canvas`).waitFor();
        expect(Number(await s.page.locator(chart).getAttribute("data-series"))).toBeGreaterThanOrEqual(1);
        await expect.poll(() => drawnPixels(s.page, chart)).toBeGreaterThan(500);
        // The reports before the check: what ListReports returns, newest first, each linking its HTML.
        const listed = (await monitor.listReports({ pageSize: 20 })).reports;
        expect(
          await s.page
            .locator("[data-testid=reports] tbody tr")
            .evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-report-id"))),
        ).toEqual(listed.map((r) => r.id));

        await s.page.getByRole("button", { name: "Run check now" }).click();
        await expect
          .poll(() => s.page.getByTestId("check-result").textContent())
          .toBe(
            "Not allowed with this token: test-reader has role reader; bikeshare.v1.MonitorService/RunCheck needs trainer or higher.",
          );
        expect(s.errors.filter((e) => !/status of 403 \(Forbidden\)/.test(e))).toEqual([]);
      } finally {
        await s.context.close();
      }
    });

    it("runs a check from the page with a trainer token: the new drift report is listed and its HTML served", async () => {
      const monitor = connectClient(t.baseUrl, MonitorService, t.tokens.reader);
      const before = (await monitor.listReports({ pageSize: 1000 })).reports.map((r) => r.id);
      const s = await open(PAGE, t.tokens.trainer);
      try {
        await s.page.locator("[data-testid=performance] tbody tr").first().waitFor();
        await s.page.getByRole("button", { name: "Run check now" }).click();
        const result = s.page.getByTestId("check-result");
        await expect
          .poll(() => result.textContent(), { timeout: 60_000 })
          .toMatch(/^Check done: drift report /);
        const id = (await result.getAttribute("data-report-id")) ?? "";
        const after = (await monitor.listReports({ pageSize: 1000 })).reports;
        expect(before).not.toContain(id);
        expect(after.map((r) => r.id)).toContain(id);
        const report = after.find((r) => r.id === id);
        expect(report?.window?.to).toEqual(window.to);
        // The page lists it (reloaded after the check) and links the server's HTML page for it.
        const row = s.page.locator(`[data-testid=reports] tr[data-report-id="${id}"]`);
        await row.waitFor();
        const link = await row.getByRole("link").getAttribute("href");
        expect(link).toBe(`/reports/${id}`);
        const html = await fetch(`${t.baseUrl}${link}`);
        expect(html.status).toBe(200);
        expect(html.headers.get("content-type")).toBe("text/html; charset=utf-8");
        await shot(s.page, "monitoring");
        expect(s.errors).toEqual([]);
      } finally {
        await s.context.close();
      }
    }, 90_000);

    it("is readable at phone width: the monitoring page and its chart fit, the tables scroll in their boxes", async () => {
      const s = await open(PAGE, t.tokens.reader);
      try {
        await s.page.setViewportSize({ width: 390, height: 844 });
        await s.page.locator("[data-testid=performance-chart] canvas").waitFor();
        await s.page.waitForTimeout(300); // the chart follows its box's new width
        const widths = (await s.page.evaluate(
          "({ page: document.documentElement.scrollWidth, view: window.innerWidth, chart: document.querySelector('[data-testid=performance-chart] canvas').getBoundingClientRect().right })",
        )) as { page: number; view: number; chart: number };
        // What sticks out, named, if anything does.
        const wide = await s.page.evaluate(
          "[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll')).map((e) => e.tagName + '.' + e.className).slice(0, 5)",
        );
        expect(widths.page, JSON.stringify(wide)).toBeLessThanOrEqual(widths.view);
        expect(widths.chart).toBeLessThanOrEqual(widths.view);
        await shot(s.page, "monitoring-phone");
        expect(s.errors).toEqual([]);
      } finally {
        await s.context.close();
      }
    });
  });

  it("is usable with the keyboard alone: columns, comparison, and a check, with the focus visible", async () => {
    const s = await open("#/runs", t.tokens.trainer);
    try {
      const page = s.page;
      await page.locator("[data-testid=runs] tbody tr").first().waitFor();
      // Opening the column picker and turning tags on.
      await tabTo(page, "details.columns summary");
      await page.keyboard.press("Enter");
      await tabTo(page, "input[name=all-tags]");
      await page.keyboard.press("Space");
      await expect.poll(() => page.url()).toMatch(/cols=[^&]*tags\./);
      // Two runs ticked with Space, then the compare button (before the table) reached backwards.
      await tabTo(page, "[data-testid=runs] tbody tr:nth-child(1) input[type=checkbox]");
      await page.keyboard.press("Space");
      await tabTo(page, "[data-testid=runs] tbody tr:nth-child(2) input[type=checkbox]");
      await page.keyboard.press("Space");
      await tabTo(page, "[data-testid=compare]", true);
      await page.keyboard.press("Enter");
      await page.waitForURL(/#\/compare\?runs=/);
      await page.getByTestId("comparison").waitFor();
      // The header's Monitoring link, then the check's button, operated with Enter.
      await tabTo(page, 'nav a[href="#/monitoring"]', true);
      await page.keyboard.press("Enter");
      await page.waitForURL(/#\/monitoring/);
      await tabTo(page, "form.action button[type=submit]");
      await page.keyboard.press("Enter");
      await expect
        .poll(() => page.getByTestId("check-result").textContent(), { timeout: 60_000 })
        .toMatch(/^Check done: /);
      expect(s.errors).toEqual([]);
    } finally {
      await s.context.close();
    }
  }, 120_000);

  it("rolls production back to the version it served before: refused for a reader with the server's message, done for an admin and audited", async () => {
    const registry = connectClient(t.baseUrl, RegistryService, t.tokens.admin);
    const versions = (await registry.listModelVersions({ modelName: MODEL })).versions;
    const current = versions.find((v) => v.aliases.includes("production"))?.version as string;
    const other = versions.map((v) => v.version).find((v) => v !== current) as string;
    expect(current).toBeDefined();
    expect(other).toBeDefined();
    // A promotion to roll back from (forced: the other version may not have beaten this one).
    await registry.setAlias({
      modelName: MODEL,
      alias: "production",
      version: other,
      reason: "promoted to be rolled back",
      force: true,
    });

    const reader = await open("#/models", t.tokens.reader);
    try {
      const button = reader.page.getByRole("button", { name: `Roll back to v${current}` });
      await button.waitFor();
      await reader.page.getByLabel("Why roll back").fill("a reader tries");
      await button.click();
      await expect
        .poll(() => reader.page.getByTestId("rollback-result").textContent())
        .toBe(
          "Not allowed with this token: test-reader has role reader; bikeshare.v1.RegistryService/SetAlias needs admin or higher.",
        );
      expect(reader.errors.filter((e) => !/status of 403 \(Forbidden\)/.test(e))).toEqual([]);
    } finally {
      await reader.context.close();
    }

    const admin = await open("#/models", t.tokens.admin);
    try {
      await admin.page.getByLabel("Why roll back").fill("errors up since the promotion");
      await admin.page.getByRole("button", { name: `Roll back to v${current}` }).click();
      await expect
        .poll(() => admin.page.getByTestId("rollback-result").textContent())
        .toBe(`Rolled back: production now points at v${current} (was v${other}).`);
      const audit = (await registry.listAliasHistory({ modelName: MODEL, alias: "production" })).changes;
      const last = audit.at(-1);
      // Forced only when the gate would have refused it (an older version that never beat the newer one).
      expect([last?.fromVersion, last?.toVersion, last?.actor, last?.reason]).toEqual([
        other,
        current,
        "test-admin",
        "errors up since the promotion",
      ]);
      await expect
        .poll(() =>
          admin.page
            .locator(`[data-testid=versions] tr[data-version="${current}"] td[data-key=aliases]`)
            .textContent(),
        )
        .toContain("production");
      expect(admin.errors).toEqual([]);
    } finally {
      await admin.context.close();
    }
  });
});
