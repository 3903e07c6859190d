/**
 * Number and time formatting for axes, tooltips, tiles and tables. Deterministic (no locale grouping), so a
 * value reads the same in every browser and in tests; 3 significant digits is enough for a chart.
 */

/** The units a panel may carry, with labels for the editor's select (mirrors the server's list). */
export const UNITS = /** @type {const} */ ([
  { value: 'short', label: 'Number (k, M, G)' },
  { value: 'percent', label: 'Percent (0–100)' },
  { value: 'percentunit', label: 'Percent (0.0–1.0)' },
  { value: 's', label: 'Seconds' },
  { value: 'ms', label: 'Milliseconds' },
  { value: 'bytes', label: 'Bytes (IEC)' },
  { value: 'Bps', label: 'Bytes/s' },
  { value: 'reqps', label: 'Requests/s' },
  { value: 'ops', label: 'Operations/s' },
  { value: 'none', label: 'None' }
]);

/** @typedef {typeof UNITS[number]['value']} Unit */

export const UNIT_VALUES = UNITS.map((u) => u.value);

const MISSING = '–';

/**
 * `x` with `digits` significant digits, trailing zeros trimmed ('1.50' → '1.5'), no exponent for the
 * magnitudes a scaled value has (0.001 ≤ |x| < 1000); tiny values fall back to exponent notation.
 * @param {number} x
 * @param {number} [digits]
 */
export function significant(x, digits = 3) {
  if (x === 0 || Object.is(x, -0)) return '0';
  const abs = Math.abs(x);
  if (abs >= 10 ** digits) return String(Math.round(x));
  if (abs < 1e-3) return Number(x.toPrecision(digits)).toExponential().replace(/\.?0+e/, 'e');
  return String(Number(x.toPrecision(digits)));
}

/**
 * Picks the largest prefix whose scaled value is ≥ 1, re-checking after rounding (999.7 → "1k", not "1000").
 * @param {number} abs
 * @param {number} base
 * @param {string[]} prefixes  prefixes[0] is "no prefix"
 */
function scale(abs, base, prefixes) {
  let k = 0;
  while (k < prefixes.length - 1 && abs >= base ** (k + 1)) k++;
  if (k < prefixes.length - 1 && Number((abs / base ** k).toPrecision(3)) >= base) k++;
  return { k, scaled: abs / base ** k };
}

/** @param {number} v */
function short(v) {
  const sign = v < 0 ? '-' : '';
  const abs = Math.abs(v);
  if (abs < 1000) return significant(v);
  const { k, scaled } = scale(abs, 1000, ['', 'k', 'M', 'G', 'T', 'P', 'E']);
  return sign + significant(scaled) + ['', 'k', 'M', 'G', 'T', 'P', 'E'][k];
}

/** @param {number} v */
function bytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  const sign = v < 0 ? '-' : '';
  const abs = Math.abs(v);
  if (abs < 1024) return `${sign}${significant(abs)} B`;
  const { k, scaled } = scale(abs, 1024, units);
  return `${sign}${significant(scaled)} ${units[k]}`;
}

/**
 * One duration as a single scaled unit ("250 ms", "1.5 s", "2.5 min", "3 h", "1.2 d") — for values on an
 * axis, where every tick must use the same shape.
 * @param {number} seconds
 */
function seconds(seconds) {
  const sign = seconds < 0 ? '-' : '';
  const abs = Math.abs(seconds);
  if (abs === 0) return '0 s';
  if (abs < 1e-6) return `${sign}${significant(abs * 1e9)} ns`;
  if (abs < 1e-3) return `${sign}${significant(abs * 1e6)} µs`;
  if (abs < 1) return `${sign}${significant(abs * 1e3)} ms`;
  if (abs < 60) return `${sign}${significant(abs)} s`;
  if (abs < 3600) return `${sign}${significant(abs / 60)} min`;
  if (abs < 86400) return `${sign}${significant(abs / 3600)} h`;
  return `${sign}${significant(abs / 86400)} d`;
}

/**
 * A value in a panel's unit; null, undefined and NaN (no data) read '–'.
 * @param {number|null|undefined} value
 * @param {string} [unit]
 * @returns {string}
 */
export function formatValue(value, unit = 'short') {
  if (value === null || value === undefined || typeof value !== 'number' || Number.isNaN(value)) return MISSING;
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '-∞';
  switch (unit) {
    case 'percent':
      return `${significant(value)}%`;
    case 'percentunit':
      return `${significant(value * 100)}%`;
    case 's':
      return seconds(value);
    case 'ms':
      return seconds(value / 1000);
    case 'bytes':
      return bytes(value);
    case 'Bps':
      return `${bytes(value)}/s`;
    case 'reqps':
      return `${short(value)} req/s`;
    case 'ops':
      return `${short(value)} ops/s`;
    case 'none':
      return significant(value);
    case 'short':
    default:
      return short(value);
  }
}

/**
 * A duration in words for people ("45 s", "2 min 5 s", "3 h 10 min", "2 d 4 h"): two parts at most.
 * @param {number|null|undefined} secondsValue
 */
export function formatDuration(secondsValue) {
  if (secondsValue === null || secondsValue === undefined || !Number.isFinite(secondsValue)) return MISSING;
  const sign = secondsValue < 0 ? '-' : '';
  const abs = Math.abs(secondsValue);
  if (abs < 1) return sign + seconds(abs);
  const total = Math.round(abs);
  if (total < 60) return `${sign}${total} s`;
  /** @type {Array<[number, string]>} */
  const parts = [
    [86400, 'd'],
    [3600, 'h'],
    [60, 'min'],
    [1, 's']
  ];
  const i = parts.findIndex(([size]) => total >= size);
  const [bigSize, bigName] = parts[i];
  const [smallSize, smallName] = parts[i + 1];
  const big = Math.floor(total / bigSize);
  const small = Math.floor((total - big * bigSize) / smallSize);
  return `${sign}${big} ${bigName}${small ? ` ${small} ${smallName}` : ''}`;
}

/** @param {number} n */
const pad = (n) => String(n).padStart(2, '0');

/**
 * A time (local) for an axis or tooltip, as precise as the visible span needs: seconds under 10 minutes,
 * minutes up to a day, the date from there, the date alone past 60 days.
 * @param {number} epochSeconds
 * @param {number} [spanSeconds]  width of the visible range
 */
export function formatTime(epochSeconds, spanSeconds = 3600) {
  if (epochSeconds === null || epochSeconds === undefined || !Number.isFinite(epochSeconds)) return MISSING;
  const d = new Date(epochSeconds * 1000);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const md = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (spanSeconds <= 600) return `${hm}:${pad(d.getSeconds())}`;
  if (spanSeconds <= 86400) return hm;
  if (spanSeconds <= 60 * 86400) return `${md} ${hm}`;
  return `${d.getFullYear()}-${md}`;
}

/**
 * Full local date and time, for tooltips and the data table where a row must stand on its own.
 * @param {number} epochSeconds
 */
export function formatDateTime(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined || !Number.isFinite(epochSeconds)) return MISSING;
  const d = new Date(epochSeconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
