import { isSpanContextValid, trace } from "@opentelemetry/api";

/**
 * Structured JSON logs, one object per line on stdout, so that log shippers need no
 * parsing rules. Callers pass fields, never secrets: request bodies and headers are not logged.
 * A line written while a span is active carries its trace_id and span_id, to join logs to traces.
 */
type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function errorFields(value: unknown): unknown {
  return value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value;
}

export function createLogger(
  base: Record<string, unknown> = {},
  level: Level = (process.env.LOG_LEVEL as Level) || "info",
  write: (line: string) => void = (line) => process.stdout.write(line),
): Logger {
  const min = ORDER[level] ?? ORDER.info;
  const log =
    (lvl: Level) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (ORDER[lvl] < min) return;
      const entry: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg };
      const span = trace.getActiveSpan()?.spanContext();
      if (span && isSpanContextValid(span)) {
        entry.trace_id = span.traceId;
        entry.span_id = span.spanId;
      }
      Object.assign(entry, base);
      for (const [k, v] of Object.entries(fields)) entry[k] = errorFields(v);
      write(`${JSON.stringify(entry)}\n`);
    };
  return {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (fields) => createLogger({ ...base, ...fields }, level, write),
  };
}
