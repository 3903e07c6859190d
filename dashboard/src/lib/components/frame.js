/**
 * Pure reads of a PanelData frame shared by the panels: `{ times, step, series: [{key, label, labels,
 * values}], partialFrom, kind }` (CONTRACT.md).
 */

/**
 * @typedef {object} FrameSeries
 * @property {string} key
 * @property {string} label
 * @property {Record<string, string>} labels
 * @property {(number|null)[]} values
 */

/**
 * @typedef {object} Frame
 * @property {number[]} times        epoch seconds, step starts
 * @property {number} step           seconds
 * @property {FrameSeries[]} series
 * @property {number|null} partialFrom  start of the newest, still open step
 * @property {string} [kind]
 */

/** @param {Frame|null|undefined} frame */
export function isEmpty(frame) {
  return !frame || !frame.times?.length || !frame.series?.length || frame.series.every((s) => s.values.every((v) => v == null));
}

/**
 * Is the step starting at `t` still open (its value will change)?
 * @param {Frame} frame @param {number} t
 */
export function isPartial(frame, t) {
  return frame.partialFrom != null && t >= frame.partialFrom;
}

/**
 * The newest value of a series that is not null and not in the partial step — what a tile shows, since a
 * half-filled minute of a rate reads low.
 * @param {Frame|null|undefined} frame
 * @param {number} [seriesIndex]
 * @returns {{value: number, time: number}|null}
 */
export function latestSettled(frame, seriesIndex = 0) {
  const values = frame?.series?.[seriesIndex]?.values;
  if (!frame || !values) return null;
  for (let i = Math.min(values.length, frame.times.length) - 1; i >= 0; i--) {
    if (isPartial(frame, frame.times[i])) continue;
    const v = values[i];
    if (v !== null && v !== undefined && Number.isFinite(v)) return { value: v, time: frame.times[i] };
  }
  return null;
}

/**
 * 'ok', 'warning' or 'critical' for a value: the highest threshold ≤ value wins, 'ok' below all of them.
 * @param {Array<{value: number, color: string}>|undefined} thresholds
 * @param {number|null|undefined} value
 */
export function thresholdLevel(thresholds, value) {
  if (value === null || value === undefined || Number.isNaN(value)) return 'ok';
  let best = null;
  for (const t of thresholds ?? []) if (t.value <= value && (best === null || t.value >= best.value)) best = t;
  return best?.color ?? 'ok';
}

/**
 * CSS colour of the i-th series from the theme palette (10 colours, then they repeat).
 * @param {number} i
 */
export function seriesColorVar(i) {
  return `var(--mh-series-${(i % 10) + 1})`;
}
