import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRecords, encodeRecord, PredictionSpool } from "../../services/monitor/prediction-spool.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bikeshare-spool-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const segments = async (d: string) => (await readdir(d)).filter((n) => /^\d{12}\.spool$/.test(n)).sort();

describe("zero-filled segments", () => {
  it("reads records up to the zero-filled space, which is not a torn tail", () => {
    const a = encodeRecord('["a"]');
    const padded = Buffer.concat([a, Buffer.alloc(4096)]);
    expect(decodeRecords(padded)).toEqual({ payloads: ['["a"]'], validBytes: padded.length });
    // A record cut by a kill, then zeros: the cut record and what follows it are torn.
    const b = encodeRecord('["bb"]');
    const torn = Buffer.concat([a, b.subarray(0, b.length - 2), Buffer.alloc(64)]);
    expect(decodeRecords(torn)).toEqual({ payloads: ['["a"]'], validBytes: a.length });
    expect(() => encodeRecord("")).toThrow(/cannot be empty/);
  });

  it("writes into a zero-filled file made ready ahead, and a restart reads every record back", async () => {
    const d = join(dir, "prealloc");
    const { spool } = await PredictionSpool.open(d);
    // The first segment is made on demand; the second is the spare made while the first was in use.
    expect(await spool.append(encodeRecord('["first"]'))).toBeUndefined();
    spool.seal();
    const payloads = Array.from({ length: 50 }, (_, i) => `["p${i}"]`);
    const results = await Promise.all(payloads.map((p) => spool.append(encodeRecord(p))));
    expect(results.every((r) => r === undefined)).toBe(true);
    const [first, second] = await segments(d);
    expect(second).toBeDefined();
    const secondBytes = await readFile(join(d, second as string));
    const written = payloads.reduce((n, p) => n + encodeRecord(p).length, 0);
    // Zero-filled ahead: larger than what was written, and only zeros after the records.
    expect(secondBytes.length).toBeGreaterThanOrEqual(64 * 1024);
    expect(secondBytes.subarray(written).every((byte) => byte === 0)).toBe(true);
    await spool.close();
    expect(await readdir(d)).not.toContain("spare.spool.tmp");

    const { spool: again, left } = await PredictionSpool.open(d);
    expect(left.map((s) => s.payloads)).toEqual([['["first"]'], payloads]);
    expect(left.every((s) => s.tornBytes === 0)).toBe(true);
    expect(first).toBeDefined();
    await again.close();
  });

  it("gives back the unused space of segments kept for the next start", async () => {
    const d = join(dir, "keep");
    const { spool } = await PredictionSpool.open(d);
    await spool.append(encodeRecord('["a"]'));
    await spool.keep(spool.seal());
    await spool.append(encodeRecord('["b"]'));
    const sealed = spool.seal();
    await spool.keep(sealed);
    for (const name of await segments(d)) {
      expect((await stat(join(d, name))).size).toBe(encodeRecord('["a"]').length);
    }
    await spool.close();
    const { left, spool: again } = await PredictionSpool.open(d);
    expect(left.map((s) => s.payloads)).toEqual([['["a"]'], ['["b"]']]);
    await again.close();
  });

  it("counts only written bytes as torn, and gives back the zeros of segments left by a killed process", async () => {
    const d = join(dir, "left");
    await mkdir(d);
    const a = encodeRecord('["a"]');
    const b = encodeRecord('["bb"]');
    const torn = b.subarray(0, b.length - 2);
    await writeFile(join(d, "000000000001.spool"), Buffer.concat([a, torn, Buffer.alloc(64 * 1024)]));
    await writeFile(join(d, "000000000002.spool"), Buffer.concat([a, Buffer.alloc(64 * 1024)]));
    await appendFile(join(d, "000000000003.spool"), a);
    const { spool, left } = await PredictionSpool.open(d);
    expect(left.map((s) => [s.payloads, s.tornBytes])).toEqual([
      [['["a"]'], torn.length],
      [['["a"]'], 0],
      [['["a"]'], 0],
    ]);
    expect((await stat(join(d, "000000000001.spool"))).size).toBe(a.length + torn.length);
    expect((await stat(join(d, "000000000002.spool"))).size).toBe(a.length);
    await spool.close();
  });
});
