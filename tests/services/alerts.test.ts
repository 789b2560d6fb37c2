import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AlertStore } from "../../services/monitor/alerts.js";
import {
  hidePassword,
  type Notification,
  Notifier,
  NotifierError,
  type SmtpSettings,
  smtpFromEnv,
} from "../../services/monitor/notifier.js";
import { createLogger, type Logger } from "../../services/observability/log.js";
import type { SqlDatabase } from "../../services/storage/database.js";
import { BACKENDS } from "../helpers/backends.js";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtp.js";

const HOUR = 3_600_000;
const USER = "alerts-robot";
const PASSWORD = "s3cr3t-Pa55w0rd!";

function captureLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger({ component: "notifier" }, "debug", (line) => lines.push(line)), lines };
}

function settingsFor(server: TestSmtpServer, extra: Partial<SmtpSettings> = {}): SmtpSettings {
  return {
    host: server.host,
    port: server.port,
    secure: false,
    from: "bikeshare <bikeshare@localhost>",
    to: ["ops@example.org", "ml@example.org"],
    ...extra,
  };
}

const driftAlert: Notification = {
  kind: "drift",
  subject: "dataset drift on model 3 — PSI ↑",
  summary: "5 of 12 features drifted since the reference window.",
  facts: {
    drifted_share: 0.41666666666,
    threshold: 0.3,
    model_version: "3",
    note: "<script>alert(1)</script> & co",
  },
  link: "http://localhost:8080/monitor/drift?x=1&y=2",
};

