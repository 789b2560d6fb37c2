import { spawn } from "node:child_process";
import { appendFile, copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type LoggedPrediction,
  PredictionLog,
  type SpoolReplay,
} from "../../services/monitor/prediction-log.js";
import { decodeRecords, encodeRecord } from "../../services/monitor/prediction-spool.js";
import { Database, type SqlDatabase } from "../../services/storage/database.js";
import { BACKENDS } from "../helpers/backends.js";

const ROOT = join(import.meta.dirname, "../..");
const RECORD = {
  season: 1,
  yr: 0,
  mnth: 1,
  hr: 0,
  holiday: 0,
  weekday: 6,
  workingday: 0,
  weathersit: 1,
  temp: 0.24,
  atemp: 0.2879,
  hum: 0.81,
  windspeed: 0,
};
const entry = (i: number, row = 0): LoggedPrediction => ({
  requestId: `r${i}`,
  row,
  modelVersion: "1",
  record: RECORD,
  prediction: i,
  servedAt: 1_700_000_000_000 + i,
});

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-spool-replay-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The spool's segments, without the next one's zero-filled file that it keeps ready. */
const segments = async (spoolDir: string) => (await readdir(spoolDir)).filter((n) => n !== "spare.spool.tmp");

async function keys(db: SqlDatabase): Promise<string[]> {
  const rows = await db.all<{ k: string }>(
    `SELECT request_id || '/' || row_index AS k FROM predictions ORDER BY request_id, row_index`,
  );
  return rows.map((r) => r.k);
}

describe("spool records", () => {
  it("reads whole records and stops at a torn or corrupt one", () => {
    const a = encodeRecord('["a"]');
    const b = encodeRecord('["bb"]');
    expect(decodeRecords(Buffer.concat([a, b]))).toEqual({
      payloads: ['["a"]', '["bb"]'],
      validBytes: a.length + b.length,
    });
    // Cut inside the second record's payload, and inside its header.
    expect(decodeRecords(Buffer.concat([a, b.subarray(0, b.length - 1)]))).toEqual({
      payloads: ['["a"]'],
      validBytes: a.length,
    });
    expect(decodeRecords(Buffer.concat([a, b.subarray(0, 5)]))).toEqual({
      payloads: ['["a"]'],
      validBytes: a.length,
    });
    const flipped = Buffer.from(b);
    flipped.writeUInt8(flipped.readUInt8(flipped.length - 2) ^ 1, flipped.length - 2);
    expect(decodeRecords(Buffer.concat([a, flipped, a]))).toEqual({
      payloads: ['["a"]'],
      validBytes: a.length,
    });
  });
});

