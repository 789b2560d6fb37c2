import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/bikeshare/v1/registry_pb.js";
import { JobState, TrainService } from "../../gen/bikeshare/v1/train_pb.js";
import { UI_POLICY } from "../../services/http/ui-static.js";
import { findBrowser } from "../helpers/browser.js";
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
});
