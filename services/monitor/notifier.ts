import { createTransport } from "nodemailer";
import type { Logger } from "../observability/log.js";

/**
 * Alert and pipeline e-mail through nodemailer over SMTP.
 *
 * Secrets: the SMTP password (and the user name) never reach a log line or an error message. The
 * settings object that `smtpFromEnv` returns holds the password as a non-enumerable property, so
 * JSON.stringify, util.inspect, spreading and Object.entries leave it out; the Notifier keeps its
 * copy in a private field. SMTP errors are rethrown as a NotifierError built from a redacted message,
 * without the original error (whose fields could echo the AUTH exchange).
 *
 * Without SMTP_SECURE=true the connection upgrades with STARTTLS whenever the server offers it;
 * a server that offers no STARTTLS gets the credentials in clear, so point SMTP_HOST at a relay
 * that speaks TLS (port 465 with SMTP_SECURE=true, or 587 with STARTTLS).
 */

export interface SmtpSettings {
  host: string;
  port: number;
  /** true: TLS from the first byte (port 465); false: plain, upgraded by STARTTLS when offered. */
  secure: boolean;
  user?: string;
  /** Non-enumerable in what smtpFromEnv returns: never serialised or inspected. */
  password?: string;
  from: string;
  to: string[];
}

export const DEFAULT_SMTP_FROM = "bikeshare <bikeshare@localhost>";
const DEFAULT_SMTP_PORT = 587;

/** A bare address: local@domain, no spaces, brackets, quotes or commas. */
const ADDRESS = /^[^\s@<>,;"]+@[^\s@<>,;"]+$/;
/** `Name <local@domain>` or `"Name" <local@domain>`. */
const NAMED_ADDRESS = /^(?:"[^"\r\n]*"|[^<>"\r\n@,;]*)\s*<([^\s@<>,;"]+@[^\s@<>,;"]+)>$/;

/**
 * SMTP settings from the environment, or undefined when SMTP_HOST is unset or empty (e-mail is
 * then disabled; the caller says so in a log line). Throws an Error naming the variable for any
 * value that is not valid. Error messages never repeat SMTP_PASSWORD.
 */
export function smtpFromEnv(env: NodeJS.ProcessEnv = process.env): SmtpSettings | undefined {
  const host = env.SMTP_HOST?.trim();
  if (!host) return undefined;
  if (/[\s/@]/.test(host)) {
    throw new Error(`SMTP_HOST must be a host name or IP address, got ${JSON.stringify(host)}`);
  }

  const portText = env.SMTP_PORT?.trim();
  let port = DEFAULT_SMTP_PORT;
  if (portText) {
    port = /^\d+$/.test(portText) ? Number(portText) : Number.NaN;
    if (!Number.isInteger(port) || port < 1 || port > 65_535) {
      throw new Error(`SMTP_PORT must be an integer between 1 and 65535, got ${JSON.stringify(portText)}`);
    }
  }

  const secureText = env.SMTP_SECURE?.trim().toLowerCase();
  let secure = false;
  if (secureText) {
    if (secureText !== "true" && secureText !== "false") {
      throw new Error(`SMTP_SECURE must be "true" or "false", got ${JSON.stringify(env.SMTP_SECURE)}`);
    }
    secure = secureText === "true";
  }

  const user = env.SMTP_USER === undefined || env.SMTP_USER === "" ? undefined : env.SMTP_USER;
  const password =
    env.SMTP_PASSWORD === undefined || env.SMTP_PASSWORD === "" ? undefined : env.SMTP_PASSWORD;
  if (user !== undefined && password === undefined) {
    throw new Error("SMTP_PASSWORD must be set when SMTP_USER is set (SMTP AUTH needs both)");
  }
  if (password !== undefined && user === undefined) {
    throw new Error("SMTP_USER must be set when SMTP_PASSWORD is set (SMTP AUTH needs both)");
  }

  const from = env.SMTP_FROM?.trim() || DEFAULT_SMTP_FROM;
  if (!ADDRESS.test(from) && !NAMED_ADDRESS.test(from)) {
    throw new Error(
      `SMTP_FROM must be an e-mail address such as "bikeshare <alerts@example.org>" or "alerts@example.org", got ${JSON.stringify(from)}`,
    );
  }

  const toText = env.ALERT_EMAIL_TO?.trim();
  if (!toText) {
    throw new Error(
      "ALERT_EMAIL_TO must be set when SMTP_HOST is set: a comma-separated list of e-mail addresses to send alerts to",
    );
  }
  const to = toText.split(",").map((a) => a.trim());
  for (const address of to) {
    if (!ADDRESS.test(address)) {
      throw new Error(
        `ALERT_EMAIL_TO must be a comma-separated list of e-mail addresses (local@domain); ${JSON.stringify(address)} is not one`,
      );
    }
  }

  const settings: SmtpSettings = { host, port, secure, from, to };
  if (user !== undefined) settings.user = user;
  if (password !== undefined) hidePassword(settings, password);
  return settings;
}

