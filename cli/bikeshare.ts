#!/usr/bin/env node
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { BikeshareError } from "../core/errors.js";
import { MonitorService } from "../gen/bikeshare/v1/monitor_pb.js";
import {
  AliasChangeSchema,
  ModelVersionSchema,
  RegistryService,
  RunSchema,
  RunStatus,
} from "../gen/bikeshare/v1/registry_pb.js";
import { JobSchema, JobState, TrainService } from "../gen/bikeshare/v1/train_pb.js";
import { readActualsFile } from "../pipelines/data/actuals-file.js";
import { configFromEnv } from "../services/config.js";
import { MODEL_FAMILY_NAMES, modelFamilyOf } from "../services/model-family.js";
import { clientFor, connection, table as plainTable } from "./client.js";
import { notifyCommand } from "./commands/notify.js";
import { replayCommand } from "./commands/replay.js";
import { scoreCommand } from "./commands/score.js";
import { serveCommand } from "./commands/serve.js";
import { workerCommand } from "./commands/worker.js";

/**
 * A table whose cells show control characters escaped: a run name, tag or model name holding ESC or BEL
 * would otherwise drive the operator's terminal (colours, title, bell) instead of printing.
 */
function table(headers: string[], rows: string[][]): string {
  const shown = (cell: string) =>
    Array.from(cell, (c) => {
      const code = c.charCodeAt(0);
      return code < 32 || (code >= 127 && code < 160) ? `\\u${code.toString(16).padStart(4, "0")}` : c;
    }).join("");
  return plainTable(
    headers,
    rows.map((row) => row.map(shown)),
  );
}

const USAGE = `bikeshare — hourly bike-sharing demand forecasting

Usage:
  bikeshare serve [--role all|control|predict] [--workers N]
                                        Serve every protocol on PORT (default 8080); trains first if no model is registered.
                                        --role (BIKESHARE_ROLE): all (default), control, or predict (a stateless replica;
                                        needs BIKESHARE_DATABASE_URL). --workers N (BIKESHARE_WORKERS): N processes on one
                                        port, 0 = one per core; above 1 needs BIKESHARE_DATABASE_URL (docs/deployment.md)
  bikeshare train [--families gbtree,random_forest,linear] [--trials N] [--from DATE] [--until DATE] [--reason TEXT]
                                        Start a training job on the server and follow its progress
  bikeshare models list                 Versions of the model with their aliases and test RMSE
  bikeshare models promote VERSION --reason TEXT [--alias production] [--force]
  bikeshare models history [--alias NAME]
  bikeshare runs search "FILTER" [--order-by "metrics.valid_rmse ASC"]
                                        e.g. "metrics.valid_rmse < 65 and tags.family = 'gbtree'"
  bikeshare actuals FILE                Report observed counts (CSV, Parquet or Arrow; columns hour or dteday+hr, and cnt)
  bikeshare replay [--train-until 2011-12-31] [--from 2012-01-01] [--to 2012-12-31] [--out docs/replay]
                                        Replay the hours in order through a fresh server, with and without
                                        automatic retraining; writes a timeline, a chart and a summary.
                                        With BIKESHARE_DATABASE_URL, each server gets a new database on that
                                        PostgreSQL server (the user needs CREATEDB), dropped at its end

  bikeshare worker                      Run queued jobs from BullMQ on REDIS_URL (WORKER_CONCURRENCY, WORKER_METRICS_PORT)
  bikeshare notify --type deployment|training|drift [--model-version V] [--alias NAME] [--job-id ID]
                   [--state succeeded|failed|cancelled] [--drift-share 0..1] [--report-id ID] [--reason TEXT]
                   [--message TEXT] [--link URL]
                                        E-mail a templated message (text and HTML) through SMTP_* to ALERT_EMAIL_TO
  bikeshare score --in FILE --out FILE [--invalid FILE] [--model-version V] [--remote] [--chunk-size N] [--threads N]
                                        Score an Arrow IPC, Parquet or CSV file into Arrow IPC (.arrow, .arrows) or
                                        Parquet, locally with the registry's production ONNX model or, with --remote,
                                        through PredictStream; invalid rows go to OUT.invalid.csv with row and reason;
                                        --threads N predicts N chunks at once (default 1)

Options: --json prints machine-readable output. Client commands talk to BIKESHARE_URL (default
http://127.0.0.1:$PORT) with BIKESHARE_TOKEN, or the local admin token the server wrote on first start.`;

