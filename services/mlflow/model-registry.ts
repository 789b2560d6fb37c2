import { type ModelVersion, PRODUCTION_ALIAS, type Registry } from "../registry/registry.js";
import { likeMatcher } from "../registry/search-filter.js";
import { modelJson, versionJson } from "./entities.js";
import { type Call, checkFilterLength, MlflowError, pageOf, type Route, requireStr, str } from "./http.js";
import { renameModel, updateVersionDescription } from "./store.js";

/**
 * MLflow's model registry (model_registry.proto's ModelRegistryService) over bikeshare's registered
 * models, versions and aliases. A version is always a run's artifacts (bikeshare has no other source),
 * and every alias move goes through Registry.setAlias: audited, and `production` behind the gate.
 */

/** Why a move made through this API is in the audit trail. */
const REASON = "set through the MLflow API (registered-models/alias)";

async function versionsJson(registry: Registry, versions: readonly ModelVersion[]) {
  const out = [];
  for (const v of versions) out.push(versionJson(v, (await registry.getRun(v.runId))?.experimentId));
  return out;
}

async function requireModel(registry: Registry, name: string) {
  const model = await registry.getRegisteredModel(name);
  if (!model)
    throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Registered Model with name=${name} not found`);
  return model;
}

async function registeredModelJson(registry: Registry, name: string) {
  const model = await requireModel(registry, name);
  const latest =
    model.latestVersion === "" ? [] : [await registry.getModelVersion(name, model.latestVersion)];
  return modelJson(
    model,
    await versionsJson(
      registry,
      latest.filter((v) => v !== undefined),
    ),
  );
}

function versionNumber(params: Record<string, unknown>): string {
  const version = requireStr(params, "version");
  if (!/^[1-9][0-9]{0,8}$/.test(version)) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      `version must be a positive integer, got ${JSON.stringify(version)}`,
    );
  }
  return version;
}

async function requireVersion(registry: Registry, name: string, version: string): Promise<ModelVersion> {
  const found = await registry.getModelVersion(name, version);
  if (!found) {
    throw new MlflowError(
      "RESOURCE_DOES_NOT_EXIST",
      `Model Version (name=${name}, version=${version}) not found`,
    );
  }
  return found;
}

/** The run a version is made from: `run_id`, or the run named by a runs:/ or mlflow-artifacts:/ source. */
function runOfVersion(params: Record<string, unknown>): string {
  const runId = str(params, "run_id");
  if (runId) return runId;
  const source = str(params, "source") ?? "";
  const match =
    /^runs:\/([^/]+)/.exec(source) ??
    /^mlflow-artifacts:\/(?:\/[^/]*)?\/?[^/]+\/([^/]+)\/artifacts/.exec(source);
  if (!match) {
    throw new MlflowError(
      "INVALID_PARAMETER_VALUE",
      "run_id is required: a bikeshare model version is the artifacts of one run (or give source runs:/<run_id>/…)",
    );
  }
  return match[1] as string;
}

/**
 * The conditions MLflow's clients send to the search endpoints: `key = 'v'`, `key != 'v'`,
 * `key LIKE 'v'`, `key ILIKE 'v'` and `key IN ('a', 'b')`, joined by AND, on the keys given.
 */
function simpleFilter(
  filter: string | undefined,
  keys: readonly string[],
): (get: (key: string) => string) => boolean {
  if (filter === undefined || filter.trim() === "") return () => true;
  checkFilterLength(filter);
  const tests: ((get: (key: string) => string) => boolean)[] = [];
  const clause =
    /^\s*(?:attributes\.)?([a-z_]+)\s*(=|!=|LIKE|ILIKE|IN)\s*('(?:[^']|'')*'|"[^"]*"|\([^)]*\))\s*(?:AND\b|$)/i;
  let rest = filter;
  while (rest.trim() !== "") {
    const m = clause.exec(rest);
    const key = m?.[1] as string;
    if (!m || !keys.includes(key)) {
      throw new MlflowError(
        "INVALID_PARAMETER_VALUE",
        `filter ${JSON.stringify(filter)}: bikeshare supports ${keys.join(", ")} with =, !=, LIKE, ILIKE or IN, joined by AND`,
      );
    }
    const op = (m[2] as string).toUpperCase();
    const raw = m[3] as string;
    const unquote = (s: string) => s.slice(1, -1).replace(/''/g, "'");
    if (op === "IN") {
      const values = [...raw.slice(1, -1).matchAll(/'((?:[^']|'')*)'|"([^"]*)"/g)].map((v) =>
        v[1] !== undefined ? v[1].replace(/''/g, "'") : (v[2] as string),
      );
      tests.push((get) => values.includes(get(key)));
    } else {
      const value = unquote(raw);
      if (op === "=") tests.push((get) => get(key) === value);
      else if (op === "!=") tests.push((get) => get(key) !== value);
      else {
        const matches = likeMatcher(value, op === "ILIKE");
        tests.push((get) => matches(get(key)));
      }
    }
    rest = rest.slice(m[0].length);
  }
  return (get) => tests.every((t) => t(get));
}

export function modelRegistryRoutes(registry: Registry, servedModel: string): Record<string, Route> {
  const getAlias = async ({ params }: Call) => {
    const name = requireStr(params, "name");
    const alias = requireStr(params, "alias");
    const model = await requireModel(registry, name);
    const version = model.aliases[alias];
    if (version === undefined) {
      throw new MlflowError("RESOURCE_DOES_NOT_EXIST", `Registered model alias ${alias} not found.`);
    }
    const [json] = await versionsJson(registry, [await requireVersion(registry, name, version)]);
    return { model_version: json };
  };

  return {
    "registered-models/create": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        if (await registry.getRegisteredModel(name)) {
          throw new MlflowError("RESOURCE_ALREADY_EXISTS", `Registered Model (name=${name}) already exists.`);
        }
        await registry.createRegisteredModel(name, str(params, "description") ?? "");
        return { registered_model: await registeredModelJson(registry, name) };
      },
    },
    "registered-models/get": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => ({
        registered_model: await registeredModelJson(registry, requireStr(params, "name")),
      }),
    },
    // Renaming changes what every alias of the model resolves to: admins only, as alias moves.
    "registered-models/rename": {
      method: "POST",
      role: "admin",
      handle: async ({ params }) => {
        const newName = requireStr(params, "new_name");
        await renameModel(registry, requireStr(params, "name"), newName, servedModel);
        return { registered_model: await registeredModelJson(registry, newName) };
      },
    },
    "registered-models/search": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const keep = simpleFilter(str(params, "filter"), ["name"]);
        const models = (await registry.listRegisteredModels()).filter((m) => keep(() => m.name));
        const page = pageOf(models, params, 100, 1000);
        const out = [];
        for (const m of page.items) out.push(await registeredModelJson(registry, m.name));
        return {
          registered_models: out,
          ...(page.next_page_token ? { next_page_token: page.next_page_token } : {}),
        };
      },
    },
    "registered-models/get-latest-versions": {
      method: "POST",
      role: "reader",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        await requireModel(registry, name);
        const versions = await versionsJson(registry, await registry.listModelVersions(name));
        const latest = new Map<string, (typeof versions)[number]>();
        for (const v of versions) {
          const seen = latest.get(v.current_stage);
          if (!seen || Number(v.version) > Number(seen.version)) latest.set(v.current_stage, v);
        }
        const stages = Array.isArray(params.stages) ? (params.stages as string[]) : [];
        const wanted = [...latest.values()].filter(
          (v) => stages.length === 0 || stages.includes(v.current_stage),
        );
        return { model_versions: wanted };
      },
    },
    "model-versions/create": {
      method: "POST",
      role: "trainer",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        await requireModel(registry, name);
        const version = await registry.createModelVersion({
          modelName: name,
          runId: runOfVersion(params),
          description: str(params, "description") ?? "",
        });
        const [json] = await versionsJson(registry, [version]);
        return { model_version: json };
      },
    },
    "model-versions/get": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        const [json] = await versionsJson(registry, [
          await requireVersion(registry, name, versionNumber(params)),
        ]);
        return { model_version: json };
      },
    },
    "model-versions/search": {
      method: "GET",
      role: "reader",
      handle: async ({ params }) => {
        const keep = simpleFilter(str(params, "filter"), ["name", "run_id"]);
        const all: ModelVersion[] = [];
        for (const m of await registry.listRegisteredModels())
          all.push(...(await registry.listModelVersions(m.name)));
        const matching = all.filter((v) => keep((key) => (key === "name" ? v.modelName : v.runId)));
        const page = pageOf(matching, params, 10_000, 200_000);
        return {
          model_versions: await versionsJson(registry, page.items),
          ...(page.next_page_token ? { next_page_token: page.next_page_token } : {}),
        };
      },
    },
    "model-versions/update": {
      method: "PATCH",
      role: "trainer",
      handle: async ({ params }) => {
        const name = requireStr(params, "name");
        const version = versionNumber(params);
        const description = str(params, "description");
        if (description !== undefined) await updateVersionDescription(registry, name, version, description);
        const [json] = await versionsJson(registry, [await requireVersion(registry, name, version)]);
        return { model_version: json };
      },
    },
    // Moving an alias changes what serves: admins only, as RegistryService.SetAlias. For `production`
    // the admin's move is the forced one (Registry.setAlias with force): the gate is overridden and the
    // audit row says so when it would have refused (docs/mlflow-api.md).
    "registered-models/alias": {
      method: "POST",
      role: "admin",
      handle: async ({ params, principal }) => {
        const alias = requireStr(params, "alias");
        await registry.setAlias({
          modelName: requireStr(params, "name"),
          alias,
          version: versionNumber(params),
          actor: principal.name,
          reason: REASON,
          force: alias === PRODUCTION_ALIAS,
        });
        return {};
      },
    },
    "DELETE registered-models/alias": {
      method: "DELETE",
      role: "admin",
      handle: async ({ params, principal }) => {
        await registry.deleteAlias({
          modelName: requireStr(params, "name"),
          alias: requireStr(params, "alias"),
          actor: principal.name,
          reason: REASON.replace("registered-models/alias", "DELETE registered-models/alias"),
        });
        return {};
      },
    },
    "GET registered-models/alias": { method: "GET", role: "reader", handle: getAlias },
  };
}
