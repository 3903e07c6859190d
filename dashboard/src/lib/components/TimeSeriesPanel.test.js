import { fireEvent, render, screen, within } from '@testing-library/svelte';
import { flushSync } from 'svelte';
import { beforeEach, describe, expect, it, vi } from 'vitest';

// jsdom has no canvas: a fake uPlot records what the panel asks of it.
const { FakePlot, instances } = vi.hoisted(() => {
  /** @type {any[]} */
  const instances = [];
  class FakePlot {
    static pxRatio = 1;
    /** @param {any} opts @param {any} data @param {HTMLElement} target */
    constructor(opts, data, target) {
      this.opts = opts;
      this.data = data;
      /** @type {any[]} */
      this.setDataCalls = [];
      /** @type {any[]} */
      this.seriesCalls = [];
      this.redraws = 0;
      this.destroyed = false;
      this.over = document.createElement('div');
      target.appendChild(this.over);
      this.select = { left: 0, top: 0, width: 0, height: 0 };
      this.cursor = { idx: null, left: -1, top: -1 };
      this.scales = { x: { min: 0, max: 1000 } };
      this.series = opts.series;
      this.bbox = { left: 0, top: 0, width: 1000, height: 100 };
      instances.push(this);
    }
    /** @param {any} d */
    setData(d) {
      this.data = d;
      this.setDataCalls.push(d);
    }
    /** @param {number} i @param {any} o */
    setSeries(i, o) {
      this.seriesCalls.push([i, o]);
    }
    setSize() {}
    redraw() {
      this.redraws++;
    }
    destroy() {
      this.destroyed = true;
      this.over.remove();
    }
    /** @param {number} px */
    posToVal(px) {
      return px * 10;
    }
    /** @param {number} v */
    valToPos(v) {
      return v;
    }
    setSelect() {}
  }
  return { FakePlot, instances };
});
vi.mock('uplot', () => ({ default: FakePlot }));

const { default: TimeSeriesPanel } = await import('./TimeSeriesPanel.svelte');

const panel = { id: 'w', title: 'Webhook throughput', type: 'timeseries', metric: 'm', unit: 'reqps', width: 6, height: 2 };
/** @param {Record<string, (number|null)[]>} values @param {number|null} [partialFrom] */
const frame = (values, partialFrom = null) => ({
  times: [0, 60, 120],
  step: 60,
  partialFrom,
  kind: 'counter',
  series: Object.entries(values).map(([key, v]) => ({ key, label: `outcome=${key}`, labels: { outcome: key }, values: v }))
});
/** @param {any} f @param {any} [extra] */
const data = (f, extra = {}) => ({ frame: f, mode: 'live', loading: false, error: null, goLive: vi.fn(), ...extra });

/** a canvas context that records calls */
function fakeCtx() {
  /** @type {any[]} */
  const calls = [];
  return new Proxy(
    { calls },
    {
      get(target, prop) {
        if (prop in target) return /** @type {any} */ (target)[prop];
        return (/** @type {any[]} */ ...args) => calls.push([prop, ...args]);
      },
      set() {
        return true;
      }
    }
  );
}

beforeEach(() => {
  instances.length = 0;
});