/** A command line that cannot run as given: printed with the usage, exit status 2. */
class UsageError extends BikeshareError {
  constructor(message: string) {
    super("invalid_argument", message);
    this.name = "UsageError";
  }
}

function dateArg(name: string, value: string | undefined) {
  if (value === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value))
    throw new UsageError(`--${name} must be a date YYYY-MM-DD, got ${value}`);
  return timestampFromDate(new Date(`${value}T00:00:00Z`));
}

const twoDecimals = (x: number | undefined) => (x === undefined ? "" : x.toFixed(2));

async function train(values: Record<string, string | boolean | undefined>): Promise<number> {
  const client = clientFor(TrainService);
  const families = String(values.families ?? "")
    .split(",")
    .filter((f) => f !== "")
    .map((f) => {
      const family = modelFamilyOf(f);
      if (family === undefined)
        throw new UsageError(`unknown family ${f}; use ${MODEL_FAMILY_NAMES.join(", ")}`);
      return family;
    });
  const trials = values.trials === undefined ? undefined : Number(values.trials);
  if (trials !== undefined && !(Number.isInteger(trials) && trials >= 0))
    throw new UsageError(`--trials must be a non-negative integer, got ${values.trials}`);
  const { job } = await client.startTraining({
    families,
    searchTrials: trials,
    dataFrom: dateArg("from", values.from as string | undefined),
    dataUntil: dateArg("until", values.until as string | undefined),
    reason: (values.reason as string | undefined) ?? "manual: bikeshare train",
  });
  if (!job) throw new Error("the server returned no job");
  const tty = process.stderr.isTTY && !values.json;
  if (!values.json) console.error(`job ${job.id} queued`);
  let lastStage = "";
  for await (const e of client.watchJob({ jobId: job.id })) {
    if (tty && e.candidate) {
      process.stderr.write(
        `\r\x1b[K${e.candidate} round ${e.round}  train ${twoDecimals(e.trainMetric)}  valid ${twoDecimals(e.validMetric)}`,
      );
    } else if (!values.json && (e.stage !== lastStage || !e.candidate)) {
      if (tty) process.stderr.write("\r\x1b[K");
      console.error(`[${e.stage}] ${e.message}`);
    }
    lastStage = e.stage;
  }
  if (tty) process.stderr.write("\r\x1b[K");
  const { job: done } = await client.getJob({ jobId: job.id });
  if (!done) throw new Error("the job disappeared");
  if (values.json) console.log(JSON.stringify(toJson(JobSchema, done)));
  else {
    console.log(
      done.state === JobState.SUCCEEDED
        ? `version ${done.modelVersion} registered${done.promoted ? " and promoted to production" : " as staging (production kept: it was not beaten)"}`
        : `job ${JobState[done.state].toLowerCase()}: ${done.error}`,
    );
  }
  return done.state === JobState.SUCCEEDED ? 0 : 1;
}

async function models(
  action: string | undefined,
  args: string[],
  values: Record<string, string | boolean | undefined>,
): Promise<number> {
  const client = clientFor(RegistryService);
  const modelName = configFromEnv().modelName;
  switch (action) {
    case "list": {
      const { versions } = await client.listModelVersions({ modelName });
      if (values.json) console.log(JSON.stringify(versions.map((v) => toJson(ModelVersionSchema, v))));
      else {
        console.log(
          table(
            ["version", "aliases", "created", "test_rmse", "split_a_rmse", "run"],
            versions.map((v) => [
              v.version,
              v.aliases.join(","),
              v.createdAt ? timestampDate(v.createdAt).toISOString().slice(0, 19) : "",
              twoDecimals(v.metrics.test_rmse),
              twoDecimals(v.metrics.split_a_test_rmse),
              v.runId,
            ]),
          ),
        );
      }
      return 0;
    }
    case "promote": {
      const [version] = args;
      const reason = values.reason as string | undefined;
      if (!version) throw new UsageError("models promote needs a VERSION");
      if (!reason) throw new UsageError("models promote needs --reason (it goes in the audit log)");
      const { change } = await client.setAlias({
        modelName,
        alias: (values.alias as string | undefined) ?? "production",
        version,
        reason,
        force: Boolean(values.force),
      });
      if (values.json) console.log(JSON.stringify(change ? toJson(AliasChangeSchema, change) : {}));
      else
        console.log(
          `${change?.alias}: ${change?.fromVersion || "(none)"} -> ${change?.toVersion}${change?.forced ? " (forced)" : ""}`,
        );
      return 0;
    }
    case "history": {
      const { changes } = await client.listAliasHistory({
        modelName,
        alias: (values.alias as string | undefined) ?? "",
      });
      if (values.json) console.log(JSON.stringify(changes.map((c) => toJson(AliasChangeSchema, c))));
      else {
        console.log(
          table(
            ["time", "alias", "from", "to", "actor", "forced", "reason"],
            changes.map((c) => [
              c.time ? timestampDate(c.time).toISOString().slice(0, 19) : "",
              c.alias,
              c.fromVersion,
              c.toVersion,
              c.actor,
              c.forced ? "yes" : "",
              c.reason,
            ]),
          ),
        );
      }
      return 0;
    }
    default:
      throw new UsageError("models needs one of: list, promote, history");
  }
}

