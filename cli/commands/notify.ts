import { configFromEnv } from "../../services/config.js";
import {
  deploymentNotification,
  driftNotification,
  type Notification,
  Notifier,
  smtpFromEnv,
  trainingNotification,
} from "../../services/monitor/notifier.js";
import { createLogger } from "../../services/observability/log.js";

export const NOTIFY_TYPES = ["deployment", "training", "drift"] as const;
const JOB_STATES = ["succeeded", "failed", "cancelled"];

type Values = Record<string, string | boolean | undefined>;

/**
 * `bikeshare notify --type deployment|training|drift …`: one templated e-mail (text and HTML)
 * through the SMTP_* settings to ALERT_EMAIL_TO, for CI/CD workflows and DAGs that deploy or
 * train outside the server. Flags are checked before anything is sent; `usageError` makes the
 * error that the CLI reports with its usage text and exit code 2. Nothing here prints a setting.
 */
export async function notifyCommand(values: Values, usageError: (message: string) => Error): Promise<number> {
  const text = (name: string): string | undefined => {
    const value = values[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value.trim() === "") throw usageError(`--${name} needs a value`);
    return value.trim();
  };
  const required = (name: string, what: string): string => {
    const value = text(name);
    if (value === undefined) throw usageError(`notify --type ${values.type} needs --${name} ${what}`);
    return value;
  };
  const version = (value: string): string => {
    if (!/^[1-9][0-9]{0,8}$/.test(value))
      throw usageError(`--model-version must be a positive integer, got ${JSON.stringify(value)}`);
    return value;
  };

  const type = text("type");
  if (type === undefined) throw usageError(`notify needs --type ${NOTIFY_TYPES.join("|")}`);
  if (!(NOTIFY_TYPES as readonly string[]).includes(type)) {
    throw usageError(`--type must be one of ${NOTIFY_TYPES.join(", ")}, got ${JSON.stringify(type)}`);
  }
  const link = text("link");
  if (link !== undefined && !/^https?:\/\/\S+$/.test(link))
    throw usageError(`--link must be an http:// or https:// URL, got ${JSON.stringify(link)}`);
  const message = text("message");

  const config = configFromEnv();
  let notification: Notification;
  if (type === "deployment") {
    const reason = text("reason");
    notification = deploymentNotification({
      modelName: config.modelName,
      version: version(required("model-version", "VERSION")),
      alias: text("alias") ?? "production",
      ...(reason ? { reason } : {}),
    });
  } else if (type === "training") {
    const state = required("state", JOB_STATES.join("|"));
    if (!JOB_STATES.includes(state))
      throw usageError(`--state must be one of ${JOB_STATES.join(", ")}, got ${JSON.stringify(state)}`);
    const modelVersion = text("model-version");
    const reason = text("reason");
    notification = trainingNotification({
      jobId: required("job-id", "ID"),
      state,
      ...(modelVersion ? { modelVersion: version(modelVersion) } : {}),
      ...(reason ? { reason } : {}),
    });
  } else {
    const share = text("drift-share");
    const driftShare = share === undefined ? undefined : Number(share);
    if (driftShare !== undefined && !(driftShare >= 0 && driftShare <= 1))
      throw usageError(`--drift-share must be a number between 0 and 1, got ${JSON.stringify(share)}`);
    const reportId = text("report-id");
    const reportLink = reportId ? `${config.publicUrl}/reports/${encodeURIComponent(reportId)}` : undefined;
    notification = driftNotification({
      modelVersion: version(required("model-version", "VERSION")),
      ...(driftShare !== undefined ? { driftShare } : {}),
      ...(reportLink ? { link: reportLink } : {}),
    });
  }
  if (message) notification.summary = message;
  if (link) notification.link = link;

  const smtp = smtpFromEnv();
  if (!smtp) throw new Error("SMTP_HOST is not set: notify sends through SMTP_HOST to ALERT_EMAIL_TO");
  // The Notifier's errors are already redacted and are printed by the CLI; its log lines would repeat them.
  const notifier = new Notifier(
    smtp,
    createLogger({}, "error", () => {}),
  );
  try {
    const { messageId } = await notifier.send(notification);
    if (values.json) {
      console.log(
        JSON.stringify({ type, subject: notification.subject, recipients: smtp.to.length, messageId }),
      );
    } else {
      console.log(`${type} e-mail sent to ${smtp.to.length} recipient(s): ${notification.subject}`);
    }
    return 0;
  } finally {
    notifier.close();
  }
}
