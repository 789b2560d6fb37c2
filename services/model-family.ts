import { ModelFamily } from "../gen/bikeshare/v1/common_pb.js";

/**
 * The one map between a model family's name (model cards, training requests, the CLI's --families)
 * and its value in the protos.
 */
const BY_NAME = {
  gbtree: ModelFamily.GBTREE,
  random_forest: ModelFamily.RANDOM_FOREST,
  linear: ModelFamily.LINEAR,
} as const satisfies Record<string, ModelFamily>;

const BY_VALUE = new Map<ModelFamily, string>(Object.entries(BY_NAME).map(([name, value]) => [value, name]));

/** Every family name, in the order the protos list them. */
export const MODEL_FAMILY_NAMES: readonly string[] = Object.keys(BY_NAME);

/** The proto value of a family name, or undefined for a name that is not a family. */
export function modelFamilyOf(name: string): ModelFamily | undefined {
  return Object.hasOwn(BY_NAME, name) ? BY_NAME[name as keyof typeof BY_NAME] : undefined;
}

/** The name of a proto family value, or undefined for UNSPECIFIED and values this build does not know. */
export function modelFamilyName(family: ModelFamily): string | undefined {
  return BY_VALUE.get(family);
}
