import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { notifyCommand } from "../../cli/commands/notify.js";
import { type CliResult, runCli } from "../helpers/cli.js";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtp.js";

const USER = "mailer-user";
const PASSWORD = "s3cret-Pa55word-for-notify";
const SECRET_FORMS = [
  PASSWORD,
  Buffer.from(PASSWORD).toString("base64"),
  Buffer.from(`\u0000${USER}\u0000${PASSWORD}`).toString("base64"),
];

let smtp: TestSmtpServer;
beforeAll(async () => {
  smtp = await startSmtpServer({
    auth: { user: USER, password: PASSWORD },
    // A server that echoes the attempted password back: the CLI must still never print it.
    authFailureMessage: (user, password) => `Authentication failed for ${user} with ${password}`,
  });
});
afterAll(async () => {
  await smtp?.stop();
});
afterEach(() => {
  smtp.messages.length = 0;
});

function smtpEnv(overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SMTP_HOST: smtp.host,
    SMTP_PORT: String(smtp.port),
    SMTP_USER: USER,
    SMTP_PASSWORD: PASSWORD,
    SMTP_FROM: "bikeshare <ci@example.org>",
    ALERT_EMAIL_TO: "ops@example.org,ml@example.org",
    BIKESHARE_PUBLIC_URL: "https://bikeshare.example.org",
  };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function notify(args: string[], env = smtpEnv()): Promise<CliResult> {
  return runCli(["notify", ...args], env);
}

function expectNoSecret(...outputs: string[]) {
  for (const out of outputs) for (const secret of SECRET_FORMS) expect(out).not.toContain(secret);
}