describe('TimeSeriesPanel', () => {
  it('is a captioned figure and creates one plot with units on the y axis', () => {
    const { container } = render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] })) } });
    expect(container.querySelector('figure figcaption')?.textContent).toContain('Webhook throughput');
    expect(instances).toHaveLength(1);
    const yAxis = instances[0].opts.axes[1];
    expect(yAxis.values(instances[0], [0, 1500])).toEqual(['0 req/s', '1.5k req/s']);
    expect(instances[0].opts.cursor.sync.key).toBe('mh-dash');
    expect(instances[0].opts.series[1].spanGaps).toBe(false);
  });

  it('feeds new frames with setData and recreates only when the series change', async () => {
    const { rerender } = render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] })) } });
    await rerender({ panel, data: data(frame({ ok: [4, 5, 6] }, 120)) });
    expect(instances).toHaveLength(1);
    // the open step is left out of the plotted line (drawn dashed by the draw hook)
    expect(instances[0].setDataCalls.at(-1)).toEqual([[0, 60, 120], [4, 5, null]]);

    await rerender({ panel, data: data(frame({ ok: [1, 2, 3], error: [0, 1, 0] })) });
    expect(instances).toHaveLength(2);
    expect(instances[0].destroyed).toBe(true);
    expect(instances[1].data).toEqual([[0, 60, 120], [1, 2, 3], [0, 1, 0]]);
  });

  it('rebuilds the plot when the theme changes (canvas colours come from CSS variables)', async () => {
    render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] })) } });
    document.documentElement.setAttribute('data-theme', 'dark');
    await vi.waitFor(() => expect(instances).toHaveLength(2));
    document.documentElement.removeAttribute('data-theme');
  });

  it('gives uPlot a finite x range before data arrives and room for the open step after', () => {
    render(TimeSeriesPanel, { props: { panel, data: data(null, { loading: true }) } });
    const range = instances[0].opts.scales.x.range;
    const [a, b] = range(instances[0], null, null);
    expect(Number.isFinite(a) && Number.isFinite(b) && b > a).toBe(true);
    expect(range(instances[0], 0, 120)).toEqual([0, 180]);
  });

  it('toggles series from keyboard-reachable legend buttons', async () => {
    render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3], error: [0, 1, 0] })) } });
    const legend = screen.getByRole('list', { name: 'Series' });
    const button = within(legend).getByRole('button', { name: /outcome=error/ });
    expect(button.getAttribute('aria-pressed')).toBe('true');
    await fireEvent.click(button);
    expect(button.getAttribute('aria-pressed')).toBe('false');
    expect(instances[0].seriesCalls).toEqual([[2, { show: false }]]);
  });

  it('turns a drag-select into onzoom({from, to}) and clears the selection', () => {
    const onzoom = vi.fn();
    render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] })), onzoom } });
    const u = instances[0];
    u.select = { left: 10, top: 0, width: 20, height: 100 };
    u.opts.hooks.setSelect[0](u);
    expect(onzoom).toHaveBeenCalledWith({ from: 100, to: 300 });
    u.select = { left: 10, top: 0, width: 1, height: 100 }; // a click, not a drag
    u.opts.hooks.setSelect[0](u);
    expect(onzoom).toHaveBeenCalledTimes(1);
  });

  it('shows every series value at the cursor, only in the hovered panel', async () => {
    const { container } = render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3], error: [0, 0.5, 0] }, 120)) } });
    const u = instances[0];
    u.cursor = { idx: 1, left: 50, top: 10 };
    flushSync(() => u.opts.hooks.setCursor[0](u)); // synced from another panel: no tooltip
    expect(container.querySelector('.tooltip')).toBeNull();
    await fireEvent.mouseEnter(u.over);
    flushSync(() => u.opts.hooks.setCursor[0](u));
    const tooltip = /** @type {HTMLElement} */ (container.querySelector('.tooltip'));
    expect([...tooltip.querySelectorAll('.tt-row')].map((r) => r.textContent?.replace(/\s+/g, ' ').trim())).toEqual([
      'outcome=ok 2 req/s',
      'outcome=error 0.5 req/s'
    ]);
    u.cursor = { idx: 2, left: 60, top: 10 };
    flushSync(() => u.opts.hooks.setCursor[0](u));
    expect(container.querySelector('.tt-time')?.textContent).toContain('(in progress)');
  });

  it('draws quantile panels as a p50 line with bands to the higher quantiles', () => {
    const q = {
      times: [0, 60], step: 60, partialFrom: null, kind: 'histogram',
      series: ['p99', 'p50', 'p90'].map((quantile) => ({ key: quantile, label: `http ${quantile}`, labels: { node_type: 'http', quantile }, values: [1, 2] }))
    };
    render(TimeSeriesPanel, { props: { panel: { ...panel, unit: 's' }, data: data(q) } });
    const opts = instances[0].opts;
    expect(opts.series.slice(1).map((/** @type {any} */ s) => s.label)).toEqual(['http p50', 'http p90', 'http p99']);
    expect(opts.series[1].width).toBe(2);
    expect(opts.bands.map((/** @type {any} */ b) => b.series)).toEqual([[2, 1], [3, 2]]);
  });

  it('marks the open step and alert events on the canvas', async () => {
    const alerts = [{ at: 90, state: 'firing', label: 'High error ratio' }, { at: 5000, state: 'resolved' }];
    render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] }, 120)), alerts } });
    const u = instances[0];
    u.ctx = fakeCtx();
    for (const draw of u.opts.hooks.draw) draw(u);
    const calls = u.ctx.calls;
    expect(calls.some((/** @type {any[]} */ c) => c[0] === 'fillText' && c[1] === 'in progress')).toBe(true);
    expect(calls.some((/** @type {any[]} */ c) => c[0] === 'arc' && c[1] === 120 && c[2] === 3)).toBe(true); // the partial value, hollow dot
    const lines = calls.filter((/** @type {any[]} */ c) => c[0] === 'moveTo').map((/** @type {any[]} */ c) => c[1]);
    expect(lines).toContain(90); // the firing alert; 5000 is outside the x scale
    expect(lines).not.toContain(5000);
    // and an accessible list of the events in range
    expect(screen.getByRole('list', { name: 'Alert events in range' }).textContent).toContain('High error ratio firing');
  });

  it('shows loading, error and empty states', async () => {
    const { container, rerender } = render(TimeSeriesPanel, { props: { panel, data: data(null, { loading: true }) } });
    expect(container.textContent).toContain('Loading…');
    await rerender({ panel, data: data(frame({ ok: [1, 2, 3] }), { error: new Error('metrics service down') }) });
    expect(screen.getByRole('alert').textContent).toBe('metrics service down');
    await rerender({ panel, data: data(frame({ ok: [null, null, null] })) });
    expect(container.textContent).toContain('No data in this range');
  });

  it('toggles an accessible data table', async () => {
    render(TimeSeriesPanel, { props: { panel, data: data(frame({ ok: [1, 2, 3] })) } });
    expect(screen.queryByRole('table')).toBeNull();
    const toggle = screen.getByRole('button', { name: 'Show data table' });
    await fireEvent.click(toggle);
    expect(toggle.getAttribute('aria-expanded')).toBe('true');
    expect(within(screen.getByRole('table')).getAllByRole('columnheader').map((h) => h.textContent)).toEqual(['Time', 'outcome=ok']);
    expect(screen.getByRole('button', { name: 'Hide data table' })).toBe(toggle);
  });

  it('offers "Back to live" when paused', async () => {
    const d = data(frame({ ok: [1, 2, 3] }), { mode: 'paused' });
    const ongolive = vi.fn();
    render(TimeSeriesPanel, { props: { panel, data: d, ongolive } });
    await fireEvent.click(screen.getByRole('button', { name: 'Back to live' }));
    expect(d.goLive).toHaveBeenCalled();
    expect(ongolive).toHaveBeenCalled();
  });
});