async function runs(
  action: string | undefined,
  args: string[],
  values: Record<string, string | boolean | undefined>,
): Promise<number> {
  if (action !== "search") throw new UsageError('runs needs: search "FILTER"');
  const client = clientFor(RegistryService);
  const orderBy = values["order-by"] as string | undefined;
  const { runs: found } = await client.searchRuns({
    filter: args[0] ?? "",
    orderBy: orderBy ? [orderBy] : [],
    pageSize: 100,
  });
  if (values.json) console.log(JSON.stringify(found.map((r) => toJson(RunSchema, r))));
  else {
    console.log(
      table(
        ["run", "name", "status", "family", "objective", "valid_rmse", "test_rmse"],
        found.map((r) => [
          r.id,
          r.name,
          RunStatus[r.status]?.toLowerCase() ?? String(r.status),
          r.tags.family ?? "",
          r.tags.objective ?? "",
          twoDecimals(r.metrics.valid_rmse),
          twoDecimals(r.metrics.test_rmse),
        ]),
      ),
    );
  }
  return 0;
}

async function actuals(
  path: string | undefined,
  values: Record<string, string | boolean | undefined>,
): Promise<number> {
  if (!path) throw new UsageError("actuals needs a FILE");
  const rows = await readActualsFile(path);
  const client = clientFor(MonitorService);
  let accepted = 0;
  let unmatched = 0;
  for (let i = 0; i < rows.length; i += 10_000) {
    const res = await client.reportActuals({
      actuals: rows.slice(i, i + 10_000).map((r) => ({ hour: timestampFromMs(r.hourStart), cnt: r.cnt })),
    });
    accepted += res.accepted;
    unmatched += res.unmatched;
  }
  if (values.json) console.log(JSON.stringify({ accepted, unmatched }));
  else console.log(`${accepted} hours reported; ${unmatched} have no logged prediction yet`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      families: { type: "string" },
      trials: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      until: { type: "string" },
      reason: { type: "string" },
      alias: { type: "string" },
      force: { type: "boolean" },
      "order-by": { type: "string" },
      "train-until": { type: "string" },
      type: { type: "string" },
      "model-version": { type: "string" },
      "job-id": { type: "string" },
      state: { type: "string" },
      "drift-share": { type: "string" },
      "report-id": { type: "string" },
      message: { type: "string" },
      link: { type: "string" },
      in: { type: "string" },
      invalid: { type: "string" },
      remote: { type: "boolean" },
      "chunk-size": { type: "string" },
      threads: { type: "string" },
      out: { type: "string" },
      json: { type: "boolean" },
      role: { type: "string" },
      workers: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, action, ...rest] = positionals;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  switch (command) {
    case "serve":
      return serveCommand(values, (message) => new UsageError(message));
    case "train":
      return train(values);
    case "models":
      return models(action, rest, values);
    case "runs":
      return runs(action, rest, values);
    case "actuals":
      return actuals(action, values);
    case "replay":
      return replayCommand(values);
    case "worker":
      return workerCommand();
    case "notify":
      return notifyCommand(values, (message) => new UsageError(message));
    case "score":
      return scoreCommand(values, (message) => new UsageError(message));
    default:
      throw new UsageError(
        command === undefined ? "a command is needed" : `unknown command ${JSON.stringify(command)}`,
      );
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`bikeshare: ${error.message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else if (error instanceof ConnectError && error.code === Code.Unavailable) {
      console.error(
        `bikeshare: cannot reach the server at ${connection().baseUrl} (start it with \`make start\`): ${error.rawMessage}`,
      );
      process.exitCode = 1;
    } else {
      console.error(
        `bikeshare: ${error instanceof ConnectError ? `${Code[error.code]}: ${error.rawMessage}` : error instanceof Error ? error.message : String(error)}`,
      );
      process.exitCode = 1;
    }
  },
);