describe("Notifier over a real SMTP server", () => {
  let server: TestSmtpServer | undefined;

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it("delivers one e-mail with subject, text and HTML parts carrying the facts", async () => {
    server = await startSmtpServer();
    const { log, lines } = captureLogger();
    const notifier = new Notifier(settingsFor(server), log);
    try {
      const { messageId } = await notifier.send(driftAlert);
      expect(messageId).toMatch(/^<.+@.+>$/);

      const [mail] = await server.waitForMessages(1);
      expect(mail).toBeDefined();
      if (!mail) return;
      expect(mail.envelope.from).toBe("bikeshare@localhost");
      expect(mail.envelope.to).toEqual(["ops@example.org", "ml@example.org"]);
      expect(mail.subject).toBe("[bikeshare] dataset drift on model 3 — PSI ↑");
      expect(mail.headers.get("content-type")).toMatch(/^multipart\/alternative/);
      expect(mail.headers.get("message-id")).toBe(messageId);

      expect(mail.text).toContain("5 of 12 features drifted");
      expect(mail.text).toContain("kind:");
      expect(mail.text).toMatch(/drifted_share:\s+0\.416667/);
      expect(mail.text).toMatch(/threshold:\s+0\.3/);
      expect(mail.text).toContain("<script>alert(1)</script> & co"); // plain text stays as written
      expect(mail.text).toContain("http://localhost:8080/monitor/drift?x=1&y=2");

      expect(mail.html).toContain("<table");
      expect(mail.html).toMatch(/<th[^>]*>drifted_share<\/th><td>0\.416667<\/td>/);
      expect(mail.html).toMatch(/<th[^>]*>model_version<\/th><td>3<\/td>/);
      expect(mail.html).toContain("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co");
      expect(mail.html).not.toContain("<script>");
      expect(mail.html).toContain('<a href="http://localhost:8080/monitor/drift?x=1&amp;y=2">');

      const sent = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(sent).toHaveLength(1);
      expect(sent[0]).toMatchObject({
        level: "info",
        kind: "drift",
        subject: "[bikeshare] dataset drift on model 3 — PSI ↑",
        recipients: 2,
        messageId,
      });
    } finally {
      notifier.close();
    }
  });

  it("does not turn a non-http link into a hyperlink and keeps the subject on one line", async () => {
    server = await startSmtpServer();
    const notifier = new Notifier(settingsFor(server), captureLogger().log);
    try {
      await notifier.send({
        kind: "training",
        subject: "run finished\r\nBcc: victim@example.org",
        summary: "ok",
        facts: { rmse: 41.5 },
        link: "javascript:alert(1)",
      });
      const [mail] = await server.waitForMessages(1);
      expect(mail?.subject).toBe("[bikeshare] run finished Bcc: victim@example.org");
      expect(mail?.headers.has("bcc")).toBe(false);
      expect(mail?.envelope.to).toEqual(["ops@example.org", "ml@example.org"]);
      expect(mail?.html).not.toContain("<a ");
      expect(mail?.html).toContain("<p>javascript:alert(1)</p>");
    } finally {
      notifier.close();
    }
  });

  it("authenticates with the right credentials and never logs the password", async () => {
    server = await startSmtpServer({ auth: { user: USER, password: PASSWORD } });
    const { log, lines } = captureLogger();
    const settings = smtpFromEnv({
      SMTP_HOST: server.host,
      SMTP_PORT: String(server.port),
      SMTP_USER: USER,
      SMTP_PASSWORD: PASSWORD,
      ALERT_EMAIL_TO: "ops@example.org",
    });
    expect(settings).toBeDefined();
    if (!settings) return;
    const notifier = new Notifier(settings, log);
    try {
      const { messageId } = await notifier.send(driftAlert);
      const [mail] = await server.waitForMessages(1);
      expect(mail?.user).toBe(USER);
      expect(mail?.headers.get("message-id")).toBe(messageId);
      expect(server.authAttempts).toEqual([{ username: USER, accepted: true }]);
    } finally {
      notifier.close();
    }
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      expect(line).not.toContain(PASSWORD);
      expect(line).not.toContain(Buffer.from(PASSWORD).toString("base64"));
    }
  });

  it("fails clearly with a wrong password, without the secrets in the error or the log", async () => {
    server = await startSmtpServer({ auth: { user: USER, password: PASSWORD } });
    const { log, lines } = captureLogger();
    const wrong = "Wr0ng-Passw0rd-xyz";
    const notifier = new Notifier(hidePassword(settingsFor(server, { user: USER }), wrong), log);
    let error: unknown;
    try {
      await notifier.send(driftAlert);
    } catch (e) {
      error = e;
    } finally {
      notifier.close();
    }
    expect(error).toBeInstanceOf(NotifierError);
    const failure = error as NotifierError;
    expect(failure.code).toBe("EAUTH");
    expect(failure.responseCode).toBe(535);
    expect(failure.message).toMatch(/SMTP authentication .* was rejected by 127\.0\.0\.1:\d+/);
    expect(failure.message).toContain("Invalid username or password");
    expect(server.messages).toHaveLength(0);
    expect(server.authAttempts).toEqual([{ username: USER, accepted: false }]);

    const everything = [
      failure.message,
      String(failure),
      failure.stack ?? "",
      JSON.stringify(failure),
      ...lines,
    ];
    const secrets = [
      wrong,
      USER,
      Buffer.from(wrong).toString("base64"),
      Buffer.from(`\u0000${USER}\u0000${wrong}`).toString("base64"),
    ];
    for (const text of everything) for (const secret of secrets) expect(text).not.toContain(secret);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? "{}")).toMatchObject({ level: "error", kind: "drift", code: "EAUTH" });
  });

  it("redacts the credentials from a server reply that echoes them", async () => {
    const wrong = "An0ther-Wr0ng-One";
    server = await startSmtpServer({
      auth: { user: USER, password: PASSWORD },
      authFailureMessage: (user, password) =>
        `bad credentials ${user}/${password} (${Buffer.from(`\u0000${user}\u0000${password}`).toString("base64")})`,
    });
    const { log, lines } = captureLogger();
    const notifier = new Notifier(hidePassword(settingsFor(server, { user: USER }), wrong), log);
    const error = await notifier.send(driftAlert).then(
      () => undefined,
      (e: unknown) => e as NotifierError,
    );
    notifier.close();
    expect(error?.code).toBe("EAUTH");
    expect(error?.message).toContain("bad credentials [redacted]/[redacted] ([redacted])");
    for (const text of [error?.message ?? "", String(error), ...lines]) {
      expect(text).not.toContain(wrong);
      expect(text).not.toContain(USER);
    }
  });

  it("rejects clearly when no server listens", async () => {
    const probe = await startSmtpServer();
    const port = probe.port;
    await probe.stop();
    const notifier = new Notifier(
      hidePassword(
        { host: "127.0.0.1", port, secure: false, user: USER, from: "a@localhost", to: ["b@localhost"] },
        PASSWORD,
      ),
      captureLogger().log,
    );
    try {
      const error = await notifier.send(driftAlert).then(
        () => undefined,
        (e: unknown) => e as NotifierError,
      );
      expect(error).toBeInstanceOf(NotifierError);
      expect(error?.code).toBe("ESOCKET");
      expect(error?.message).toMatch(/127\.0\.0\.1:\d+ failed \(ESOCKET\).*ECONNREFUSED/);
      expect(error?.message).not.toContain(PASSWORD);
    } finally {
      notifier.close();
    }
  });

  it("keeps the password out of the settings' JSON, inspect, toString and of the notifier", () => {
    const settings = smtpFromEnv({
      SMTP_HOST: "smtp.example.org",
      SMTP_USER: USER,
      SMTP_PASSWORD: PASSWORD,
      ALERT_EMAIL_TO: "ops@example.org",
    });
    expect(settings?.password).toBe(PASSWORD);
    const notifier = new Notifier(settings as SmtpSettings, captureLogger().log);
    try {
      for (const text of [
        JSON.stringify(settings),
        inspect(settings, { depth: 5 }),
        String(settings),
        `${settings}`,
        JSON.stringify({ ...settings }),
        JSON.stringify(Object.entries(settings ?? {})),
        JSON.stringify(notifier),
        inspect(notifier, { depth: 5 }),
      ]) {
        expect(text).not.toContain(PASSWORD);
      }
    } finally {
      notifier.close();
    }
  });
});

