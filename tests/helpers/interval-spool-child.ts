/**
 * Logs two predictions, one with an interval and one without, through a spooled PredictionLog, waits
 * until the spool holds them (when a handler answers), then SIGKILLs itself before the database write.
 * Usage: tsx interval-spool-child.ts <dbPath> <spoolDir>
 */
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { Database } from "../../services/storage/database.js";
import { SUMMER_EVENING } from "./hour-csv.js";

const [dbPath, spoolDir] = process.argv.slice(2);
if (!dbPath || !spoolDir) throw new Error("usage: interval-spool-child.ts <dbPath> <spoolDir>");

const db = await Database.open(dbPath);
const log = await PredictionLog.open(db, { spoolDir, flushIntervalMs: 60_000 });
const base = {
  row: 0,
  modelVersion: "1",
  record: SUMMER_EVENING,
  prediction: 300,
  servedAt: 1_700_000_000_000,
};
await log.log([{ ...base, requestId: "with", lower: 250.5, upper: 361.25, intervalLevel: 0.8 }]);
await log.log([{ ...base, requestId: "without" }]);
process.stdout.write(`${log.depth}\n`, () => process.kill(process.pid, "SIGKILL"));
