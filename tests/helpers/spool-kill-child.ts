/**
 * Logs predictions through a spooled PredictionLog, waits for each `log` to resolve (what a handler
 * waits for before it answers), prints how many rows were acknowledged, then SIGKILLs itself before the
 * database write (its interval is a minute away).
 * Usage: tsx spool-kill-child.ts <dbPath> <spoolDir> <calls> <fdatasync|none>
 */
import { PredictionLog } from "../../services/monitor/prediction-log.js";
import { Database } from "../../services/storage/database.js";
import { SUMMER_EVENING } from "./hour-csv.js";

const [dbPath, spoolDir, callsArg, sync] = process.argv.slice(2);
const calls = Number(callsArg);
if (!dbPath || !spoolDir || !(calls > 0) || (sync !== "fdatasync" && sync !== "none")) {
  throw new Error("usage: spool-kill-child.ts <dbPath> <spoolDir> <calls> <fdatasync|none>");
}

const db = await Database.open(dbPath);
const log = await PredictionLog.open(db, {
  spoolDir,
  spoolSync: sync === "fdatasync",
  flushIntervalMs: 60_000,
});
const record = SUMMER_EVENING;
let acknowledged = 0;
// Concurrent calls, as concurrent requests make them: they share group commits.
await Promise.all(
  Array.from({ length: calls }, async (_, call) => {
    const rows = (call % 4) + 1;
    await log.log(
      Array.from({ length: rows }, (_, row) => ({
        requestId: `k${call}`,
        row,
        modelVersion: "1",
        record: { ...record, temp: call / 1e4 },
        prediction: call + row / 10,
        servedAt: 1_700_000_000_000 + call,
      })),
    );
    acknowledged += rows;
  }),
);
process.stdout.write(`${acknowledged} ${log.depth}\n`, () => process.kill(process.pid, "SIGKILL"));
