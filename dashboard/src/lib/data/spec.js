/**
 * The dashboard spec (stored by `/api/metrics/dashboards`): MeshHook's default dashboard, a client-side
 * mirror of the server's validation rules (for instant form feedback only — the server's
 * `metrics.dashboard_spec_problem` is authoritative), and pure helpers that return new specs.
 */
import { UNIT_VALUES } from '../format/units.js';

export const PANEL_TYPES = /** @type {const} */ (['timeseries', 'stat', 'alerts']);
export const THRESHOLD_COLORS = /** @type {const} */ (['ok', 'warning', 'critical']);
export const AGGREGATIONS = /** @type {const} */ (['rate', 'sum', 'avg', 'min', 'max', 'last', 'count']);
export const MAX_PANELS = 48;
export const MAX_THRESHOLDS = 10;
export const MAX_MATCHERS = 20;
export const PANEL_ID = /^[A-Za-z0-9_-]{1,64}$/;
const METRIC_NAME = /^[A-Za-z_:][A-Za-z0-9_:]*$/;
const LABEL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const QUANTILE = /^p(\d{1,2}(\.\d+)?)$/;

/**
 * @typedef {object} Threshold
 * @property {number} value
 * @property {'ok'|'warning'|'critical'} color
 */

/**
 * @typedef {object} Panel
 * @property {string} id
 * @property {string} title
 * @property {'timeseries'|'stat'|'alerts'} type
 * @property {string} [metric]
 * @property {string} [agg]              rate | sum | avg | min | max | last | count | pNN | quantile(q)
 * @property {string[]|null} [by]        null: one series per label set; []: all merged
 * @property {string[]} [match]          Prometheus label matchers
 * @property {string[]|null} [quantiles] histograms: ['p50','p90','p99'] = p50 line with p90/p99 bands
 *                                       (PanelData queries each; `agg` is then only a fallback)
 * @property {{numerator: string[], denominator: string[]}|null} [ratio]  two queries divided per group and step
 * @property {string} [unit]
 * @property {Threshold[]} [thresholds]
 * @property {number} width              grid columns, 1..12
 * @property {number} height             grid rows, 1..4
 */

/** @typedef {{version: number, title: string, panels: Panel[]}} DashboardSpec */

/**
 * A timeseries/stat panel with every field present.
 * @param {Partial<Panel> & {id: string, title: string, type: Panel['type']}} p
 * @returns {Panel}
 */
function panel(p) {
  return {
    metric: '',
    agg: 'rate',
    by: [],
    match: [],
    quantiles: null,
    ratio: null,
    unit: 'short',
    thresholds: [],
    width: 6,
    height: 1,
    ...p
  };
}

/** Webhook outcomes that count as errors: everything but the successful ones (MeshHook's `accepted`, or `ok`). */
const ERROR_OUTCOMES = 'outcome!~"accepted|ok|success"';

const ERROR_RATIO_THRESHOLDS = [
  { value: 0.01, color: 'warning' },
  { value: 0.05, color: 'critical' }
];

