// The sketch of the wire format (docs/batch.schema.json), as the Python client (meshhook_rt_metrics/client/
// sketch.py) and the SQL side (metrics.sketch_key) compute it: DDSketch-style logarithmic buckets with 1 %
// relative accuracy; key(v) = ceil(ln(v) * MULTIPLIER); |v| < 1e-9 counts as zero.

export const MULTIPLIER = 49.998333288886556;
export const ZERO_THRESHOLD = 1e-9;
const LOG_VALUE_FACTOR = -0.010050335853501338;

export interface Sketch {
  z: number;
  p: Record<string, number>;
  n: Record<string, number>;
}

export function sketchKey(value: number): number {
  return Math.ceil(Math.log(value) * MULTIPLIER);
}

/** The value a bucket stands for (within 1 % of every value mapping to it). */
export function sketchValue(key: number): number {
  return Math.exp(key / MULTIPLIER + LOG_VALUE_FACTOR);
}

/** Adds count values to the sketch; returns the bucket they went to: ["p" | "n", key] or ["z", 0]. */
export function sketchAdd(sketch: Sketch, value: number, count = 1): ["z" | "p" | "n", number] {
  if (value >= ZERO_THRESHOLD) {
    const k = sketchKey(value);
    sketch.p[k] = (sketch.p[k] ?? 0) + count;
    return ["p", k];
  } else if (value <= -ZERO_THRESHOLD) {
    const k = sketchKey(-value);
    sketch.n[k] = (sketch.n[k] ?? 0) + count;
    return ["n", k];
  }
  sketch.z += count;
  return ["z", 0];
}

/** The q-quantile (0..1) of a sketch, as metrics.sketch_quantile reports it (lowest rank convention). */
export function sketchQuantile(sketch: Sketch, q: number): number | null {
  const entries: [number, number][] = [
    ...Object.entries(sketch.n).map(([k, c]) => [-sketchValue(Number(k)), c] as [number, number]),
    ...(sketch.z > 0 ? [[0, sketch.z] as [number, number]] : []),
    ...Object.entries(sketch.p).map(([k, c]) => [sketchValue(Number(k)), c] as [number, number]),
  ].sort((a, b) => a[0] - b[0]);
  const total = entries.reduce((s, [, c]) => s + c, 0);
  if (total === 0) return null;
  const rank = q * (total - 1);
  let seen = 0;
  for (const [value, c] of entries) {
    seen += c;
    if (seen > rank) return value;
  }
  return entries[entries.length - 1][0];
}
