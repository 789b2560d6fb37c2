/**
 * services/model-family.ts is the one map between family names (model cards, the training search
 * space, the CLI's --families) and the proto enum: every proto family has the name training uses.
 */
import { describe, expect, it } from "vitest";
import { ModelFamily } from "../../gen/bikeshare/v1/common_pb.js";
import { FAMILIES } from "../../pipelines/training/candidates.js";
import { MODEL_FAMILY_NAMES, modelFamilyName, modelFamilyOf } from "../../services/model-family.js";

const protoFamilies = Object.values(ModelFamily).filter(
  (v): v is ModelFamily => typeof v === "number" && v !== ModelFamily.UNSPECIFIED,
);

describe("model families", () => {
  it("names every proto family as training does, and maps each name back to its value", () => {
    expect(MODEL_FAMILY_NAMES).toEqual([...FAMILIES]);
    expect(protoFamilies.map(modelFamilyName)).toEqual([...FAMILIES]);
    for (const family of protoFamilies) expect(modelFamilyOf(modelFamilyName(family) as string)).toBe(family);
  });

  it("knows no name for UNSPECIFIED or an unknown value, and no value for other names", () => {
    expect(modelFamilyName(ModelFamily.UNSPECIFIED)).toBeUndefined();
    expect(modelFamilyName(99 as ModelFamily)).toBeUndefined();
    for (const name of ["", "GBTREE", "xgboost", "constructor", "toString"])
      expect(modelFamilyOf(name), name).toBeUndefined();
  });
});
