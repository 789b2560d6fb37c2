import type { Queryable } from "../storage/database.js";
import { latestMetrics } from "./runs.js";

/**
 * The champion/challenger gate on the `production` alias: a version replaces the production one only
 * when its run was evaluated against that very version on a recent window and beat it.
 */

/** The alias guarded by the champion/challenger gate. */
export const PRODUCTION_ALIAS = "production";
/** Run tag written by the training job: the production version the candidate was evaluated against. */
export const GATE_CHAMPION_VERSION_TAG = "gate.champion_version";
/** Run metrics written by the training job on the same recent window. */
export const GATE_CHALLENGER_RMSE = "gate.challenger_rmse";
export const GATE_CHAMPION_RMSE = "gate.champion_rmse";

function sixSignificantDigits(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(6))) : String(x);
}

/**
 * The champion/challenger gate for `production`: undefined when the move is allowed, otherwise why
 * not. Allowed when there is no production version yet, when the alias already points there, or
 * when the candidate's run was evaluated against the current production version
 * (tag gate.champion_version) and beat it (gate.challenger_rmse < gate.champion_rmse).
 */
export async function gate(
  tx: Queryable,
  modelName: string,
  candidate: number,
  production: number | undefined,
): Promise<string | undefined> {
  if (production === undefined || production === candidate) return undefined;
  const override = "pass force with a reason to override";
  const [version] = await tx.all<{ run_id: string }>(
    "SELECT run_id FROM registry.model_versions WHERE model_name = $1 AND version = $2",
    [modelName, candidate],
  );
  const runId = version?.run_id ?? "";
  const [tag] = await tx.all<{ value: string }>(
    "SELECT value FROM registry.run_tags WHERE run_id = $1 AND key = $2",
    [runId, GATE_CHAMPION_VERSION_TAG],
  );
  if (!tag) {
    return `version ${candidate} has no champion/challenger evaluation (its run has no ${GATE_CHAMPION_VERSION_TAG} tag) and production is version ${production}; ${override}`;
  }
  if (tag.value !== String(production)) {
    return `version ${candidate} was compared against version ${tag.value}, but production is now version ${production}; re-evaluate`;
  }
  const metrics = (await latestMetrics(tx, [runId])).get(runId) ?? {};
  const challenger = metrics[GATE_CHALLENGER_RMSE];
  const champion = metrics[GATE_CHAMPION_RMSE];
  if (challenger === undefined || champion === undefined) {
    return `version ${candidate} lacks the gate metrics ${GATE_CHALLENGER_RMSE} and ${GATE_CHAMPION_RMSE}; ${override}`;
  }
  if (!(challenger < champion)) {
    return `version ${candidate} does not beat production version ${production} on the gate window (RMSE ${sixSignificantDigits(challenger)} vs ${sixSignificantDigits(champion)}); ${override}`;
  }
  return undefined;
}
