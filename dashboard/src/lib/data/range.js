/**
 * The dashboard's time range: `{ last: '1h' }` (follows now, live) or `{ from, to }` in epoch seconds
 * (fixed, e.g. after a drag-zoom). Pure helpers to resolve it, pick a step, and keep it in the URL.
 */

/** Presets of the picker, shortest first. */
export const PRESETS = /** @type {const} */ ([
  { last: '15m', label: 'Last 15 minutes', short: '15 min' },
  { last: '1h', label: 'Last 1 hour', short: '1 h' },
  { last: '3h', label: 'Last 3 hours', short: '3 h' },
  { last: '6h', label: 'Last 6 hours', short: '6 h' },
  { last: '12h', label: 'Last 12 hours', short: '12 h' },
  { last: '24h', label: 'Last 24 hours', short: '24 h' },
  { last: '2d', label: 'Last 2 days', short: '2 d' },
  { last: '7d', label: 'Last 7 days', short: '7 d' }
]);

/** A custom range may span at most this (the picker's rule; the server allows more). */
export const MAX_CUSTOM_SPAN = 7 * 86400;

/** @typedef {{last: string} | {from: number, to: number}} TimeRange */

const UNIT_SECONDS = /** @type {Record<string, number>} */ ({ s: 1, m: 60, h: 3600, d: 86400, w: 604800 });

/**
 * '15m' → 900; null for anything that is not `<positive integer><s|m|h|d|w>`.
 * @param {string} text
 */
export function parseDuration(text) {
  const m = /^(\d+)([smhdw])$/.exec(String(text ?? '').trim());
  if (!m || Number(m[1]) <= 0) return null;
  return Number(m[1]) * UNIT_SECONDS[m[2]];
}

/**
 * An error message for a custom range, or null when it is fine.
 * @param {number} from @param {number} to  epoch seconds
 */
export function customRangeError(from, to) {
  if (!Number.isFinite(from) || !Number.isFinite(to)) return 'Enter both a start and an end.';
  if (from >= to) return 'The start must be before the end.';
  if (to - from > MAX_CUSTOM_SPAN) return 'A custom range may span at most 7 days.';
  return null;
}

/**
 * Epoch seconds `{from, to}` of a range at `nowMs`; a relative range ends at now.
 * @param {TimeRange} value
 * @param {number} [nowMs]
 * @returns {{from: number, to: number}}
 */
export function resolveRange(value, nowMs = Date.now()) {
  if (value && 'from' in value && 'to' in value) return { from: Number(value.from), to: Number(value.to) };
  const span = parseDuration(/** @type {{last: string}} */ (value)?.last) ?? 3600;
  const to = Math.floor(nowMs / 1000);
  return { from: to - span, to };
}

/**
 * The step (seconds) for a span: about 300 points, whole minutes (the server's minimum), rounded up to
 * whole 5 minutes once the span passes 5 hours (those read the 5-minute rollups, docs/api.md) and to whole
 * hours past a 60-minute step (as `metrics.default_step`).
 * @param {number} spanSeconds
 */
export function defaultStep(spanSeconds) {
  let mins = Math.max(1, Math.ceil(spanSeconds / 60 / 300));
  if (mins > 60) return Math.ceil(mins / 60) * 3600;
  if (spanSeconds > 5 * 3600) mins = Math.ceil(mins / 5) * 5;
  return mins * 60;
}

/**
 * URL search params of a range: `last=1h`, or `from=…&to=…` in epoch seconds.
 * @param {TimeRange} value
 */
export function rangeToParams(value) {
  const params = new URLSearchParams();
  if (value && 'from' in value && 'to' in value) {
    params.set('from', String(Math.floor(value.from)));
    params.set('to', String(Math.floor(value.to)));
  } else {
    params.set('last', /** @type {{last: string}} */ (value)?.last ?? '1h');
  }
  return params;
}

/**
 * The range a URL names, or `fallback` when it names none or an invalid one (a shared link must never
 * break the page). `from`/`to` accept epoch seconds or ISO 8601.
 * @param {URLSearchParams} params
 * @param {TimeRange} [fallback]
 * @returns {TimeRange}
 */
export function rangeFromParams(params, fallback = { last: '1h' }) {
  const last = params.get('last');
  if (last !== null) return parseDuration(last) !== null ? { last } : fallback;
  const from = parseTime(params.get('from'));
  const to = parseTime(params.get('to'));
  if (from === null || to === null || from >= to) return fallback;
  return { from, to };
}

/** @param {string|null} text @returns {number|null} epoch seconds */
function parseTime(text) {
  if (text === null || text === '') return null;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.floor(Number(text));
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

/**
 * Is `a` the same range as `b`? (Used to avoid writing the URL or refetching for nothing.)
 * @param {TimeRange} a @param {TimeRange} b
 */
export function sameRange(a, b) {
  return rangeToParams(a).toString() === rangeToParams(b).toString();
}

/** @param {number} n */
const pad2 = (n) => String(n).padStart(2, '0');

/**
 * The value of an `<input type="datetime-local">` (local time, minutes) for epoch seconds.
 * @param {number} epochSeconds
 */
export function toDateTimeLocal(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/**
 * Epoch seconds of a datetime-local value (read as local time), NaN when empty or invalid.
 * @param {string} text
 */
export function fromDateTimeLocal(text) {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text ?? '')) return NaN;
  return Math.floor(new Date(text).getTime() / 1000);
}