/** MeshHook's default dashboard: webhooks, workflows, HTTP calls, queues, workers, hosts, alerts. */
export const DEFAULT_DASHBOARD = /** @type {DashboardSpec} */ (
  Object.freeze({
    version: 1,
    title: 'MeshHook',
    panels: [
      panel({
        id: 'stat-webhook-rate', title: 'Webhooks', type: 'stat',
        metric: 'meshhook_webhook_requests_total', agg: 'rate', by: [], unit: 'reqps', width: 4
      }),
      panel({
        id: 'stat-error-ratio', title: 'Webhook error ratio', type: 'stat',
        metric: 'meshhook_webhook_requests_total', agg: 'rate', by: [],
        ratio: { numerator: [ERROR_OUTCOMES], denominator: [] },
        unit: 'percentunit', thresholds: ERROR_RATIO_THRESHOLDS, width: 4
      }),
      panel({
        id: 'stat-queue-depth', title: 'Largest ready queue', type: 'stat',
        metric: 'meshhook_queue_messages', agg: 'max', by: [], match: ['state="ready"'],
        unit: 'short', thresholds: [{ value: 1000, color: 'warning' }, { value: 10000, color: 'critical' }], width: 4
      }),
      panel({
        id: 'webhooks', title: 'Webhook throughput by outcome', type: 'timeseries',
        metric: 'meshhook_webhook_requests_total', agg: 'rate', by: ['outcome'], unit: 'reqps', width: 6, height: 2
      }),
      panel({
        id: 'webhook-errors', title: 'Webhook error ratio', type: 'timeseries',
        metric: 'meshhook_webhook_requests_total', agg: 'rate', by: [],
        ratio: { numerator: [ERROR_OUTCOMES], denominator: [] },
        unit: 'percentunit', thresholds: ERROR_RATIO_THRESHOLDS, width: 6, height: 2
      }),
      panel({
        id: 'workflow-runs', title: 'Workflow runs completed by status', type: 'timeseries',
        metric: 'meshhook_workflow_runs_completed_total', agg: 'rate', by: ['status'], unit: 'ops', width: 6, height: 2
      }),
      panel({
        id: 'step-duration', title: 'Workflow step duration by node type', type: 'timeseries',
        metric: 'meshhook_workflow_step_duration_seconds', agg: 'p99', by: ['node_type'],
        quantiles: ['p50', 'p95', 'p99'], unit: 's', width: 6, height: 2
      }),
      panel({
        id: 'http-client-duration', title: 'Outgoing HTTP call duration by node type', type: 'timeseries',
        metric: 'meshhook_http_client_request_duration_seconds', agg: 'p99', by: ['node_type'],
        quantiles: ['p50', 'p90', 'p99'], unit: 's', width: 6, height: 2
      }),
      panel({
        id: 'queues', title: 'Queue messages', type: 'timeseries',
        metric: 'meshhook_queue_messages', agg: 'last', by: ['queue', 'state'], unit: 'short', width: 6, height: 2
      }),
      panel({
        id: 'worker-cpu', title: 'CPU per worker (cores)', type: 'timeseries',
        metric: 'process_cpu_seconds_total', agg: 'rate', by: ['instance'], unit: 'short', width: 6, height: 2
      }),
      panel({
        id: 'worker-memory', title: 'Resident memory per worker', type: 'timeseries',
        metric: 'process_resident_memory_bytes', agg: 'last', by: ['instance'], unit: 'bytes', width: 6, height: 2
      }),
      panel({
        id: 'host-cpu', title: 'Host CPU busy', type: 'timeseries',
        metric: 'system_cpu_utilization_ratio', agg: 'avg', by: ['host'], unit: 'percentunit', width: 6, height: 2
      }),
      panel({
        id: 'host-disk', title: 'Host disk I/O', type: 'timeseries',
        metric: 'system_disk_io_bytes_total', agg: 'rate', by: ['host', 'direction'], unit: 'Bps', width: 6, height: 2
      }),
      panel({
        id: 'host-network', title: 'Host network I/O', type: 'timeseries',
        metric: 'system_network_io_bytes_total', agg: 'rate', by: ['host', 'direction'], unit: 'Bps', width: 6, height: 2
      }),
      { id: 'alerts', title: 'Firing alerts', type: 'alerts', width: 12, height: 2 }
    ]
  })
);

/**
 * Is `agg` an aggregation the server accepts? (`metrics.aggregation_problem`'s list.)
 * @param {unknown} agg
 */
export function isAggregation(agg) {
  if (typeof agg !== 'string') return false;
  const a = agg.toLowerCase();
  if (/** @type {readonly string[]} */ (AGGREGATIONS).includes(a)) return true;
  const p = QUANTILE.exec(a);
  if (p) return Number(p[1]) > 0 && Number(p[1]) < 100;
  const q = /^quantile\(\s*(0?\.\d+|0|1)\s*\)$/.exec(a);
  return q !== null && Number(q[1]) >= 0 && Number(q[1]) <= 1;
}