describe("bikeshare notify over a real SMTP server", () => {
  it("--type deployment sends one templated e-mail with text and HTML parts, authenticated", async () => {
    const res = await notify([
      "--type",
      "deployment",
      "--model-version",
      "3",
      "--reason",
      "beat the champion",
    ]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toBe("deployment e-mail sent to 2 recipient(s): version 3 is now in production\n");
    expectNoSecret(res.stdout, res.stderr);

    const [mail] = await smtp.waitForMessages(1);
    expect(mail?.user).toBe(USER);
    expect(mail?.envelope.to).toEqual(["ops@example.org", "ml@example.org"]);
    expect(mail?.envelope.from).toBe("ci@example.org");
    expect(mail?.subject).toBe("[bikeshare] version 3 is now in production");
    expect(mail?.headers.get("x-bikeshare-kind")).toBe("deployment");
    expect(mail?.text).toContain("Version 3 of bike-demand now serves as production: beat the champion");
    expect(mail?.text).toMatch(/model_version:\s+3/);
    expect(mail?.text).toMatch(/alias:\s+production/);
    expect(mail?.html).toContain(
      "<p>Version 3 of bike-demand now serves as production: beat the champion</p>",
    );
    expect(mail?.html).toContain(
      '<th align="left" style="padding:2px 12px 2px 0">model_version</th><td>3</td>',
    );
    expectNoSecret(mail?.raw ?? "");
  });

  it("--type training with --message and --json", async () => {
    const res = await notify([
      "--type",
      "training",
      "--job-id",
      "job-42",
      "--state",
      "failed",
      "--message",
      "Nightly training failed <in CI>",
      "--link",
      "https://ci.example.org/runs/7",
      "--json",
    ]);
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout);
    expect(out).toMatchObject({ type: "training", subject: "training job failed", recipients: 2 });
    expect(out.messageId).toMatch(/^<.+@.+>$/);
    const [mail] = await smtp.waitForMessages(1);
    expect(mail?.subject).toBe("[bikeshare] training job failed");
    expect(mail?.text).toContain("Nightly training failed <in CI>");
    expect(mail?.text).toMatch(/job_id:\s+job-42/);
    expect(mail?.text).toContain("Details: https://ci.example.org/runs/7");
    // Escaped in HTML, a real hyperlink for the link.
    expect(mail?.html).toContain("<p>Nightly training failed &lt;in CI&gt;</p>");
    expect(mail?.html).toContain('<a href="https://ci.example.org/runs/7">');
  });

  it("--type drift links the stored report on BIKESHARE_PUBLIC_URL", async () => {
    const res = await notify([
      "--type",
      "drift",
      "--model-version",
      "2",
      "--drift-share",
      "0.42",
      "--report-id",
      "r-9",
    ]);
    expect(res.code).toBe(0);
    const [mail] = await smtp.waitForMessages(1);
    expect(mail?.subject).toBe("[bikeshare] data drift on model version 2");
    expect(mail?.text).toContain("has drifted from its training data in 42% of the features");
    expect(mail?.text).toContain("Details: https://bikeshare.example.org/reports/r-9");
    expect(mail?.html).toContain('<a href="https://bikeshare.example.org/reports/r-9">');
    expect(mail?.headers.get("x-bikeshare-kind")).toBe("drift");
  });

  it("a bad --type exits 2 with a clear error and the usage, and sends nothing", async () => {
    const res = await notify(["--type", "weekly", "--model-version", "1"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(
      'bikeshare: --type must be one of deployment, training, drift, got "weekly"',
    );
    expect(res.stderr).toContain("bikeshare notify --type deployment|training|drift");
    expect(res.stdout).toBe("");
    expect(smtp.messages).toHaveLength(0);
  });

  it("a wrong password fails with exit 1 and never prints it, even when the server echoes it", async () => {
    const wrong = "wrong-Pa55word-never-print";
    const res = await notify(
      ["--type", "deployment", "--model-version", "1"],
      smtpEnv({ SMTP_PASSWORD: wrong }),
    );
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("SMTP authentication (as SMTP_USER) was rejected");
    for (const secret of [wrong, Buffer.from(wrong).toString("base64"), ...SECRET_FORMS]) {
      expect(res.stdout + res.stderr).not.toContain(secret);
    }
    expect(smtp.messages).toHaveLength(0);
  });

  it("without SMTP_HOST exits 1 with a clear error", async () => {
    const off = await notify(
      ["--type", "deployment", "--model-version", "1"],
      smtpEnv({ SMTP_HOST: undefined }),
    );
    expect(off.code).toBe(1);
    expect(off.stderr).toContain("bikeshare: SMTP_HOST is not set");
    expectNoSecret(off.stdout, off.stderr);
    expect(smtp.messages).toHaveLength(0);
  });
});

describe("notify flag checks (in process: the same code the CLI runs, without a process per case)", () => {
  class Usage extends Error {}
  it.each([
    [{}, "notify needs --type deployment|training|drift"],
    [{ type: "" }, "--type needs a value"],
    [{ type: "deployment" }, "notify --type deployment needs --model-version VERSION"],
    [{ type: "deployment", "model-version": "v3" }, '--model-version must be a positive integer, got "v3"'],
    [{ type: "training", state: "failed" }, "notify --type training needs --job-id ID"],
    [{ type: "training", "job-id": "j1" }, "notify --type training needs --state succeeded|failed|cancelled"],
    [
      { type: "training", "job-id": "j1", state: "done" },
      '--state must be one of succeeded, failed, cancelled, got "done"',
    ],
    [
      { type: "drift", "model-version": "1", "drift-share": "42" },
      '--drift-share must be a number between 0 and 1, got "42"',
    ],
    [
      { type: "drift", "model-version": "1", link: "javascript:alert(1)" },
      '--link must be an http:// or https:// URL, got "javascript:alert(1)"',
    ],
  ])("%j is refused: %s", async (values, message) => {
    const error = await notifyCommand(values, (m) => new Usage(m)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Usage);
    expect((error as Error).message).toBe(message);
    expect(smtp.messages).toHaveLength(0);
  });
});
