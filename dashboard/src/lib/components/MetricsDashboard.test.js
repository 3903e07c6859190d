// MetricsDashboard mounted with fakes: the lead's live connection and PanelData are replaced by vi.mock
// (they open sockets and timers; their own tests cover them), uPlot by a canvas-free stand-in.
import { fireEvent, render, screen, within } from '@testing-library/svelte';
import { createRawSnippet, flushSync } from 'svelte';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_DASHBOARD } from '../data/spec.js';

const fakes = vi.hoisted(() => {
  /** @type {any[]} */
  const panels = [];
  /** @type {any[]} */
  const plots = [];
  const live = { status: 'live', lastDataAt: Date.now(), subscribe: () => () => {}, noteData() {} };
  class FakePanelData {
    /** @param {any} options */
    constructor(options) {
      this.options = options;
      this.panel = options.panel;
      /** @type {any[]} */
      this.ranges = [];
      this.range = options.range;
      this.mode = options.range?.last ? 'live' : 'paused';
      this.loading = false;
      this.error = null;
      this.destroyed = false;
      this.frame = {
        times: [0, 60],
        step: 60,
        partialFrom: null,
        series: [{ key: 'all', label: 'all', labels: {}, values: [1, 2] }]
      };
      panels.push(this);
    }
    /** @param {any} r */
    setRange(r) {
      this.range = r;
      this.ranges.push(r);
    }
    destroy() {
      this.destroyed = true;
    }
  }
  class FakePlot {
    static pxRatio = 1;
    /** @param {any} opts @param {any} data @param {HTMLElement} target */
    constructor(opts, data, target) {
      this.opts = opts;
      this.over = document.createElement('div');
      target.appendChild(this.over);
      this.select = { left: 0, top: 0, width: 0, height: 0 };
      this.cursor = { idx: null };
      plots.push(this);
    }
    setData() {}
    setSize() {}
    setSeries() {}
    redraw() {}
    destroy() {}
    setSelect() {}
    /** @param {number} px */
    posToVal(px) {
      return 1_800_000_000 + px;
    }
  }
  return { panels, plots, live, FakePanelData, FakePlot };
});

vi.mock('../data/live.svelte.js', () => ({ getLiveConnection: () => fakes.live }));
vi.mock('../data/panel-data.svelte.js', () => ({ PanelData: fakes.FakePanelData }));
vi.mock('uplot', () => ({ default: fakes.FakePlot }));

const { default: MetricsDashboard } = await import('./MetricsDashboard.svelte');
const { default: Harness } = await import('./MetricsDashboard.harness.test.svelte');

const supabase = { auth: { getSession: async () => ({ data: { session: { access_token: 't' } } }) } };
const dataPanels = DEFAULT_DASHBOARD.panels.filter((p) => p.type !== 'alerts');

beforeEach(() => {
  fakes.panels.length = 0;
  fakes.plots.length = 0;
});
afterEach(() => vi.useRealTimers());