/** @param {unknown} v */
const isStringList = (v) => Array.isArray(v) && v.every((s) => typeof s === 'string');

/** @param {unknown} v @param {number} lo @param {number} hi */
const intIn = (v, lo, hi) => Number.isInteger(v) && /** @type {number} */ (v) >= lo && /** @type {number} */ (v) <= hi;

/**
 * The problems of a spec as `{path, message}` (path like the server's field keys: `panels.3.width`);
 * empty when valid.
 * @param {any} spec
 * @returns {Array<{path: string, message: string}>}
 */
export function validateSpec(spec) {
  /** @type {Array<{path: string, message: string}>} */
  const problems = [];
  const add = (/** @type {string} */ path, /** @type {string} */ message) => problems.push({ path, message });
  if (!spec || typeof spec !== 'object') {
    add('', 'must be an object');
    return problems;
  }
  if (typeof spec.title !== 'string' || spec.title.trim() === '') add('title', 'is required');
  else if (spec.title.length > 200) add('title', 'must be at most 200 characters');
  if (!Array.isArray(spec.panels)) {
    add('panels', 'must be a list');
    return problems;
  }
  if (spec.panels.length > MAX_PANELS) add('panels', `at most ${MAX_PANELS} panels`);
  const seen = new Set();
  spec.panels.forEach((/** @type {any} */ p, /** @type {number} */ i) => {
    for (const problem of validatePanel(p)) add(`panels.${i}${problem.path ? '.' + problem.path : ''}`, problem.message);
    if (p && typeof p.id === 'string') {
      if (seen.has(p.id)) add(`panels.${i}.id`, `duplicate id "${p.id}"`);
      seen.add(p.id);
    }
  });
  return problems;
}

/**
 * The problems of one panel, paths relative to the panel (`width`, `thresholds.1.color`).
 * @param {any} p
 * @returns {Array<{path: string, message: string}>}
 */
export function validatePanel(p) {
  /** @type {Array<{path: string, message: string}>} */
  const problems = [];
  const add = (/** @type {string} */ path, /** @type {string} */ message) => problems.push({ path, message });
  if (!p || typeof p !== 'object') {
    add('', 'must be an object');
    return problems;
  }
  if (typeof p.id !== 'string' || !PANEL_ID.test(p.id)) add('id', 'must be 1–64 letters, digits, "_" or "-"');
  if (typeof p.title !== 'string' || p.title.trim() === '') add('title', 'is required');
  else if (p.title.length > 200) add('title', 'must be at most 200 characters');
  if (!PANEL_TYPES.includes(p.type)) add('type', `must be one of ${PANEL_TYPES.join(', ')}`);
  if (!intIn(p.width, 1, 12)) add('width', 'must be a whole number from 1 to 12');
  if (!intIn(p.height, 1, 4)) add('height', 'must be a whole number from 1 to 4');
  if (p.type === 'alerts') return problems;

  if (typeof p.metric !== 'string' || !METRIC_NAME.test(p.metric)) add('metric', 'must be a metric name');
  if (p.agg !== undefined && !isAggregation(p.agg)) add('agg', 'unknown aggregation');
  if (p.by !== undefined && p.by !== null) {
    if (!isStringList(p.by)) add('by', 'must be a list of label names');
    else p.by.forEach((/** @type {string} */ l, /** @type {number} */ j) => {
      if (!LABEL_NAME.test(l)) add(`by.${j}`, `"${l}" is not a label name`);
    });
  }
  if (p.match !== undefined) {
    if (!isStringList(p.match)) add('match', 'must be a list of matchers');
    else if (p.match.length > MAX_MATCHERS) add('match', `at most ${MAX_MATCHERS} matchers`);
    else p.match.forEach((/** @type {string} */ m, /** @type {number} */ j) => {
      if (!/^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)/.test(m)) add(`match.${j}`, 'must look like label="value" (=, !=, =~, !~)');
    });
  }
  if (p.unit !== undefined && !UNIT_VALUES.includes(p.unit)) add('unit', 'unknown unit');
  if (p.quantiles !== undefined && p.quantiles !== null) {
    if (!isStringList(p.quantiles) || p.quantiles.length === 0 || !p.quantiles.every((/** @type {string} */ q) => QUANTILE.test(q)))
      add('quantiles', 'must be a list like p50, p90, p99');
  }
  if (p.ratio !== undefined && p.ratio !== null) {
    if (typeof p.ratio !== 'object' || !isStringList(p.ratio.numerator) || !isStringList(p.ratio.denominator))
      add('ratio', 'must have numerator and denominator matcher lists');
  }
  if (p.thresholds !== undefined) {
    if (!Array.isArray(p.thresholds)) add('thresholds', 'must be a list');
    else {
      if (p.thresholds.length > MAX_THRESHOLDS) add('thresholds', `at most ${MAX_THRESHOLDS} thresholds`);
      p.thresholds.forEach((/** @type {any} */ t, /** @type {number} */ j) => {
        if (typeof t?.value !== 'number' || !Number.isFinite(t.value)) add(`thresholds.${j}.value`, 'must be a number');
        if (!THRESHOLD_COLORS.includes(t?.color)) add(`thresholds.${j}.color`, 'must be ok, warning or critical');
      });
    }
  }
  return problems;
}

