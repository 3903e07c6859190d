/**
 * The points of one query, merged by (group, step) so that answers may arrive in any order.
 *
 * Every answer of `GET /api/metrics` is a complete picture of the steps it covers: a group missing
 * from it had no data there. Each answer carries the revision of its request (issued in order); a step
 * keeps the groups of the newest revision that covered it, so a slow backfill finishing after a live
 * tail fetch cannot overwrite the newer values, and a group that vanished from a step goes with it.
 */

/**
 * @typedef {object} Buffer
 * @property {Map<number, {rev: number, values: Map<string, number|null>}>} steps  step start (epoch s) ->
 * @property {Map<string, Record<string, string>>} labels  group key -> its labels
 */

/** @returns {Buffer} */
export function createBuffer() {
  return { steps: new Map(), labels: new Map() };
}

/**
 * A stable key of a label set (sorted names), the same for equal sets in any order.
 * @param {Record<string, string>} labels
 */
export function groupKey(labels) {
  return JSON.stringify(Object.keys(labels).sort().map((name) => [name, labels[name]]));
}

/** @param {number} t @param {number} step */
export function alignDown(t, step) {
  return Math.floor(t / step) * step;
}

/**
 * Merge one answer covering the steps that start in [from, to) (both step aligned, epoch seconds).
 * @param {Buffer} buffer
 * @param {{rev: number, from: number, to: number, step: number,
 *          series: Array<{labels: Record<string, string>, points: Array<[number, number|null]>}>}} answer
 * @returns {boolean} whether any value changed (a confirming answer needs no redraw)
 */
export function applyAnswer(buffer, { rev, from, to, step, series }) {
  /** @type {Map<number, Map<string, number|null>>} */
  const fresh = new Map();
  for (let t = alignDown(from, step); t < to; t += step) {
    const held = buffer.steps.get(t);
    if (!held || held.rev <= rev) fresh.set(t, new Map());
  }
  for (const one of series) {
    const key = groupKey(one.labels);
    for (const [t, value] of one.points) {
      const values = fresh.get(t);
      if (!values) continue;
      values.set(key, value);
      buffer.labels.set(key, one.labels);
    }
  }
  let changed = false;
  for (const [t, values] of fresh) {
    changed ||= !sameValues(buffer.steps.get(t)?.values, values);
    buffer.steps.set(t, { rev, values });
  }
  return changed;
}

/**
 * @param {Map<string, number|null> | undefined} a
 * @param {Map<string, number|null>} b
 */
function sameValues(a, b) {
  if (!a || a.size !== b.size) return false;
  for (const [key, value] of b) if (!a.has(key) || a.get(key) !== value) return false;
  return true;
}

/**
 * Drop steps outside [from, to) and the labels no step uses any more.
 * @param {Buffer} buffer
 * @param {number} from
 * @param {number} to
 */
export function prune(buffer, from, to) {
  for (const t of buffer.steps.keys()) if (t < from || t >= to) buffer.steps.delete(t);
  const used = new Set();
  for (const { values } of buffer.steps.values()) for (const key of values.keys()) used.add(key);
  for (const key of buffer.labels.keys()) if (!used.has(key)) buffer.labels.delete(key);
}

/**
 * The values of each group at each step start of [from, to): a step that an answer covered but where a
 * group had no data is 0 when `zeroFill` (counters: nothing happened) and null otherwise (gauges: a gap);
 * a step no answer covered yet is null either way (unknown is not zero).
 * @param {Buffer} buffer
 * @param {{from: number, to: number, step: number, zeroFill: boolean}} window
 * @returns {{times: number[], groups: Array<{key: string, labels: Record<string, string>, values: (number|null)[]}>}}
 */
export function readWindow(buffer, { from, to, step, zeroFill }) {
  const times = [];
  for (let t = alignDown(from, step); t < to; t += step) times.push(t);
  const keys = [...buffer.labels.keys()].sort();
  const groups = keys.map((key) => ({
    key,
    labels: /** @type {Record<string, string>} */ (buffer.labels.get(key)),
    values: times.map((t) => {
      const held = buffer.steps.get(t);
      if (!held) return null;
      const value = held.values.get(key);
      if (value === undefined) return zeroFill ? 0 : null;
      return value;
    })
  }));
  return { times, groups };
}
