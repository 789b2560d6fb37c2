import type { AddressInfo } from "node:net";
import { SMTPServer } from "smtp-server";

/**
 * A real SMTP server on 127.0.0.1 (free port) for tests: it keeps every message it receives (envelope
 * and raw source) and parses enough MIME to read the subject and the text and HTML parts of what
 * nodemailer sends. No TLS: STARTTLS is disabled, and AUTH, when required, runs over plain text.
 */

export interface ReceivedPart {
  contentType: string;
  headers: Map<string, string>;
  /** Decoded (transfer encoding undone, UTF-8). */
  body: string;
}

export interface ReceivedMail {
  envelope: { from: string; to: string[] };
  /** The authenticated user, when the server required AUTH. */
  user?: string;
  raw: string;
  headers: Map<string, string>;
  subject: string;
  text?: string;
  html?: string;
  parts: ReceivedPart[];
}

export interface TestSmtpServer {
  host: string;
  port: number;
  messages: ReceivedMail[];
  /** Every AUTH attempt, accepted or not. */
  authAttempts: { username: string; accepted: boolean }[];
  /** Resolves once `count` messages have arrived. */
  waitForMessages(count: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  stop(): Promise<void>;
}

export interface TestSmtpOptions {
  /** Require AUTH (PLAIN or LOGIN) with exactly these credentials. */
  auth?: { user: string; password: string };
  /** The text of the 535 reply to a failed AUTH (to test that a client redacts a server echoing secrets). */
  authFailureMessage?: (username: string, password: string) => string;
}

export async function startSmtpServer(options: TestSmtpOptions = {}): Promise<TestSmtpServer> {
  const messages: ReceivedMail[] = [];
  const authAttempts: TestSmtpServer["authAttempts"] = [];
  const waiters = new Set<() => void>();
  const required = options.auth;

  const server = new SMTPServer({
    disabledCommands: required ? ["STARTTLS"] : ["STARTTLS", "AUTH"],
    authOptional: !required,
    allowInsecureAuth: true,
    authMethods: ["PLAIN", "LOGIN"],
    logger: false,
    onAuth(auth, _session, callback) {
      const accepted =
        required !== undefined && auth.username === required.user && auth.password === required.password;
      authAttempts.push({ username: auth.username ?? "", accepted });
      if (!accepted) {
        const text = options.authFailureMessage?.(auth.username ?? "", auth.password ?? "");
        callback(new Error(text ?? "Invalid username or password"));
        return;
      }
      callback(null, { user: auth.username });
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", (error) => callback(error));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        const mailFrom = session.envelope.mailFrom;
        const mail: ReceivedMail = {
          envelope: {
            from: mailFrom ? mailFrom.address : "",
            to: session.envelope.rcptTo.map((r) => r.address),
          },
          ...parseMessage(raw),
        };
        if (typeof session.user === "string") mail.user = session.user;
        messages.push(mail);
        for (const wake of waiters) wake();
        callback();
      });
    },
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Errors after start (a client that hangs up) must not crash the test process.
  server.on("error", () => undefined);
  const { port } = server.server.address() as AddressInfo;

  return {
    host: "127.0.0.1",
    port,
    messages,
    authAttempts,
    waitForMessages(count, timeoutMs = 10_000) {
      if (messages.length >= count) return Promise.resolve(messages.slice(0, count));
      return new Promise((resolve, reject) => {
        const wake = () => {
          if (messages.length < count) return;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(messages.slice(0, count));
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(new Error(`expected ${count} message(s) within ${timeoutMs} ms, got ${messages.length}`));
        }, timeoutMs);
        waiters.add(wake);
      });
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Splits a message or part into unfolded headers (lower-case names) and its body. */
function splitEntity(source: string): { headers: Map<string, string>; body: string } {
  const normalized = source.replace(/\r\n/g, "\n");
  const end = normalized.indexOf("\n\n");
  const head = end === -1 ? normalized : normalized.slice(0, end);
  const body = end === -1 ? "" : normalized.slice(end + 2);
  const headers = new Map<string, string>();
  for (const line of head.replace(/\n[ \t]+/g, " ").split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!headers.has(name)) headers.set(name, line.slice(colon + 1).trim());
  }
  return { headers, body };
}

function parameter(header: string, name: string): string | undefined {
  const match = new RegExp(`;\\s*${name}=(?:"([^"]*)"|([^;\\s]+))`, "i").exec(header);
  return match ? (match[1] ?? match[2]) : undefined;
}

function decodeQuotedPrintable(text: string): Buffer {
  const soft = text.replace(/=\n/g, "");
  const bytes: number[] = [];
  for (let i = 0; i < soft.length; i++) {
    const c = soft[i] as string;
    const hex = soft.slice(i + 1, i + 3);
    if (c === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(c, "utf8"));
    }
  }
  return Buffer.from(bytes);
}

function decodeBody(body: string, encoding: string | undefined): string {
  switch ((encoding ?? "7bit").toLowerCase()) {
    case "base64":
      return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
    case "quoted-printable":
      return decodeQuotedPrintable(body).toString("utf8");
    default:
      return body;
  }
}

/** RFC 2047 encoded words (=?UTF-8?Q?…?= and =?UTF-8?B?…?=), as nodemailer writes them. */
export function decodeHeader(value: string): string {
  return value
    .replace(/\?=\s+=\?/g, "?==?")
    .replace(/=\?([^?]+)\?([QqBb])\?([^?]*)\?=/g, (_all, _charset: string, kind: string, text: string) =>
      kind.toUpperCase() === "B"
        ? Buffer.from(text, "base64").toString("utf8")
        : decodeQuotedPrintable(text.replace(/_/g, " ")).toString("utf8"),
    );
}

function leafParts(source: string): ReceivedPart[] {
  const { headers, body } = splitEntity(source);
  const contentType = headers.get("content-type") ?? "text/plain";
  const boundary = parameter(contentType, "boundary");
  if (contentType.toLowerCase().startsWith("multipart/") && boundary) {
    const sections = body.split(`--${boundary}`);
    // sections[0] is the preamble; the one starting with "--" is the epilogue after the closing delimiter.
    return sections
      .slice(1)
      .filter((s) => !s.startsWith("--"))
      .flatMap((s) => leafParts(s.replace(/^\n/, "")));
  }
  const decoded = decodeBody(body, headers.get("content-transfer-encoding"));
  return [
    { contentType: contentType.split(";")[0]?.trim().toLowerCase() ?? "text/plain", headers, body: decoded },
  ];
}

export function parseMessage(raw: string): Omit<ReceivedMail, "envelope" | "user"> {
  const { headers } = splitEntity(raw);
  const parts = leafParts(raw);
  const text = parts.find((p) => p.contentType === "text/plain")?.body;
  const html = parts.find((p) => p.contentType === "text/html")?.body;
  return {
    raw,
    headers,
    subject: decodeHeader(headers.get("subject") ?? ""),
    parts,
    ...(text !== undefined ? { text } : {}),
    ...(html !== undefined ? { html } : {}),
  };
}
