/**
 * A panel's value for one minute straight from the `rollup` broadcast, drawn at once while the SQL read
 * that the same broadcast triggers is on its way (its answer then replaces it, normally with the same
 * number). Only where the broadcast determines the value exactly:
 *
 * - the broadcast carries each changed series' minute **totals** (count, sum, min, max, last, p50/p90/p99),
 *   not deltas, so a group's value is the aggregate over the series seen in that minute — complete when the
 *   page was subscribed for the whole minute (every series that wrote in it was published);
 * - sums, counts, rates, extremes and averages of any group; `last` and quantiles only where a group is a
 *   single series (its labels are all kept by `by`);
 * - matchers this module can evaluate exactly as PostgreSQL does: `=`, `!=`, and regexes made only of
 *   characters, classes, alternation and repetition (fully anchored; a match either way is the same).
 *
 * Anything else answers `undefined` and waits for SQL.
 */

const SAFE_REGEX = /^[\w\s|.*+?()[\]^$,:/-]*$/;
const MATCHER = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(.*?))\s*$/;

/**
 * A predicate over label sets for matcher texts (`outcome!="ok"`, `status=~"5.."`), or null when one of
 * them cannot be evaluated here exactly like SQL does.
 * @param {string[]} matchers
 * @returns {((labels: Record<string, string>) => boolean) | null}
 */
export function matcherPredicate(matchers) {
  /** @type {Array<(labels: Record<string, string>) => boolean>} */
  const tests = [];
  for (const text of matchers) {
    const m = MATCHER.exec(text);
    if (!m) return null;
    const [, name, op, quoted, bare] = m;
    const value = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : bare ?? '';
    if (op === '=' || op === '!=') {
      const equal = op === '=';
      tests.push((labels) => ((labels[name] ?? '') === value) === equal);
      continue;
    }
    if (!SAFE_REGEX.test(value)) return null;
    let regex;
    try {
      regex = new RegExp(`^(?:${value})$`);
    } catch {
      return null;
    }
    const wanted = op === '=~';
    tests.push((labels) => regex.test(labels[name] ?? '') === wanted);
  }
  return (labels) => tests.every((test) => test(labels));
}

/**
 * The labels of the group a series falls in: those named by `by`; all of them when `by` is null.
 * @param {Record<string, string>} labels
 * @param {string[] | null} by
 */
export function groupOf(labels, by) {
  if (by === null) return labels;
  /** @type {Record<string, string>} */
  const kept = {};
  for (const name of by) if (labels[name] !== undefined && labels[name] !== '') kept[name] = labels[name];
  return kept;
}

/** @param {Record<string, string>} labels @param {string[] | null} by */
function keepsEveryLabel(labels, by) {
  return by === null || Object.keys(labels).every((name) => by.includes(name));
}

/** @param {any[]} items @param {string} field */
function values(items, field) {
  return items.map((item) => item[field]).filter((v) => typeof v === 'number');
}

/**
 * The value of `agg` over one minute of one group, from the broadcast items of its series, or undefined
 * when the broadcast does not determine it.
 * @param {string} agg
 * @param {any[]} items  the group's series in that minute (at least one)
 * @param {string[] | null} by
 * @returns {number | null | undefined}
 */
export function minuteValue(agg, items, by) {
  const kind = items[0]?.kind;
  const sum = (/** @type {string} */ field) => values(items, field).reduce((a, b) => a + b, 0);
  switch (agg.toLowerCase()) {
    case 'rate':
      return (kind === 'counter' ? sum('sum') : sum('count')) / 60;
    case 'sum':
      return sum('sum');
    case 'count':
      return sum('count');
    case 'min': {
      const found = values(items, 'min');
      return found.length === items.length ? Math.min(...found) : undefined;
    }
    case 'max': {
      const found = values(items, 'max');
      return found.length === items.length ? Math.max(...found) : undefined;
    }
    case 'avg': {
      const count = sum('count');
      return count > 0 ? sum('sum') / count : null;
    }
    case 'last':
    case 'p50':
    case 'p90':
    case 'p99': {
      // one series' own figure; across several series the broadcast cannot tell which was last / merge sketches
      if (items.length !== 1 || !keepsEveryLabel(items[0].labels ?? {}, by)) return undefined;
      const field = agg.toLowerCase();
      return typeof items[0][field] === 'number' ? items[0][field] : undefined;
    }
    default:
      return undefined;
  }
}