let counter = 0;

/**
 * A new panel with sensible defaults (a merged rate timeseries, half width); `defaults` override them.
 * Without an id it gets a fresh one, unique within `spec` when given.
 * @param {Partial<Panel>} [defaults]
 * @param {DashboardSpec} [spec]
 * @returns {Panel}
 */
export function newPanel(defaults = {}, spec) {
  const taken = new Set((spec?.panels ?? []).map((p) => p.id));
  let id = defaults.id;
  while (!id || taken.has(id)) id = `panel-${Date.now().toString(36)}-${(counter++).toString(36)}`;
  return panel({ title: 'New panel', type: 'timeseries', height: 2, ...defaults, id });
}

/**
 * @param {DashboardSpec} spec @param {Panel} p
 * @returns {DashboardSpec}
 */
export function addPanel(spec, p) {
  return { ...spec, panels: [...spec.panels, p] };
}

/**
 * The spec with panel `id` moved by `delta` places (clamped to the ends); unknown ids leave it as is.
 * @param {DashboardSpec} spec @param {string} id @param {number} delta
 * @returns {DashboardSpec}
 */
export function movePanel(spec, id, delta) {
  const from = spec.panels.findIndex((p) => p.id === id);
  if (from < 0) return { ...spec, panels: [...spec.panels] };
  const to = Math.max(0, Math.min(spec.panels.length - 1, from + delta));
  const panels = [...spec.panels];
  const [moved] = panels.splice(from, 1);
  panels.splice(to, 0, moved);
  return { ...spec, panels };
}

/**
 * @param {DashboardSpec} spec @param {string} id
 * @returns {DashboardSpec}
 */
export function removePanel(spec, id) {
  return { ...spec, panels: spec.panels.filter((p) => p.id !== id) };
}

/**
 * The spec with the panel that had id `id` replaced by `next` (which may carry a new id); appended when
 * no panel had that id, so an editor can save new and existing panels alike.
 * @param {DashboardSpec} spec @param {string} id @param {Panel} next
 * @returns {DashboardSpec}
 */
export function replacePanel(spec, id, next) {
  const i = spec.panels.findIndex((p) => p.id === id);
  if (i < 0) return addPanel(spec, next);
  const panels = [...spec.panels];
  panels[i] = next;
  return { ...spec, panels };
}