describe("smtpFromEnv", () => {
  const base = { SMTP_HOST: "smtp.example.org", ALERT_EMAIL_TO: "ops@example.org" };

  it("is undefined without SMTP_HOST", () => {
    expect(smtpFromEnv({})).toBeUndefined();
    expect(smtpFromEnv({ SMTP_HOST: "  ", ALERT_EMAIL_TO: "x" })).toBeUndefined();
  });

  it("applies the defaults", () => {
    expect(smtpFromEnv(base)).toEqual({
      host: "smtp.example.org",
      port: 587,
      secure: false,
      from: "bikeshare <bikeshare@localhost>",
      to: ["ops@example.org"],
    });
  });

  it("reads every variable", () => {
    const s = smtpFromEnv({
      SMTP_HOST: "mail.example.org",
      SMTP_PORT: "465",
      SMTP_SECURE: "true",
      SMTP_USER: "u@example.org",
      SMTP_PASSWORD: "pw",
      SMTP_FROM: '"Bike Share" <alerts@example.org>',
      ALERT_EMAIL_TO: "a@example.org, b@example.org ,c@example.org",
    });
    expect(s).toMatchObject({
      host: "mail.example.org",
      port: 465,
      secure: true,
      user: "u@example.org",
      from: '"Bike Share" <alerts@example.org>',
      to: ["a@example.org", "b@example.org", "c@example.org"],
    });
    expect(s?.password).toBe("pw");
  });

  it.each([
    [{ ALERT_EMAIL_TO: undefined }, /ALERT_EMAIL_TO must be set when SMTP_HOST is set/],
    [{ ALERT_EMAIL_TO: "ops@example.org, not-an-address" }, /ALERT_EMAIL_TO .*"not-an-address" is not one/],
    [{ ALERT_EMAIL_TO: "ops@example.org,," }, /ALERT_EMAIL_TO .*"" is not one/],
    [{ SMTP_PORT: "smtp" }, /SMTP_PORT must be an integer between 1 and 65535, got "smtp"/],
    [{ SMTP_PORT: "70000" }, /SMTP_PORT must be an integer between 1 and 65535/],
    [{ SMTP_PORT: "25.5" }, /SMTP_PORT must be/],
    [{ SMTP_PORT: "0" }, /SMTP_PORT must be/],
    [{ SMTP_SECURE: "yes" }, /SMTP_SECURE must be "true" or "false", got "yes"/],
    [{ SMTP_FROM: "nobody" }, /SMTP_FROM must be an e-mail address/],
    [{ SMTP_HOST: "user@host" }, /SMTP_HOST must be a host name/],
    [{ SMTP_USER: "someone" }, /SMTP_PASSWORD must be set when SMTP_USER is set/],
    [{ SMTP_PASSWORD: PASSWORD }, /SMTP_USER must be set when SMTP_PASSWORD is set/],
  ])("rejects %o naming the variable", (override, message) => {
    let error: unknown;
    try {
      smtpFromEnv({ ...base, ...override });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain(PASSWORD);
  });
});

describe.each(BACKENDS)("AlertStore on $name", (backend) => {
  let dir: string;
  let location: string;
  let db: SqlDatabase;
  const t0 = new Date("2012-07-01T12:00:00Z");
  const at = (ms: number) => new Date(t0.getTime() + ms);
  const drift = (modelVersion = "1", now = t0, value = 0.5) =>
    ({ rule: "dataset_drift", message: "drifted", value, threshold: 0.3, modelVersion, now }) as const;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "bikeshare-alerts-"));
    location = await backend.create(dir);
    db = await backend.open(location);
  });

  afterEach(async () => {
    await db.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it("records an alert and returns it", async () => {
    const store = await AlertStore.open(db);
    expect(store.policy.cooldownMs).toBe(6 * HOUR);
    const record = await store.raise(drift());
    expect(record).toMatchObject({
      rule: "dataset_drift",
      message: "drifted",
      value: 0.5,
      threshold: 0.3,
      modelVersion: "1",
      notified: false,
    });
    expect(record?.time.toISOString()).toBe(t0.toISOString());
    expect(record?.jobId).toBeUndefined();
    expect(await store.list({ limit: 10, offset: 0 })).toEqual([record]);
  });

  it("de-duplicates within the cooldown and raises again once it has passed", async () => {
    const store = await AlertStore.open(db);
    expect(await store.raise(drift())).toBeDefined();
    expect(await store.raise(drift("1", at(1)))).toBeUndefined();
    expect(await store.raise(drift("1", at(6 * HOUR - 1)))).toBeUndefined();
    const again = await store.raise(drift("1", at(6 * HOUR)));
    expect(again).toBeDefined();
    // The cooldown now runs from the second alert.
    expect(await store.raise(drift("1", at(7 * HOUR)))).toBeUndefined();
    expect(await store.raise(drift("1", at(12 * HOUR)))).toBeDefined();
    // Simulated time that goes back next to a recorded alert is suppressed too.
    expect(await store.raise(drift("1", at(-HOUR)))).toBeUndefined();
    expect((await store.list({ limit: 10, offset: 0 })).map((r) => r.time.getTime() - t0.getTime())).toEqual([
      12 * HOUR,
      6 * HOUR,
      0,
    ]);
  });

  it("keeps different rules and model versions apart", async () => {
    const store = await AlertStore.open(db, { cooldownMs: HOUR });
    expect(await store.raise(drift("1"))).toBeDefined();
    expect(await store.raise(drift("2"))).toBeDefined();
    expect(
      await store.raise({
        rule: "live_rmse",
        message: "rmse",
        value: 120,
        threshold: 100,
        modelVersion: "1",
        now: t0,
      }),
    ).toBeDefined();
    expect(
      await store.raise({
        rule: "prediction_drift",
        message: "p",
        value: 0.4,
        threshold: 0.2,
        modelVersion: "1",
        now: t0,
      }),
    ).toBeDefined();
    expect(await store.raise(drift("1", at(30 * 60_000)))).toBeUndefined();
    expect(await store.raise(drift("2", at(30 * 60_000)))).toBeUndefined();
    expect(await store.raise(drift("2", at(HOUR)))).toBeDefined();
    expect(await store.list({ limit: 100, offset: 0 })).toHaveLength(5);
  });

  it("with a zero cooldown never suppresses", async () => {
    const store = await AlertStore.open(db, { cooldownMs: 0 });
    expect(await store.raise(drift())).toBeDefined();
    expect(await store.raise(drift())).toBeDefined();
  });

  it("lists newest first with paging and a time window", async () => {
    const store = await AlertStore.open(db, { cooldownMs: HOUR });
    const raised = [];
    for (let i = 0; i < 7; i++) raised.push(await store.raise(drift("1", at(i * HOUR), i)));
    const ids = raised.map((r) => r?.id);
    const newestFirst = [...ids].reverse();

    const page1 = await store.list({ limit: 3, offset: 0 });
    const page2 = await store.list({ limit: 3, offset: 3 });
    const page3 = await store.list({ limit: 3, offset: 6 });
    expect([...page1, ...page2, ...page3].map((r) => r.id)).toEqual(newestFirst);
    expect(page3).toHaveLength(1);
    expect(await store.list({ limit: 3, offset: 7 })).toEqual([]);
    expect(page1.map((r) => r.value)).toEqual([6, 5, 4]);

    const window = await store.list({ from: at(2 * HOUR), until: at(5 * HOUR), limit: 10, offset: 0 });
    expect(window.map((r) => r.value)).toEqual([4, 3, 2]);
    expect((await store.list({ from: at(5 * HOUR), limit: 10, offset: 1 })).map((r) => r.value)).toEqual([5]);

    await expect(store.list({ limit: 0, offset: 0 })).rejects.toThrow(/limit/);
    await expect(store.list({ limit: 1, offset: -1 })).rejects.toThrow(/offset/);
  });

  it("orders alerts with the same time by insertion, newest first", async () => {
    const store = await AlertStore.open(db);
    const a = await store.raise(drift("1"));
    const b = await store.raise(drift("2"));
    const c = await store.raise(drift("3"));
    expect((await store.list({ limit: 10, offset: 0 })).map((r) => r.id)).toEqual([c?.id, b?.id, a?.id]);
  });

  it("yields exactly one record under 10 concurrent raises", async () => {
    const store = await AlertStore.open(db);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.raise(drift("7", at(i * 1000)))),
    );
    expect(results.filter((r) => r !== undefined)).toHaveLength(1);
    expect(await store.list({ limit: 100, offset: 0 })).toHaveLength(1);
  });

  it("attaches a job, marks notified, and both survive a reopen", async () => {
    const store = await AlertStore.open(db);
    const record = await store.raise(drift());
    if (!record) throw new Error("expected an alert");
    await store.attachJob(record.id, "job-42");
    await store.markNotified(record.id);
    await store.markNotified(record.id);
    await expect(store.attachJob("missing", "job-1")).rejects.toThrow(/no alert with id "missing"/);
    await expect(store.markNotified("missing")).rejects.toThrow(/no alert/);

    await db.close();
    db = await backend.open(location);
    const reopened = await AlertStore.open(db);
    expect(await reopened.list({ limit: 10, offset: 0 })).toEqual([
      { ...record, jobId: "job-42", notified: true },
    ]);
    // The cooldown holds across a restart.
    expect(await reopened.raise(drift("1", at(HOUR)))).toBeUndefined();
  });

  it("validates its input", async () => {
    const store = await AlertStore.open(db);
    await expect(store.raise({ ...drift(), rule: "nope" as never })).rejects.toThrow(/rule must be one of/);
    await expect(store.raise({ ...drift(), value: Number.NaN })).rejects.toThrow(/value must be a finite/);
    await expect(store.raise({ ...drift(), modelVersion: "" })).rejects.toThrow(/modelVersion/);
    await expect(store.raise({ ...drift(), now: new Date(Number.NaN) })).rejects.toThrow(
      /now must be a valid Date/,
    );
    await expect(AlertStore.open(db, { cooldownMs: -1 })).rejects.toThrow(/cooldownMs/);
  });
});