describe('MetricsDashboard', () => {
  it('renders the header and one PanelData per timeseries/stat panel', () => {
    const alertsPanel = createRawSnippet((/** @type {() => any} */ args) => ({
      render: () => `<div data-testid="alerts">alerts of ${args().projectId}</div>`
    }));
    render(MetricsDashboard, { props: { supabase, projectId: 'p1', alertsPanel } });
    expect(screen.getByRole('heading', { name: 'MeshHook' })).toBeTruthy();
    expect(screen.getByLabelText('Time range')).toBeTruthy();
    expect(screen.getByRole('status').textContent).toContain('Live');
    expect(fakes.panels).toHaveLength(dataPanels.length);
    expect(fakes.panels[0].options).toMatchObject({ projectId: 'p1', range: { last: '1h' } });
    expect(typeof fakes.panels[0].options.api.query).toBe('function');
    expect(fakes.panels[0].options.live).toBe(fakes.live);
    // one captioned figure per data panel; stats are tiles, not uPlot charts
    expect(document.querySelectorAll('figure')).toHaveLength(dataPanels.length);
    expect(fakes.plots).toHaveLength(dataPanels.filter((p) => p.type === 'timeseries').length);
    expect(screen.getByTestId('alerts').textContent).toBe('alerts of p1');
    expect(screen.queryByRole('button', { name: 'Edit dashboard' })).toBeNull();
  });

  it('moves every panel to a new range and destroys them on unmount', async () => {
    const { unmount } = render(MetricsDashboard, { props: { supabase, projectId: 'p1' } });
    await fireEvent.change(screen.getByLabelText('Time range'), { target: { value: '24h' } });
    for (const p of fakes.panels) expect(p.ranges).toEqual([{ last: '24h' }]);
    unmount();
    expect(fakes.panels.every((p) => p.destroyed)).toBe(true);
  });

  it('zooms all panels to a dragged range, then goes back to live', async () => {
    /** @type {any[]} */
    const ranges = [];
    render(Harness, { props: { supabase, projectId: 'p1', onrange: (/** @type {any} */ r) => ranges.push(r) } });
    const u = fakes.plots[0];
    u.select = { left: 100, top: 0, width: 600, height: 50 };
    flushSync(() => u.opts.hooks.setSelect[0](u));
    expect(ranges.at(-1)).toEqual({ from: 1_800_000_100, to: 1_800_000_700 });
    for (const p of fakes.panels) expect(p.ranges.at(-1)).toEqual({ from: 1_800_000_100, to: 1_800_000_700 });
    await fireEvent.click(screen.getByRole('button', { name: 'Back to live (last 1 h)' }));
    expect(ranges.at(-1)).toEqual({ last: '1h' });
    expect(screen.queryByRole('button', { name: /Back to live/ })).toBeNull();
  });

  it('edits a draft: add, reorder, remove, then saves through onsave', async () => {
    const onsave = vi.fn();
    const spec = { version: 1, title: 'Mine', panels: DEFAULT_DASHBOARD.panels.slice(3, 5) };
    render(MetricsDashboard, { props: { supabase, projectId: 'p1', spec, editable: true, onsave } });
    await fireEvent.click(screen.getByRole('button', { name: 'Edit dashboard' }));

    await fireEvent.click(screen.getByRole('button', { name: 'Add panel' }));
    const editor = screen.getByRole('form', { name: 'Add panel' });
    await fireEvent.input(within(editor).getByLabelText('Title'), { target: { value: 'Queue depth' } });
    await fireEvent.input(within(editor).getByLabelText('ID'), { target: { value: 'queue' } });
    await fireEvent.input(within(editor).getByLabelText('Metric'), { target: { value: 'meshhook_queue_messages' } });
    await fireEvent.click(within(editor).getByRole('button', { name: 'Save' }));

    await fireEvent.click(screen.getByRole('button', { name: 'Move Queue depth up' }));
    await fireEvent.click(screen.getByRole('button', { name: `Remove ${spec.panels[0].title}` }));
    await fireEvent.click(screen.getByRole('button', { name: 'Save dashboard' }));

    expect(onsave).toHaveBeenCalledTimes(1);
    expect(onsave.mock.calls[0][0].panels.map((/** @type {any} */ p) => p.id)).toEqual(['queue', spec.panels[1].id]);
    expect(screen.queryByRole('button', { name: 'Save dashboard' })).toBeNull();
    expect([...document.querySelectorAll('[data-panel-id]')].map((e) => /** @type {HTMLElement} */ (e).dataset.panelId)).toEqual([
      'queue',
      spec.panels[1].id
    ]);
  });

  it('keeps editing and shows why when onsave fails', async () => {
    const onsave = vi.fn().mockRejectedValue(new Error('forbidden'));
    render(MetricsDashboard, { props: { supabase, projectId: 'p1', spec: { ...DEFAULT_DASHBOARD }, editable: true, onsave } });
    await fireEvent.click(screen.getByRole('button', { name: 'Edit dashboard' }));
    await fireEvent.click(screen.getByRole('button', { name: 'Save dashboard' }));
    await vi.waitFor(() => expect(screen.getByRole('alert').textContent).toContain('forbidden'));
    expect(screen.getByRole('button', { name: 'Save dashboard' })).toBeTruthy();
  });
});
