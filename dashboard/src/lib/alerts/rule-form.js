/**
 * A rule as the editor holds it (strings while typing) and back as the API's body (alert_models.RuleCreate /
 * RulePatch field names). Pure, so the mapping is tested without rendering.
 */

export const AGGREGATIONS = ['rate', 'sum', 'avg', 'min', 'max', 'last', 'count', 'p50', 'p90', 'p95', 'p99'];
export const OPS = ['>', '>=', '<', '<=', '==', '!='];
export const SEVERITIES = ['info', 'warning', 'critical'];
export const NO_DATA_POLICIES = [
  { value: 'ok', label: 'OK (condition false)' },
  { value: 'alerting', label: 'Alerting (condition true)' },
  { value: 'keep_last', label: 'Keep last state' },
  { value: 'nodata', label: 'No data (own state, notifies)' }
];

/**
 * @typedef {{label: string, op: string, value: string}} Matcher
 * @typedef {object} RuleFields
 * @property {string} name
 * @property {string} description
 * @property {string} metric
 * @property {Matcher[]} matchers
 * @property {string} agg
 * @property {string[]|null} by
 * @property {string} window
 * @property {string} op
 * @property {number|null} threshold
 * @property {string} for_duration
 * @property {string} keep_firing_for
 * @property {number|null} resolve_threshold
 * @property {string} severity
 * @property {Record<string, string>} annotations
 * @property {Record<string, string>} labels
 * @property {string|null} no_data_after
 * @property {string} no_data_policy
 * @property {string} group_wait
 * @property {string} group_interval
 * @property {string} repeat_interval
 * @property {string[]} receiver_ids
 * @property {boolean} enabled
 */

/** The API's defaults (RuleCreate), so a new rule's form shows what the server would store. @type {RuleFields} */
const DEFAULTS = {
  name: '', description: '', metric: '', matchers: [], agg: 'sum', by: null, window: '5m', op: '>',
  threshold: null, for_duration: '0s', keep_firing_for: '0s', resolve_threshold: null, severity: 'warning',
  annotations: {}, labels: {}, no_data_after: null, no_data_policy: 'ok', group_wait: '0s',
  group_interval: '5m', repeat_interval: '4h', receiver_ids: [], enabled: true
};

/** @param {Record<string, string>} map */
const rowsOf = (map) => Object.entries(map ?? {}).map(([key, value]) => ({ key, value: String(value) }));
/** @param {Array<{key: string, value: string}>} rows */
const objectOf = (rows) => Object.fromEntries(rows.filter((r) => r.key.trim()).map((r) => [r.key.trim(), r.value]));
/** @param {unknown} v @returns {number|null} */
const num = (v) => (v === null || v === undefined || v === '' ? null : Number(v));
/** @param {unknown} v @returns {string} */
const text = (v) => (v === null || v === undefined ? '' : String(v));

/**
 * The editor's state for a rule (or a new one).
 * @param {any} rule
 */
export function formOf(rule) {
  /** @type {RuleFields} */
  const r = { ...DEFAULTS, ...(rule ?? {}) };
  return {
    name: r.name,
    description: r.description,
    metric: r.metric,
    matchers: r.matchers.map((m) => ({ label: m.label, op: m.op, value: m.value })),
    agg: r.agg,
    // null: one alert per series; []: all series merged; names: one alert per group
    grouping: /** @type {'series'|'labels'|'all'} */ (r.by === null ? 'series' : r.by.length ? 'labels' : 'all'),
    by: (r.by ?? []).join(', '),
    window: r.window,
    op: r.op,
    threshold: /** @type {number|string|null} */ (r.threshold),
    resolve_threshold: /** @type {number|string|null} */ (r.resolve_threshold),
    for_duration: r.for_duration,
    keep_firing_for: r.keep_firing_for,
    severity: r.severity,
    no_data_policy: r.no_data_policy,
    no_data_after: text(r.no_data_after),
    group_wait: r.group_wait,
    group_interval: r.group_interval,
    repeat_interval: r.repeat_interval,
    labels: rowsOf(r.labels),
    annotations: rowsOf(r.annotations),
    receiver_ids: [...r.receiver_ids],
    enabled: r.enabled
  };
}

/** @typedef {ReturnType<typeof formOf>} RuleForm */

/**
 * The request body of the form (every field, RuleCreate's names).
 * @param {RuleForm} form
 */
export function bodyOf(form) {
  return {
    name: form.name.trim(),
    description: form.description,
    metric: form.metric.trim(),
    matchers: form.matchers.map((m) => ({ label: m.label.trim(), op: m.op, value: m.value })),
    agg: form.agg.trim(),
    by: form.grouping === 'series' ? null
      : form.grouping === 'all' ? []
      : form.by.split(',').map((s) => s.trim()).filter(Boolean),
    window: form.window.trim(),
    op: form.op,
    threshold: num(form.threshold),
    for_duration: form.for_duration.trim(),
    keep_firing_for: form.keep_firing_for.trim(),
    resolve_threshold: num(form.resolve_threshold),
    severity: form.severity,
    annotations: objectOf(form.annotations),
    labels: objectOf(form.labels),
    no_data_after: form.no_data_after.trim() || null,
    no_data_policy: form.no_data_policy,
    group_wait: form.group_wait.trim(),
    group_interval: form.group_interval.trim(),
    repeat_interval: form.repeat_interval.trim(),
    receiver_ids: [...form.receiver_ids],
    enabled: form.enabled
  };
}

/** @param {unknown} value */
function canonical(value) {
  if (Array.isArray(value)) return JSON.stringify(value);
  if (value && typeof value === 'object') {
    return JSON.stringify(Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b))));
  }
  return JSON.stringify(value);
}

/**
 * A PATCH body: only the fields that differ from the stored rule (the API answers `{}` with a 422, and a
 * PATCH that resends unchanged matchers would re-check them against today's regex limit). Durations are
 * compared as the API returns them (`300` typed by the user differs from the stored `5m` and is sent).
 * @param {any} rule
 * @param {RuleForm} form
 */
export function patchOf(rule, form) {
  const before = bodyOf(formOf(rule));
  const after = bodyOf(form);
  /** @type {Record<string, unknown>} */
  const patch = {};
  for (const [key, value] of Object.entries(after)) {
    const a = key === 'receiver_ids' ? [.../** @type {string[]} */ (value)].sort() : value;
    const b = key === 'receiver_ids' ? [.../** @type {string[]} */ (before.receiver_ids)].sort() : before[/** @type {keyof typeof before} */ (key)];
    if (canonical(a) !== canonical(b)) patch[key] = value;
  }
  return patch;
}
