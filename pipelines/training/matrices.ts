/**
 * Labelled feature matrices: stacking rows and hiding the date features.
 */
import { DATE_FEATURE_NAMES, FEATURE_NAMES } from "../../core/features/index.js";
import { seededRandom } from "../../core/random/index.js";
import type { LabelledMatrix } from "./types.js";

const DATE_FEATURES: readonly number[] = DATE_FEATURE_NAMES.map((n) => FEATURE_NAMES.indexOf(n));

/** A copy of `m` with the date features of a seeded random `share` of rows set to NaN. */
export function maskDates(m: LabelledMatrix, share: number, seed: number): LabelledMatrix {
  if (share === 0) return m;
  const data = m.data.slice();
  // A stream of its own, so the mask does not shift when XGBoost's seed is reused elsewhere.
  const random = seededRandom((seed ^ 0x5eed_da7e) >>> 0);
  for (let r = 0; r < m.rows; r++) {
    if (random() < share) for (const f of DATE_FEATURES) data[r * m.cols + f] = Number.NaN;
  }
  return { data, rows: m.rows, cols: m.cols, labels: m.labels };
}

/** The same rows with every date feature NaN. */
export function withoutDates(m: LabelledMatrix): LabelledMatrix {
  const data = m.data.slice();
  for (let r = 0; r < m.rows; r++) for (const f of DATE_FEATURES) data[r * m.cols + f] = Number.NaN;
  return { data, rows: m.rows, cols: m.cols, labels: m.labels };
}

export function concatRows(a: LabelledMatrix, b: LabelledMatrix): LabelledMatrix {
  if (a.cols !== b.cols) throw new RangeError(`cannot stack ${a.cols} and ${b.cols} columns`);
  const data = new Float32Array(a.data.length + b.data.length);
  data.set(a.data);
  data.set(b.data, a.data.length);
  const labels = new Float32Array(a.rows + b.rows);
  labels.set(a.labels);
  labels.set(b.labels, a.rows);
  return { data, rows: a.rows + b.rows, cols: a.cols, labels };
}
