/**
 * Explanations of single predictions, named by what a user sends.
 *
 * XGBoost explains a prediction over the model's features (`Booster.predictContribs`: TreeSHAP for
 * trees, weight × value for gblinear). A user sends raw fields, and some features are derived from
 * them (core/features/features.ts), so the feature contributions are added back onto the raw field(s)
 * each feature comes from. The sum is unchanged: raw-field contributions + bias = the model's margin.
 *
 * Lineage of the derived features (FEATURE_SOURCES):
 * - `workingday_hr` (= workingday × 24 + hr) comes from two fields; its contribution is split evenly
 *   between `hr` and `workingday`. SHAP cannot say which of the two the interaction owes more to, and
 *   an even split is the one choice that favours neither; the derived list still shows it whole.
 * - `days_to_holiday`, `days_since_holiday` and `year_end_break` come from the date of the hour: the
 *   request's `timestamp` (legacy JSON) or `hour` (RPC). Without one they are missing, and the trees'
 *   missing-value branches still move the prediction: that move is attributed to the date field too
 *   ("not knowing the date" is what caused it).
 *
 * Space: contributions are additive in the margin. For reg:squarederror the margin is the prediction.
 * For count:poisson and reg:tweedie (log link) it is log(prediction), and the explanation says so
 * (`space: "log"`): prediction = exp(bias + Σ contributions). A log-space explanation is still exact
 * and comparable between fields; it is not converted to counts because no additive split of
 * exp(Σ) among fields exists.
 */
import { FEATURE_NAMES, RAW_FIELD_NAMES, TIMESTAMP_FIELD } from "../features/index.js";

/** Where a model feature comes from: raw fields and the share of its contribution each receives. */
export interface FeatureSource {
  readonly field: string;
  readonly share: number;
}

/** The date field's name in the lineage; callers rename it to what their transport calls it. */
export const DATE_FIELD = TIMESTAMP_FIELD;

const DERIVED_SOURCES: Readonly<Record<string, readonly FeatureSource[]>> = {
  workingday_hr: [
    { field: "hr", share: 0.5 },
    { field: "workingday", share: 0.5 },
  ],
  days_to_holiday: [{ field: DATE_FIELD, share: 1 }],
  days_since_holiday: [{ field: DATE_FIELD, share: 1 }],
  year_end_break: [{ field: DATE_FIELD, share: 1 }],
};

function sourcesOf(feature: string): readonly FeatureSource[] {
  if ((RAW_FIELD_NAMES as readonly string[]).includes(feature)) return [{ field: feature, share: 1 }];
  const derived = DERIVED_SOURCES[feature];
  // A feature added to core/features without a lineage here would silently drop out of every
  // explanation; failing at load makes the omission impossible to ship.
  if (derived === undefined) throw new Error(`core/explain: no lineage for feature ${feature}`);
  return derived;
}

/** For every model feature, in FEATURE_NAMES order, the raw fields it is attributed to. */
export const FEATURE_SOURCES: readonly (readonly FeatureSource[])[] = FEATURE_NAMES.map(sourcesOf);

/** The fields explanations are named by: the raw fields, then the date field. */
export const EXPLAINED_FIELDS: readonly string[] = [...RAW_FIELD_NAMES, DATE_FIELD];

const FIELD_INDEX = new Map(EXPLAINED_FIELDS.map((f, i) => [f, i]));

/** Which model features are derived (not a raw field themselves), with their index in FEATURE_NAMES. */
const DERIVED: readonly { name: string; index: number; from: string[] }[] = FEATURE_NAMES.flatMap(
  (name, index) =>
    (RAW_FIELD_NAMES as readonly string[]).includes(name)
      ? []
      : [{ name, index, from: (FEATURE_SOURCES[index] ?? []).map((s) => s.field) }],
);

export type ExplanationSpace = "prediction" | "log";

/** The space an objective's contributions add up in (see the module comment). */
export function explanationSpace(objective: string): ExplanationSpace {
  if (objective === "reg:squarederror" || objective === "reg:linear") return "prediction";
  if (objective === "count:poisson" || objective === "reg:tweedie") return "log";
  throw new RangeError(`explanations are not defined for objective ${JSON.stringify(objective)}`);
}

export interface Contribution {
  feature: string;
  value: number;
}

