import { ALIAS_MOVES_CHANNEL } from "../control/alias-notifications.js";
import type { Queryable, SqlDatabase } from "../storage/database.js";
import { RegistryError } from "./errors.js";
import { loadVersionOrThrow, requireModel } from "./models.js";
import { gate, PRODUCTION_ALIAS } from "./promotion-gate.js";
import { type ChangeRow, toChange } from "./schema.js";
import type { AliasChange, ModelVersion } from "./types.js";
import { checkAlias, checkVersion, invalid, requireText } from "./validation.js";

/**
 * Aliases (named pointers to a model version) and their audit trail: every move is written in the
 * same transaction as its audit row, and listeners hear of it only after the commit.
 */

export class Aliases {
  private readonly listeners = new Set<(change: AliasChange) => void>();

  constructor(private readonly db: SqlDatabase) {}

  /**
   * Points `alias` at `version` in one transaction with its audit row. `production` goes through the
   * champion/challenger gate unless `force` (which needs a reason like every move).
   */
  async setAlias(input: {
    modelName: string;
    alias: string;
    version: string;
    actor: string;
    reason: string;
    force?: boolean;
  }): Promise<AliasChange> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const alias = checkAlias(input.alias);
    const version = checkVersion(input.version);
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const change = await this.db.transaction((tx) =>
      moveAlias(tx, modelName, alias, version, actor, reason, input.force === true),
    );
    this.emit([change]);
    return change;
  }

  async deleteAlias(input: {
    modelName: string;
    alias: string;
    actor: string;
    reason: string;
  }): Promise<AliasChange> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const alias = requireText(input.alias, "alias", 64).toLowerCase();
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    const change = await this.db.transaction(async (tx) => {
      await requireModel(tx, modelName);
      const [row] = await tx.all<{ version: number }>(
        "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
        [modelName, alias],
      );
      if (!row) throw new RegistryError("not_found", `model "${modelName}" has no alias "${alias}"`, "alias");
      await tx.run("DELETE FROM registry.aliases WHERE model_name = $1 AND alias = $2", [modelName, alias]);
      return audit(tx, modelName, alias, row.version, null, actor, reason, false);
    });
    this.emit([change]);
    return change;
  }

  /**
   * Legacy MLflow stages: Staging → alias "staging"; Production → alias "production" (through the
   * gate); Archived → every alias pointing at the version is removed, each move audited.
   */
  async transitionStage(input: {
    modelName: string;
    version: string;
    stage: string;
    actor: string;
    reason: string;
  }): Promise<ModelVersion> {
    const modelName = requireText(input.modelName, "model_name", 128);
    const version = checkVersion(input.version);
    const stage = requireText(input.stage, "stage", 32).toLowerCase();
    const actor = requireText(input.actor, "actor", 256);
    const reason = requireText(input.reason, "reason", 2000);
    if (stage !== "staging" && stage !== "production" && stage !== "archived") {
      invalid("stage", `stage must be Staging, Production or Archived, got ${JSON.stringify(input.stage)}`);
    }
    const changes: AliasChange[] = [];
    const result = await this.db.transaction(async (tx) => {
      if (stage === "archived") {
        await requireModel(tx, modelName);
        await loadVersionOrThrow(tx, modelName, version);
        const rows = await tx.all<{ alias: string }>(
          "SELECT alias FROM registry.aliases WHERE model_name = $1 AND version = $2 ORDER BY alias",
          [modelName, version],
        );
        for (const { alias } of rows) {
          await tx.run("DELETE FROM registry.aliases WHERE model_name = $1 AND alias = $2", [
            modelName,
            alias,
          ]);
          changes.push(await audit(tx, modelName, alias, version, null, actor, reason, false));
        }
      } else {
        changes.push(await moveAlias(tx, modelName, stage, version, actor, reason, false));
      }
      return loadVersionOrThrow(tx, modelName, version);
    });
    this.emit(changes);
    return result;
  }

  /** Alias moves, oldest first. */
  async aliasHistory(modelName: string, alias?: string): Promise<AliasChange[]> {
    requireText(modelName, "model_name", 128);
    return this.db.transaction(async (tx) => {
      await requireModel(tx, modelName);
      const rows = await tx.all<ChangeRow>(
        alias
          ? "SELECT * FROM registry.alias_changes WHERE model_name = $1 AND alias = $2 ORDER BY seq"
          : "SELECT * FROM registry.alias_changes WHERE model_name = $1 ORDER BY seq",
        alias ? [modelName, alias.toLowerCase()] : [modelName],
      );
      return rows.map(toChange);
    });
  }

  /** Called after each committed alias change (set, delete, stage transition). Returns an unsubscribe. */
  onAliasChange(listener: (change: AliasChange) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Tells the listeners about changes once their transaction has committed. Public because
   * Registry.registerVersion commits alias moves in a transaction that also spans models.
   */
  emit(changes: readonly AliasChange[]): void {
    if (changes.length > 0 && this.db.dialect === "postgres") this.notifyOtherProcesses(changes);
    for (const change of changes) {
      for (const listener of [...this.listeners]) {
        try {
          listener(change);
        } catch (error) {
          process.emitWarning(
            `an onAliasChange listener threw: ${(error as Error)?.message ?? String(error)}`,
          );
        }
      }
    }
  }

  /**
   * Tells the other processes on the shared database (predict replicas, other control processes) to
   * read the alias again. Sent after the commit rather than inside the transaction because
   * registerVersion's transaction lives in registry.ts; a NOTIFY is only a hint either way: one lost
   * to a crash right after the commit is caught by their poll (LiveModel.follow) within a second.
   */
  private notifyOtherProcesses(changes: readonly AliasChange[]): void {
    const payload = JSON.stringify(changes.map(({ modelName, alias }) => ({ modelName, alias })));
    this.db.run("SELECT pg_notify($1, $2)", [ALIAS_MOVES_CHANNEL, payload]).catch(() => {
      // The database just committed the move; if it is gone now, the replicas' poll finds the move later.
    });
  }
}

