import { describe, expect, it } from 'vitest';
import {
  DEFAULT_DASHBOARD,
  isAggregation,
  movePanel,
  newPanel,
  removePanel,
  replacePanel,
  validateSpec
} from './spec.js';

/** @param {any} spec */
const paths = (spec) => validateSpec(spec).map((p) => p.path);

describe('DEFAULT_DASHBOARD', () => {
  it('is valid', () => {
    expect(validateSpec(DEFAULT_DASHBOARD)).toEqual([]);
  });

  it('covers the MeshHook metrics and an alerts panel', () => {
    const metrics = new Set(DEFAULT_DASHBOARD.panels.map((p) => p.metric));
    for (const m of [
      'meshhook_webhook_requests_total',
      'meshhook_workflow_runs_completed_total',
      'meshhook_workflow_step_duration_seconds',
      'meshhook_http_client_request_duration_seconds',
      'meshhook_queue_messages',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'system_disk_io_bytes_total',
      'system_network_io_bytes_total'
    ])
      expect(metrics.has(m), m).toBe(true);
    expect(DEFAULT_DASHBOARD.panels.some((p) => p.type === 'alerts')).toBe(true);
    const ratio = DEFAULT_DASHBOARD.panels.find((p) => p.id === 'webhook-errors');
    expect(ratio?.ratio).toEqual({ numerator: ['outcome!~"accepted|ok|success"'], denominator: [] });
    expect(ratio?.unit).toBe('percentunit');
    const steps = DEFAULT_DASHBOARD.panels.find((p) => p.id === 'step-duration');
    expect(steps?.quantiles?.[0]).toBe('p50');
  });
});

describe('validateSpec', () => {
  const base = () => structuredClone({ ...DEFAULT_DASHBOARD, panels: [...DEFAULT_DASHBOARD.panels] });

  it('rejects more than 48 panels', () => {
    const spec = base();
    spec.panels = Array.from({ length: 49 }, (_, i) => newPanel({ id: `p${i}`, metric: 'm' }));
    expect(paths(spec)).toContain('panels');
  });

  it('rejects duplicate and malformed ids', () => {
    const spec = base();
    spec.panels = [newPanel({ id: 'a', metric: 'm' }), newPanel({ id: 'a', metric: 'm' }), newPanel({ id: 'b c', metric: 'm' })];
    expect(validateSpec(spec)).toEqual([
      { path: 'panels.1.id', message: 'duplicate id "a"' },
      { path: 'panels.2.id', message: expect.stringMatching(/letters/) }
    ]);
    spec.panels = [newPanel({ id: 'x'.repeat(65), metric: 'm' })];
    expect(paths(spec)).toEqual(['panels.0.id']);
  });

  it('checks type, unit, width, height and metric', () => {
    const spec = base();
    spec.panels = [
      /** @type {any} */ ({ ...newPanel({ id: 'a', metric: 'm' }), type: 'pie', unit: 'furlongs', width: 13, height: 0 }),
      newPanel({ id: 'b', metric: 'not a metric' }),
      newPanel({ id: 'c', metric: 'm', width: 1.5 })
    ];
    expect(paths(spec)).toEqual(['panels.0.type', 'panels.0.width', 'panels.0.height', 'panels.0.unit', 'panels.1.metric', 'panels.2.width']);
  });

  it('checks thresholds: at most 10, colors ok/warning/critical, finite values', () => {
    const spec = base();
    const t = Array.from({ length: 11 }, (_, i) => ({ value: i, color: 'ok' }));
    spec.panels = [
      /** @type {any} */ (newPanel({ id: 'a', metric: 'm', thresholds: /** @type {any} */ (t) })),
      /** @type {any} */ (newPanel({ id: 'b', metric: 'm', thresholds: /** @type {any} */ ([{ value: NaN, color: 'red' }]) }))
    ];
    expect(paths(spec)).toEqual(['panels.0.thresholds', 'panels.1.thresholds.0.value', 'panels.1.thresholds.0.color']);
  });

  it('checks aggregations, matchers and label names', () => {
    const spec = base();
    spec.panels = [newPanel({ id: 'a', metric: 'm', agg: 'median', by: ['ok', 'bad-label'], match: ['outcome="ok"', 'nonsense'] })];
    expect(paths(spec)).toEqual(['panels.0.agg', 'panels.0.by.1', 'panels.0.match.1']);
  });

  it('does not need a metric for alerts panels', () => {
    expect(validateSpec({ version: 1, title: 't', panels: [{ id: 'al', title: 'A', type: 'alerts', width: 12, height: 2 }] })).toEqual([]);
  });

  it('rejects a non-object', () => {
    expect(paths(null)).toEqual(['']);
    expect(paths({ title: '' })).toEqual(['title', 'panels']);
  });
});

describe('isAggregation', () => {
  it('accepts the server list', () => {
    for (const a of ['rate', 'SUM', 'last', 'p50', 'p99.9', 'quantile(0.95)']) expect(isAggregation(a), a).toBe(true);
    for (const a of ['p100', 'p0', 'median', 'quantile(2)', '']) expect(isAggregation(a), a).toBe(false);
  });
});

describe('spec helpers', () => {
  const spec = { version: 1, title: 't', panels: ['a', 'b', 'c'].map((id) => newPanel({ id, metric: 'm' })) };
  const ids = (/** @type {any} */ s) => s.panels.map((/** @type {any} */ p) => p.id);

  it('move panels without mutating, clamped at the ends', () => {
    expect(ids(movePanel(spec, 'c', -1))).toEqual(['a', 'c', 'b']);
    expect(ids(movePanel(spec, 'a', 1))).toEqual(['b', 'a', 'c']);
    expect(ids(movePanel(spec, 'a', -5))).toEqual(['a', 'b', 'c']);
    expect(ids(movePanel(spec, 'b', 10))).toEqual(['a', 'c', 'b']);
    expect(ids(spec)).toEqual(['a', 'b', 'c']);
  });

  it('removes and replaces panels', () => {
    expect(ids(removePanel(spec, 'b'))).toEqual(['a', 'c']);
    const next = replacePanel(spec, 'b', newPanel({ id: 'b2', metric: 'x' }));
    expect(ids(next)).toEqual(['a', 'b2', 'c']);
    expect(ids(replacePanel(spec, 'zz', newPanel({ id: 'd', metric: 'x' })))).toEqual(['a', 'b', 'c', 'd']);
    expect(ids(spec)).toEqual(['a', 'b', 'c']);
  });

  it('gives new panels unique valid ids', () => {
    const p = newPanel({}, spec);
    expect(p.id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(newPanel({ id: 'a' }, spec).id).not.toBe('a');
    expect(newPanel({}).id).not.toBe(newPanel({}).id);
  });
});