export interface DerivedContribution extends Contribution {
  /** The raw fields its value was added to (split evenly when there are several). */
  from: string[];
}

export interface Explanation {
  /** One per raw field sent (EXPLAINED_FIELDS order, the date field last), in `space`. */
  contributions: Contribution[];
  /** The model's expected margin: what the prediction would be knowing nothing about this hour. */
  bias: number;
  /** The derived features' own contributions, already included in `contributions`. */
  derived: DerivedContribution[];
  space: ExplanationSpace;
  /** bias + Σ contributions, back in the prediction's units (exp of it in log space). */
  prediction: number;
}

/**
 * Turns XGBoost's contributions (`rows × (features + 1)`, bias last, as Booster.predictContribs returns
 * them) into one explanation per row. `dateField` renames the date field (RPC requests call it `hour`).
 */
export function explainContributions(
  contribs: Float32Array,
  rows: number,
  space: ExplanationSpace,
  dateField: string = DATE_FIELD,
): Explanation[] {
  const width = FEATURE_NAMES.length + 1;
  if (contribs.length !== rows * width) {
    throw new RangeError(
      `contributions have ${contribs.length} values, expected ${rows} rows × ${width} (features + bias)`,
    );
  }
  const names = EXPLAINED_FIELDS.map((f) => (f === DATE_FIELD ? dateField : f));
  const out: Explanation[] = [];
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    const byField = new Float64Array(EXPLAINED_FIELDS.length);
    for (let f = 0; f < FEATURE_NAMES.length; f++) {
      const value = contribs[base + f] as number;
      for (const source of FEATURE_SOURCES[f] as readonly FeatureSource[]) {
        const i = FIELD_INDEX.get(source.field) as number;
        byField[i] = (byField[i] as number) + value * source.share;
      }
    }
    const bias = contribs[base + FEATURE_NAMES.length] as number;
    let margin = bias;
    for (const v of byField) margin += v;
    out.push({
      contributions: names.map((feature, i) => ({ feature, value: byField[i] as number })),
      bias,
      derived: DERIVED.map((d) => ({
        feature: d.name,
        value: contribs[base + d.index] as number,
        from: d.from.map((f) => (f === DATE_FIELD ? dateField : f)),
      })),
      space,
      prediction: space === "log" ? Math.exp(margin) : margin,
    });
  }
  return out;
}

/** Mean |SHAP| over a set of rows, per model feature and per raw field (the global importance). */
export interface ShapImportance {
  /** Per raw field (the date field as DATE_FIELD), in the explanation's space. */
  fields: Record<string, number>;
  /** Per model feature. */
  features: Record<string, number>;
  space: ExplanationSpace;
  rows: number;
}

/**
 * Mean absolute contribution over `rows` rows. A raw field's is taken per row after aggregation, so a
 * field whose derived features cancel out in a row counts for what it did to that row, not for the
 * sum of their sizes.
 */
export function shapImportance(
  contribs: Float32Array,
  rows: number,
  space: ExplanationSpace,
): ShapImportance {
  const width = FEATURE_NAMES.length + 1;
  if (rows === 0 || contribs.length !== rows * width) {
    throw new RangeError(`shapImportance needs rows × ${width} contributions for at least one row`);
  }
  const byFeature = new Float64Array(FEATURE_NAMES.length);
  const byField = new Float64Array(EXPLAINED_FIELDS.length);
  const row = new Float64Array(EXPLAINED_FIELDS.length);
  for (let r = 0; r < rows; r++) {
    row.fill(0);
    for (let f = 0; f < FEATURE_NAMES.length; f++) {
      const value = contribs[r * width + f] as number;
      byFeature[f] = (byFeature[f] as number) + Math.abs(value);
      for (const source of FEATURE_SOURCES[f] as readonly FeatureSource[]) {
        const i = FIELD_INDEX.get(source.field) as number;
        row[i] = (row[i] as number) + value * source.share;
      }
    }
    for (let i = 0; i < row.length; i++) byField[i] = (byField[i] as number) + Math.abs(row[i] as number);
  }
  return {
    fields: Object.fromEntries(EXPLAINED_FIELDS.map((f, i) => [f, (byField[i] as number) / rows])),
    features: Object.fromEntries(FEATURE_NAMES.map((f, i) => [f, (byFeature[i] as number) / rows])),
    space,
    rows,
  };
}