/**
 * One alias move and its audit row inside the caller's transaction; `production` goes through the
 * gate. The caller emits the returned change after the commit.
 */
export async function moveAlias(
  tx: Queryable,
  modelName: string,
  alias: string,
  version: number,
  actor: string,
  reason: string,
  force: boolean,
): Promise<AliasChange> {
  await requireModel(tx, modelName);
  await loadVersionOrThrow(tx, modelName, version);
  const [current] = await tx.all<{ version: number }>(
    "SELECT version FROM registry.aliases WHERE model_name = $1 AND alias = $2",
    [modelName, alias],
  );
  let forced = false;
  if (alias === PRODUCTION_ALIAS) {
    const refusal = await gate(tx, modelName, version, current?.version);
    if (refusal !== undefined) {
      if (!force) throw new RegistryError("failed_precondition", refusal, "version");
      forced = true;
    }
  }
  if (current) {
    await tx.run(
      "UPDATE registry.aliases SET version = $3, updated_at = $4 WHERE model_name = $1 AND alias = $2",
      [modelName, alias, version, new Date()],
    );
  } else {
    await tx.run("INSERT INTO registry.aliases VALUES ($1, $2, $3, $4)", [
      modelName,
      alias,
      version,
      new Date(),
    ]);
  }
  return audit(tx, modelName, alias, current?.version ?? null, version, actor, reason, forced);
}

async function audit(
  tx: Queryable,
  modelName: string,
  alias: string,
  from: number | null,
  to: number | null,
  actor: string,
  reason: string,
  forced: boolean,
): Promise<AliasChange> {
  const time = new Date();
  await tx.run(
    `INSERT INTO registry.alias_changes
       SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3::INTEGER, $4::INTEGER, $5, $6, $7::TIMESTAMP, $8::BOOLEAN FROM registry.alias_changes`,
    [modelName, alias, from, to, actor, reason, time, forced],
  );
  return {
    modelName,
    alias,
    fromVersion: from === null ? "" : String(from),
    toVersion: to === null ? "" : String(to),
    actor,
    reason,
    time,
    forced,
  };
}
