// Panel with the real PanelData (lead's module) over a fake api and live connection: checks that the
// frame it composes reaches the chart and the tile, and that range changes and unmount reach PanelData.
import { fireEvent, render, screen, waitFor, within } from '@testing-library/svelte';
import { describe, expect, it, vi } from 'vitest';
import Harness from './Panel.harness.test.svelte';

vi.mock('uplot', () => ({
  default: class {
    static pxRatio = 1;
    /** @param {any} _o @param {any} _d @param {HTMLElement} target */
    constructor(_o, _d, target) {
      this.over = document.createElement('div');
      target.appendChild(this.over);
    }
    setData() {}
    setSize() {}
    setSeries() {}
    redraw() {}
    destroy() {}
  }
}));

function fakes() {
  const unsubscribe = vi.fn();
  const live = { status: 'live', lastDataAt: null, subscribe: vi.fn(() => unsubscribe), noteData: vi.fn() };
  const api = {
    query: vi.fn(async (/** @type {any} */ q) => {
      const step = Number(String(q.step).replace(/s$/, '')) || 60;
      const from = Math.floor(Number(q.from) / step) * step;
      return {
        series: [
          { labels: { outcome: 'ok' }, points: [[from, 4], [from + step, 6]] },
          { labels: { outcome: 'error' }, points: [[from, 1]] }
        ]
      };
    })
  };
  return { api, live, unsubscribe };
}

const panel = { id: 'w', title: 'Webhooks', type: 'timeseries', metric: 'meshhook_webhook_requests_total', agg: 'rate', by: ['outcome'], match: [], unit: 'reqps', width: 6, height: 2 };

describe('Panel (with the real PanelData)', () => {
  it('queries through the context and shows the frame in the data table', async () => {
    const { api, live } = fakes();
    render(Harness, { props: { api, live, projectId: 'p1', panel, range: { last: '1h' } } });
    expect(api.query).toHaveBeenCalled();
    expect(api.query.mock.calls[0][0]).toMatchObject({ projectId: 'p1', metric: panel.metric, agg: 'rate', by: ['outcome'] });
    await fireEvent.click(screen.getByRole('button', { name: 'Show data table' }));
    await waitFor(() => {
      const headers = within(screen.getByRole('table')).getAllByRole('columnheader').map((h) => h.textContent);
      expect(headers.slice(1).sort()).toEqual(['outcome=error', 'outcome=ok']);
    });
    expect(screen.getByRole('table').textContent).toContain('6 req/s');
  });

  it('passes range changes to PanelData and cleans up on unmount', async () => {
    const { api, live, unsubscribe } = fakes();
    const { rerender, unmount } = render(Harness, { props: { api, live, projectId: 'p1', panel, range: { last: '1h' } } });
    const calls = api.query.mock.calls.length;
    await rerender({ api, live, projectId: 'p1', panel, range: { from: 1_800_000_000, to: 1_800_003_600 } });
    await waitFor(() => expect(api.query.mock.calls.length).toBeGreaterThan(calls));
    expect(api.query.mock.calls.at(-1)?.[0].to).toBe(1_800_003_600);
    expect(screen.getByText('Paused')).toBeTruthy();
    unmount();
    expect(unsubscribe).toHaveBeenCalled();
  });

  it('renders a stat panel as a tile', async () => {
    const { api, live } = fakes();
    const { container } = render(Harness, { props: { api, live, projectId: 'p1', panel: { ...panel, type: 'stat', by: [] }, range: { last: '1h' } } });
    await waitFor(() => expect(container.querySelector('.value')).not.toBeNull());
  });

  it('reads nothing until the panel comes near the viewport', async () => {
    /** @type {Array<(entries: any[]) => void>} */
    const observers = [];
    vi.stubGlobal('IntersectionObserver', class {
      /** @param {(entries: any[]) => void} callback */
      constructor(callback) {
        observers.push(callback);
      }
      observe() {}
      disconnect() {}
    });
    try {
      const { api, live } = fakes();
      render(Harness, { props: { api, live, projectId: 'p1', panel, range: { last: '1h' } } });
      await waitFor(() => expect(observers).toHaveLength(1));
      expect(api.query).not.toHaveBeenCalled();
      expect(screen.getByRole('figure')).toBeTruthy(); // the panel's place is kept, in its loading state
      observers[0]([{ isIntersecting: true }]);
      await waitFor(() => expect(api.query).toHaveBeenCalled());
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