describe("prediction log spool", () => {
  it.each(["fdatasync", "none"])(
    "keeps every row whose log() resolved when the process is SIGKILLed before any database write (sync: %s)",
    async (sync) => {
      const dbPath = join(dir, `kill-${sync}.duckdb`);
      const spoolDir = join(dir, `kill-${sync}.spool`);
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", join(ROOT, "tests/helpers/spool-kill-child.ts"), dbPath, spoolDir, "400", sync],
          { stdio: ["ignore", "pipe", "inherit"] },
        );
        let text = "";
        child.stdout.on("data", (d: Buffer) => {
          text += d.toString();
        });
        child.on("error", reject);
        child.on("exit", (code, signal) =>
          signal === "SIGKILL"
            ? resolve(text)
            : reject(new Error(`child ended with ${code ?? signal}: ${text}`)),
        );
      });
      const [acknowledged, depth] = out.trim().split(" ").map(Number);
      // 400 calls of 1–4 rows: 1,000 rows, all still in memory when the process died.
      expect(acknowledged).toBe(1000);
      expect(depth).toBe(1000);

      const db = await Database.open(dbPath);
      try {
        expect(await keys(db)).toEqual([]);
        const replays: SpoolReplay[] = [];
        const log = await PredictionLog.open(db, { spoolDir, onReplayed: (r) => replays.push(r) });
        expect(replays.reduce((n, r) => n + r.inserted, 0)).toBe(1000);
        expect(replays.every((r) => r.tornBytes === 0)).toBe(true);
        const [row] = await db.all<{ n: number; requests: number; temps: number }>(
          `SELECT count(*)::INTEGER AS n, count(DISTINCT request_id)::INTEGER AS requests,
                count(DISTINCT temp)::INTEGER AS temps FROM predictions`,
        );
        expect(row).toEqual({ n: 1000, requests: 400, temps: 400 });
        await log.close();
        // Replayed segments are removed; a clean close leaves nothing behind either.
        expect(await readdir(spoolDir)).toEqual([]);
      } finally {
        await db.close();
      }
    },
    120_000,
  );

  describe.each(BACKENDS)("on $name", (backend) => {
    it("replays every value exactly, skips rows the table already holds, and skips a torn last record", async () => {
      const location = await backend.create(dir);
      const spoolDir = join(dir, `replay-${backend.name}.spool`);
      const exact: LoggedPrediction = {
        requestId: 'r"q"',
        row: 2,
        modelVersion: "7",
        record: { ...RECORD, temp: 0.1 + 0.2, hum: 1 / 3, windspeed: 5e-324 },
        prediction: 123.456789012345,
        servedAt: 1_700_000_000_123,
        hourStart: Date.UTC(2012, 6, 4, 21),
      };
      const db = await backend.open(location);
      try {
        // r0..r4 were written to the table before the "crash"; the spool still holds r0..r9 and `exact`.
        const earlier = await PredictionLog.open(db);
        await earlier.log([0, 1, 2, 3, 4].map((i) => entry(i)));
        await earlier.close();
        await mkdir(spoolDir);
        const segment = join(spoolDir, "000000000007.spool");
        await writeFile(
          segment,
          Buffer.concat([
            encodeRecord(JSON.stringify([0, 1, 2, 3, 4].map((i) => entry(i)))),
            encodeRecord(JSON.stringify([entry(5), entry(6, 0), entry(6, 1)])),
            encodeRecord(JSON.stringify([7, 8, 9].map((i) => entry(i)).concat(exact))),
          ]),
        );
        // A write the kill cut short: its caller was never answered.
        const torn = encodeRecord(JSON.stringify([entry(99)]));
        await appendFile(segment, torn.subarray(0, torn.length - 3));

        const replays: SpoolReplay[] = [];
        const log = await PredictionLog.open(db, { spoolDir, onReplayed: (r) => replays.push(r) });
        expect(replays).toEqual([{ path: segment, entries: 12, inserted: 7, tornBytes: torn.length - 3 }]);
        expect(await keys(db)).toEqual([
          'r"q"/2',
          ...[0, 1, 2, 3, 4, 5].map((i) => `r${i}/0`),
          "r6/0",
          "r6/1",
          ...[7, 8, 9].map((i) => `r${i}/0`),
        ]);
        const [stored] = await db.all<Record<string, unknown>>(
          `SELECT model_version, epoch_ms(served_at) AS served, epoch_ms(hour) AS hour, temp, hum, windspeed, prediction
           FROM predictions WHERE request_id = 'r"q"'`,
        );
        expect(stored).toEqual({
          model_version: "7",
          served: 1_700_000_000_123n,
          hour: BigInt(exact.hourStart as number),
          temp: 0.1 + 0.2,
          hum: 1 / 3,
          windspeed: 5e-324,
          prediction: 123.456789012345,
        });
        // New entries go to a new segment, never after the torn tail (which is gone with its segment).
        await log.log([entry(10)]);
        expect(await segments(spoolDir)).toEqual(["000000000008.spool"]);
        await log.close();
        expect(await readdir(spoolDir)).toEqual([]);
        expect((await keys(db)).length).toBe(13);

        // Opening again replays nothing and adds nothing.
        const again = await PredictionLog.open(db, { spoolDir, onReplayed: (r) => replays.push(r) });
        await again.close();
        expect(replays).toHaveLength(1);
        expect((await keys(db)).length).toBe(13);
      } finally {
        await db.close();
      }
    });
  });

  it("removes a segment only once its entries are committed, and keeps it when the database refuses them", async () => {
    const dbPath = join(dir, "release.duckdb");
    const spoolDir = join(dir, "release.spool");
    const db = await Database.open(dbPath);
    try {
      const errors: unknown[] = [];
      const log = await PredictionLog.open(db, {
        spoolDir,
        flushIntervalMs: 60_000,
        onError: (e) => errors.push(e),
      });
      await log.log([entry(1)]);
      expect(await segments(spoolDir)).toEqual(["000000000001.spool"]);
      await log.flush();
      expect(await segments(spoolDir)).toEqual([]);
      expect(await keys(db)).toEqual(["r1/0"]);

      // The table is gone: the insert fails, the entry is counted as dropped, and its segment stays.
      await db.run(`ALTER TABLE predictions RENAME TO predictions_away`);
      await log.log([entry(2)]);
      await log.flush();
      expect(log.dropped).toBe(1);
      expect(errors).toHaveLength(1);
      expect(await segments(spoolDir)).toEqual(["000000000002.spool"]);
      await db.run(`ALTER TABLE predictions_away RENAME TO predictions`);
      await log.log([entry(3)]);
      await log.close();
      // Only the segment of the committed entry went; the next start writes the refused one.
      expect(await segments(spoolDir)).toEqual(["000000000002.spool"]);
      expect(await keys(db)).toEqual(["r1/0", "r3/0"]);
      const next = await PredictionLog.open(db, { spoolDir });
      await next.close();
      expect(await keys(db)).toEqual(["r1/0", "r2/0", "r3/0"]);
      expect(await readdir(spoolDir)).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it("starts a new segment at the timer's flushes only every sealIntervalMs, and at every explicit flush", async () => {
    const dbPath = join(dir, "seal.duckdb");
    const spoolDir = join(dir, "seal.spool");
    const db = await Database.open(dbPath);
    try {
      const log = await PredictionLog.open(db, { spoolDir, flushIntervalMs: 5, sealIntervalMs: 60_000 });
      // Each entry is written by its own timer flush: none of them may cut a new segment (each cut puts
      // a close, link, unlink and directory sync in front of the answers waiting for the spool).
      for (let i = 1; i <= 4; i++) {
        await log.log([entry(i)]);
        await expect.poll(() => log.written, { timeout: 10_000 }).toBe(i);
      }
      expect(await segments(spoolDir)).toEqual(["000000000001.spool"]);
      expect(await keys(db)).toEqual(["r1/0", "r2/0", "r3/0", "r4/0"]);
      // A later start replays the open segment of committed entries without a duplicate.
      const replays: SpoolReplay[] = [];
      await mkdir(join(dir, "seal-copy.spool"));
      await copyFile(
        join(spoolDir, "000000000001.spool"),
        join(dir, "seal-copy.spool", "000000000001.spool"),
      );
      const copy = await PredictionLog.open(db, {
        spoolDir: join(dir, "seal-copy.spool"),
        onReplayed: (r) => replays.push(r),
      });
      await copy.close();
      expect(replays.map((r) => [r.entries, r.inserted])).toEqual([[4, 0]]);
      // An explicit flush (a monitoring check) cuts the segment and removes what is committed.
      await log.log([entry(5)]);
      await log.flush();
      expect(await segments(spoolDir)).toEqual([]);
      await log.close();
      expect(await keys(db)).toEqual(["r1/0", "r2/0", "r3/0", "r4/0", "r5/0"]);
    } finally {
      await db.close();
    }
  });

  it("keeps a segment whose entries the database refused at a flush that did not cut it", async () => {
    const dbPath = join(dir, "seal-refused.duckdb");
    const spoolDir = join(dir, "seal-refused.spool");
    const db = await Database.open(dbPath);
    try {
      const log = await PredictionLog.open(db, { spoolDir, flushIntervalMs: 5, sealIntervalMs: 60_000 });
      await db.run(`ALTER TABLE predictions RENAME TO predictions_away`);
      await log.log([entry(1)]);
      await expect.poll(() => log.dropped, { timeout: 10_000 }).toBe(1);
      await db.run(`ALTER TABLE predictions_away RENAME TO predictions`);
      await log.log([entry(2)]);
      await log.close();
      // The refused entry's segment stays although a later flush committed the rest of it.
      expect(await segments(spoolDir)).toEqual(["000000000001.spool"]);
      const next = await PredictionLog.open(db, { spoolDir });
      await next.close();
      expect(await keys(db)).toEqual(["r1/0", "r2/0"]);
    } finally {
      await db.close();
    }
  });

  it("serves on while the spool cannot be written, counts those entries, still stores them, and recovers", async () => {
    const dbPath = join(dir, "broken.duckdb");
    const spoolDir = join(dir, "broken.spool");
    const db = await Database.open(dbPath);
    try {
      let unspooled = 0;
      const errors: Error[] = [];
      const log = await PredictionLog.open(db, {
        spoolDir,
        flushIntervalMs: 60_000,
        onUnspooled: (n) => {
          unspooled += n;
        },
        onError: (e) => errors.push(e as Error),
      });
      await log.log([entry(1)]);
      await log.flush();
      // The folder is replaced by a plain file: the next segment cannot be created.
      await rename(spoolDir, `${spoolDir}.away`);
      await writeFile(spoolDir, "");
      await log.log([entry(2), entry(2, 1)]);
      expect(unspooled).toBe(2);
      expect(log.unspooled).toBe(2);
      expect(errors.map((e) => e.message)).toEqual([
        expect.stringContaining(`prediction spool ${spoolDir} cannot be written (ENOTDIR`),
      ]);
      await rm(spoolDir);
      await rename(`${spoolDir}.away`, spoolDir);
      await log.log([entry(3)]);
      expect(unspooled).toBe(2);
      expect(await segments(spoolDir)).toEqual(["000000000003.spool"]);
      await log.close();
      expect(await keys(db)).toEqual(["r1/0", "r2/0", "r2/1", "r3/0"]);
      expect(await readdir(spoolDir)).toEqual([]);
    } finally {
      await db.close();
    }
  });
});