/** Stores `password` on `settings` as a non-enumerable property, so it is never serialised or inspected. */
export function hidePassword(settings: SmtpSettings, password: string): SmtpSettings {
  Object.defineProperty(settings, "password", {
    value: password,
    enumerable: false,
    writable: false,
    configurable: true,
  });
  return settings;
}

export type NotificationKind = "drift" | "performance" | "prediction_drift" | "training" | "deployment";

export interface Notification {
  kind: NotificationKind;
  subject: string;
  summary: string;
  facts: Record<string, string | number>;
  /** Shown in both parts; only an http(s) URL becomes a hyperlink in the HTML part. */
  link?: string;
}

// Templates shared by the server's own e-mails and `bikeshare notify`, so that both read alike.

export interface TrainingFacts {
  jobId: string;
  state: string;
  modelVersion?: string;
  seconds?: number;
  reason?: string;
  error?: string;
}

export function trainingNotification(f: TrainingFacts): Notification {
  const facts: Record<string, string | number> = { job_id: f.jobId, state: f.state };
  if (f.reason) facts.reason = f.reason;
  if (f.seconds !== undefined) facts.seconds = Math.round(f.seconds);
  if (f.modelVersion) facts.model_version = f.modelVersion;
  return {
    kind: "training",
    subject: `training job ${f.state}${f.modelVersion ? `: version ${f.modelVersion}` : ""}`,
    summary: f.error ? `The job ended ${f.state}: ${f.error}` : `The job ended ${f.state}.`,
    facts,
  };
}

export interface DeploymentFacts {
  modelName: string;
  version: string;
  alias: string;
  /** Why the version moved, e.g. "it beat production on the last labelled window". */
  reason?: string;
}

export function deploymentNotification(f: DeploymentFacts): Notification {
  const facts: Record<string, string | number> = {
    model: f.modelName,
    model_version: f.version,
    alias: f.alias,
  };
  if (f.reason) facts.reason = f.reason;
  return {
    kind: "deployment",
    subject: `version ${f.version} is now in ${f.alias}`,
    summary: `Version ${f.version} of ${f.modelName} now serves as ${f.alias}${f.reason ? `: ${f.reason}` : "."}`,
    facts,
  };
}

export interface DriftFacts {
  modelVersion: string;
  /** Share of features that drifted, 0 to 1. */
  driftShare?: number;
  link?: string;
}

export function driftNotification(f: DriftFacts): Notification {
  const facts: Record<string, string | number> = { model_version: f.modelVersion };
  const share = f.driftShare === undefined ? "" : ` in ${Math.round(f.driftShare * 100)}% of the features`;
  if (f.driftShare !== undefined) facts.drift_share = f.driftShare;
  return {
    kind: "drift",
    subject: `data drift on model version ${f.modelVersion}`,
    summary: `The data served by model version ${f.modelVersion} has drifted from its training data${share}.`,
    facts,
    ...(f.link ? { link: f.link } : {}),
  };
}

/** An SMTP failure, with secrets removed from its message. `code` is nodemailer's (EAUTH, ECONNECTION, …). */
export class NotifierError extends Error {
  override readonly name = "NotifierError";
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly responseCode: number | undefined,
  ) {
    super(message);
  }
}

const SUBJECT_PREFIX = "[bikeshare] ";

type Transport = ReturnType<typeof createTransport>;

export class Notifier {
  readonly #transport: Transport;
  readonly #secrets: string[];
  readonly #log: Logger;
  readonly #endpoint: string;
  readonly #from: string;
  readonly #to: string[];

