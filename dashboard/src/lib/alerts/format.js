/**
 * Small display helpers of the alert views. Kept here (not in format/units.js) because alert values carry no
 * unit and times are ISO strings from the API.
 */

/** Labels every alert carries that a row already shows elsewhere (rule name, severity badge). */
const IMPLIED = new Set(['alertname']);

/**
 * `{route: '/a', team: 'ops'}` → `'route="/a", team="ops"'`, without `alertname` (the rule name says it).
 * @param {Record<string, unknown>|null|undefined} labels
 * @param {{all?: boolean}} [options]
 */
export function labelText(labels, { all = false } = {}) {
  return Object.entries(labels ?? {})
    .filter(([name]) => all || !IMPLIED.has(name))
    .map(([name, value]) => `${name}="${String(value)}"`)
    .join(', ');
}

/**
 * An alert value for display: null (none, or not finite) is a dash; otherwise up to 4 significant digits.
 * @param {number|null|undefined} value
 */
export function formatAlertValue(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  if (value !== 0 && (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-3)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

/**
 * An ISO time as the user's local date and time; null → dash.
 * @param {string|null|undefined} iso
 */
export function formatAt(iso) {
  if (!iso) return '–';
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return String(iso);
  return new Date(ms).toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'
  });
}

/**
 * An ISO time as epoch seconds (what the charts' x axis uses); NaN when it does not parse.
 * @param {string|number|Date} at
 */
export function epochSeconds(at) {
  if (typeof at === 'number') return at;
  if (at instanceof Date) return at.getTime() / 1000;
  return Date.parse(at) / 1000;
}
