import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Principal, Role } from "./principal.js";

/**
 * Bearer tokens and their roles. The tokens file holds only sha256 hashes, so reading it
 * (or a backup of it) does not give anyone a usable token. Format:
 *   { "tokens": [ { "name": "airflow", "role": "trainer", "sha256": "<hex>" } ] }
 */
export interface TokenEntry {
  name: string;
  role: Role;
  sha256: string;
}

const ROLES: readonly Role[] = ["reader", "trainer", "admin"];

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

export class TokenBook {
  private readonly byHash: Map<string, Principal>;

  constructor(entries: readonly TokenEntry[]) {
    this.byHash = new Map(entries.map((e) => [e.sha256, { name: e.name, role: e.role }]));
  }

  get size(): number {
    return this.byHash.size;
  }

  /** The principal of a token, compared in constant time so response timing reveals nothing. */
  lookup(token: string): Principal | undefined {
    const digest = Buffer.from(hashToken(token), "hex");
    for (const [hash, principal] of this.byHash) {
      if (timingSafeEqual(Buffer.from(hash, "hex"), digest)) return principal;
    }
    return undefined;
  }
}

function parseEntries(text: string, source: string): TokenEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source}: not valid JSON (${(error as Error).message})`);
  }
  const list = (parsed as { tokens?: unknown }).tokens;
  if (!Array.isArray(list)) throw new Error(`${source}: expected {"tokens": [...]}`);
  return list.map((raw, i) => {
    const e = raw as Partial<TokenEntry>;
    if (typeof e.name !== "string" || e.name === "")
      throw new Error(`${source}: tokens[${i}].name must be a non-empty string`);
    if (!ROLES.includes(e.role as Role))
      throw new Error(`${source}: tokens[${i}].role must be one of ${ROLES.join(", ")}`);
    if (typeof e.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256)) {
      throw new Error(
        `${source}: tokens[${i}].sha256 must be 64 lowercase hex characters (the sha256 of the token)`,
      );
    }
    return { name: e.name, role: e.role as Role, sha256: e.sha256 };
  });
}

/**
 * Loads the tokens file; when it does not exist yet, creates it with one local admin token
 * and writes that token (the only plaintext copy) to `adminTokenPath`, readable by the owner only.
 */
export async function loadOrCreateTokens(
  tokensPath: string,
  adminTokenPath: string,
): Promise<{ book: TokenBook; createdAdminToken: boolean }> {
  try {
    return {
      book: new TokenBook(parseEntries(await readFile(tokensPath, "utf8"), tokensPath)),
      createdAdminToken: false,
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const token = `bks_${randomBytes(24).toString("base64url")}`;
  const entries: TokenEntry[] = [{ name: "local-admin", role: "admin", sha256: hashToken(token) }];
  await mkdir(dirname(adminTokenPath), { recursive: true });
  await writeFile(adminTokenPath, `${token}\n`, { mode: 0o600 });
  await chmod(adminTokenPath, 0o600);
  await mkdir(dirname(tokensPath), { recursive: true });
  await writeFile(tokensPath, `${JSON.stringify({ tokens: entries }, null, 2)}\n`, { mode: 0o600 });
  return { book: new TokenBook(entries), createdAdminToken: true };
}