  constructor(settings: SmtpSettings, log: Logger) {
    if (settings.to.length === 0) throw new Error("Notifier needs at least one recipient (ALERT_EMAIL_TO)");
    const { host, port, secure, user, password } = settings;
    this.#endpoint = `${host}:${port}`;
    this.#from = settings.from;
    this.#to = [...settings.to];
    this.#log = log;
    this.#secrets = secretForms(user, password);
    this.#transport = createTransport({
      host,
      port,
      secure,
      ...(user !== undefined ? { auth: { user, pass: password ?? "" } } : {}),
      // An alert must not hang a caller for minutes: nodemailer's defaults are 2 min / 30 s / 10 min.
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 30_000,
      // The content is always strings built here: never read a file or a URL into a message.
      disableFileAccess: true,
      disableUrlAccess: true,
      logger: false,
      debug: false,
    });
  }

  /** Sends one e-mail (plain text and HTML) to every recipient; rejects with a NotifierError. */
  async send(n: Notification): Promise<{ messageId: string }> {
    const subject = SUBJECT_PREFIX + oneLine(n.subject);
    const facts = Object.entries(n.facts).map(([k, v]) => [k, formatFact(v)] as const);
    let info: { messageId: string; accepted: unknown[]; rejected: unknown[] };
    try {
      info = await this.#transport.sendMail({
        from: this.#from,
        to: this.#to,
        subject,
        text: renderText(n, facts),
        html: renderHtml(n, facts),
        headers: { "X-Bikeshare-Kind": n.kind },
      });
    } catch (error) {
      const failure = this.#failure(error);
      this.#log.error("alert e-mail not sent", {
        kind: n.kind,
        subject,
        recipients: this.#to.length,
        code: failure.code,
        error: failure.message,
      });
      throw failure;
    }
    const fields = { kind: n.kind, subject, recipients: this.#to.length, messageId: info.messageId };
    if (info.rejected.length > 0) {
      this.#log.warn("alert e-mail sent; some recipients were refused", {
        ...fields,
        accepted: info.accepted.length,
        rejected: info.rejected.length,
      });
    } else {
      this.#log.info("alert e-mail sent", fields);
    }
    return { messageId: info.messageId };
  }

  close(): void {
    this.#transport.close();
  }

  toJSON(): Record<string, unknown> {
    return { endpoint: this.#endpoint, from: this.#from, recipients: this.#to.length };
  }

  #failure(error: unknown): NotifierError {
    const e = (error ?? {}) as { message?: unknown; code?: unknown; responseCode?: unknown };
    const code = typeof e.code === "string" ? e.code : undefined;
    const responseCode = typeof e.responseCode === "number" ? e.responseCode : undefined;
    const detail = this.#redact(typeof e.message === "string" ? e.message : String(error));
    const what =
      code === "EAUTH"
        ? `SMTP authentication (as SMTP_USER) was rejected by ${this.#endpoint}; check SMTP_USER and SMTP_PASSWORD`
        : `sending e-mail through ${this.#endpoint} failed${code ? ` (${code})` : ""}`;
    return new NotifierError(`${what}: ${detail}`, code, responseCode);
  }

  #redact(text: string): string {
    let out = text;
    for (const secret of this.#secrets) out = out.split(secret).join("[redacted]");
    return out;
  }
}

/** The password and user name, raw and as they travel in AUTH PLAIN / AUTH LOGIN (base64), longest first. */
function secretForms(user: string | undefined, password: string | undefined): string[] {
  const forms = new Set<string>();
  const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
  if (password) {
    forms.add(password);
    forms.add(b64(password));
    forms.add(encodeURIComponent(password));
    if (user !== undefined) {
      forms.add(b64(`\u0000${user}\u0000${password}`));
      forms.add(b64(`${user}\u0000${user}\u0000${password}`));
    }
  }
  // A one- or two-letter user name would blank out every matching letter of a message: redact only real ones.
  if (user && user.length >= 3) {
    forms.add(user);
    forms.add(b64(user));
  }
  return [...forms].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").trim();
}

function formatFact(value: string | number): string {
  if (typeof value === "string") return value;
  if (!Number.isFinite(value) || Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(6)));
}

function httpLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  try {
    const url = new URL(link);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

function renderText(n: Notification, facts: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...facts.map(([k]) => k.length));
  const lines = [
    n.summary,
    "",
    `kind: ${n.kind}`,
    ...facts.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`),
  ];
  if (n.link) lines.push("", `Details: ${n.link}`);
  lines.push("", "-- ", "bikeshare monitoring");
  return `${lines.join("\n")}\n`;
}

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function renderHtml(n: Notification, facts: readonly (readonly [string, string])[]): string {
  const rows = [["kind", n.kind] as const, ...facts]
    .map(
      ([k, v]) =>
        `<tr><th align="left" style="padding:2px 12px 2px 0">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`,
    )
    .join("\n");
  const href = httpLink(n.link);
  const link = href
    ? `<p><a href="${escapeHtml(href)}">${escapeHtml(n.link ?? href)}</a></p>`
    : n.link
      ? `<p>${escapeHtml(n.link)}</p>`
      : "";
  return [
    "<!doctype html>",
    '<html><head><meta charset="utf-8"></head><body>',
    `<p>${escapeHtml(n.summary)}</p>`,
    `<table style="border-collapse:collapse">\n${rows}\n</table>`,
    link,
    '<p style="color:#888">bikeshare monitoring</p>',
    "</body></html>",
  ]
    .filter((l) => l !== "")
    .join("\n");
}
