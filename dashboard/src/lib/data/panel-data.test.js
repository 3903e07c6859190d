import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PanelData, panelQueries } from './panel-data.svelte.js';

const T0 = 1_800_000_000; // epoch s, a whole hour
let nowMs = (T0 + 30) * 1000;

/** A fake of the API: answers from `table(query)`; records every query; can hold answers back. */
function fakeApi(table = (/** @type {any} */ _q) => ({ series: [] })) {
  /** @type {any[]} */
  const queries = [];
  /** @type {Array<() => void>} */
  const held = [];
  let holding = false;
  return {
    queries,
    hold() {
      holding = true;
    },
    releaseLast() {
      held.pop()?.();
    },
    releaseAll() {
      while (held.length) held.shift()?.();
    },
    /** @param {any} q */
    query(q) {
      queries.push(q);
      const answer = table(q);
      if (!holding) return Promise.resolve(answer);
      return new Promise((resolve) => held.push(() => resolve(answer)));
    }
  };
}

/** A fake live connection: hands the panel's handlers to the test. */
function fakeLive() {
  return {
    /** @type {any} */ handlers: null,
    noted: 0,
    unsubscribed: false,
    /** @param {string} _p @param {any} h */
    subscribe(_p, h) {
      this.handlers = h;
      return () => (this.unsubscribed = true);
    },
    noteData() {
      this.noted += 1;
    }
  };
}

const counterPanel = { id: 'w', title: 'Webhooks', metric: 'hooks_total', agg: 'rate', by: ['outcome'], match: [] };
/** @type {PanelData[]} */
const made = [];
/** @param {any} options */
function panel(options) {
  const data = new PanelData({ projectId: 'p1', range: { last: '15m' }, now: () => nowMs, requestFrame: (/** @type {() => void} */ cb) => cb(), ...options });
  made.push(data);
  return data;
}
const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

beforeEach(() => {
  nowMs = (T0 + 30) * 1000;
});
afterEach(() => {
  while (made.length) made.pop()?.destroy();
  vi.useRealTimers();
});

describe('panelQueries', () => {
  it('asks one query per quantile and two for a ratio', () => {
    expect(panelQueries({ metric: 'm', quantiles: ['p50', 'p99'], match: ['a=b'] })).toEqual([
      { agg: 'p50', match: ['a=b'], quantile: 'p50' },
      { agg: 'p99', match: ['a=b'], quantile: 'p99' }
    ]);
    const ratio = panelQueries({ metric: 'm', agg: 'rate', match: ['x=y'], ratio: { numerator: ['outcome!="ok"'], denominator: [] } });
    expect(ratio.map((q) => q.match)).toEqual([['x=y', 'outcome!="ok"'], ['x=y']]);
  });
});

describe('PanelData', () => {
  it('backfills the window on a step-aligned start and draws the answer', async () => {
    const api = fakeApi(() => ({ series: [{ labels: { outcome: 'ok' }, points: [[T0 - 60, 2], [T0, 3]] }] }));
    const live = fakeLive();
    const data = panel({ api, live, panel: counterPanel });
    await flush();
    const q = api.queries[0];
    expect(q).toMatchObject({ projectId: 'p1', metric: 'hooks_total', agg: 'rate', by: ['outcome'], step: '60s', to: T0 + 30 });
    expect(q.from % 60).toBe(0);
    expect(data.loading).toBe(false);
    const { times, series, partialFrom } = data.frame;
    expect(times.at(-1)).toBe(T0);
    expect(partialFrom).toBe(T0);
    expect(series).toHaveLength(1);
    expect(series[0].values.slice(-3)).toEqual([0, 2, 3]); // counters: a covered quiet minute is 0
    expect(live.noted).toBe(1);
  });

  it('reads only the changed tail when a broadcast names its metric, ignoring other metrics', async () => {
    const api = fakeApi();
    const live = fakeLive();
    panel({ api, live, panel: counterPanel, refreshInterval: 0 });
    await flush();
    live.handlers.rollup({ series: [{ name: 'other_total', minute: new Date((T0 - 600) * 1000).toISOString() }] });
    await flush();
    expect(api.queries).toHaveLength(1);
    live.handlers.rollup({ series: [{ name: 'hooks_total', minute: new Date(T0 * 1000).toISOString() }] });
    await flush();
    expect(api.queries).toHaveLength(2);
    expect(api.queries[1]).toMatchObject({ from: T0, to: T0 + 30 });
  });

  it('throttles tail reads to one per refresh interval, covering every minute named meanwhile', async () => {
    vi.useFakeTimers();
    const api = fakeApi();
    const live = fakeLive();
    panel({ api, live, panel: counterPanel, refreshInterval: 1000 });
    await vi.advanceTimersByTimeAsync(0);
    const minute = (/** @type {number} */ t) => ({ series: [{ name: 'hooks_total', minute: new Date(t * 1000).toISOString() }] });
    live.handlers.rollup(minute(T0));
    live.handlers.rollup(minute(T0 - 120));
    live.handlers.rollup(minute(T0));
    await vi.advanceTimersByTimeAsync(0);
    expect(api.queries).toHaveLength(1); // the backfill just ran: wait
    nowMs += 1000;
    await vi.advanceTimersByTimeAsync(1000);
    expect(api.queries).toHaveLength(2);
    expect(api.queries[1].from).toBe(T0 - 120);
  });

  it('keeps a newer tail answer when an older backfill answer arrives after it', async () => {
    let round = 0;
    const api = fakeApi(() => {
      round += 1;
      return { series: [{ labels: { outcome: 'ok' }, points: [[T0, round === 1 ? 1 : 5]] }] };
    });
    const live = fakeLive();
    api.hold();
    const data = panel({ api, live, panel: counterPanel, refreshInterval: 0 });
    live.handlers.rollup({ series: [{ name: 'hooks_total', minute: new Date(T0 * 1000).toISOString() }] });
    await flush();
    expect(api.queries).toHaveLength(2);
    api.releaseLast(); // the tail (issued second) answers first
    await flush();
    api.releaseAll(); // then the stale backfill
    await flush();
    expect(data.frame.series[0].values.at(-1)).toBe(5);
  });

  it('after a resync reads from the end of its last read, at once', async () => {
    const api = fakeApi();
    const live = fakeLive();
    panel({ api, live, panel: counterPanel, refreshInterval: 60_000 });
    await flush();
    nowMs += 95_000; // the socket was gone for a while
    live.handlers.resync();
    await flush();
    expect(api.queries).toHaveLength(2);
    expect(api.queries[1].from).toBe(T0); // the minute of the previous read's end, read again
    expect(api.queries[1].to).toBe(T0 + 125);
  });

  it('gives gauges gaps where counters get zeros', async () => {
    const api = fakeApi(() => ({ series: [{ labels: {}, points: [[T0 - 120, 7], [T0, 9]] }] }));
    const data = panel({ api, live: fakeLive(), panel: { ...counterPanel, agg: 'last', by: [] } });
    await flush();
    expect(data.frame.series[0].values.slice(-3)).toEqual([7, null, 9]);
  });

  it('labels quantile series and divides a ratio per group and step', async () => {
    const api = fakeApi((q) => {
      if (q.agg.startsWith('p')) return { series: [{ labels: { node: 'http' }, points: [[T0, q.agg === 'p50' ? 0.1 : 0.9]] }] };
      const failing = q.match.includes('outcome!="ok"');
      return { series: [{ labels: {}, points: [[T0 - 60, failing ? 1 : 4], [T0, failing ? 0 : 0]] }] };
    });
    const quantiles = panel({ api, live: fakeLive(), panel: { metric: 'd', by: ['node'], quantiles: ['p50', 'p99'] } });
    const ratio = panel({ api, live: fakeLive(), panel: { metric: 'r', agg: 'rate', by: [], ratio: { numerator: ['outcome!="ok"'], denominator: [] } } });
    await flush();
    expect(quantiles.frame.series.map((s) => [s.labels.quantile, s.values.at(-1)])).toEqual([['p50', 0.1], ['p99', 0.9]]);
    expect(ratio.frame.series[0].values.slice(-2)).toEqual([0.25, null]); // 0 of 0 is not 0 %
  });

  it('a fixed range is paused: broadcasts do not read', async () => {
    const api = fakeApi();
    const live = fakeLive();
    const data = panel({ api, live, panel: counterPanel, range: { from: T0 - 3600, to: T0 }, refreshInterval: 0 });
    await flush();
    expect(data.mode).toBe('paused');
    live.handlers.rollup({ series: [{ name: 'hooks_total', minute: new Date(T0 * 1000).toISOString() }] });
    await flush();
    expect(api.queries).toHaveLength(1);
    data.setRange({ last: '1h' });
    expect(data.mode).toBe('live');
  });

  it('shows an error, keeps the data and reads the failed steps again later', async () => {
    vi.useFakeTimers();
    let fail = false;
    const api = fakeApi(() => {
      if (fail) throw new Error('the metrics service did not answer');
      return { series: [{ labels: {}, points: [[T0, 1]] }] };
    });
    const live = fakeLive();
    const data = panel({ api, live, panel: { ...counterPanel, by: [] }, refreshInterval: 0 });
    await vi.advanceTimersByTimeAsync(0);
    fail = true;
    live.handlers.rollup({ series: [{ name: 'hooks_total', minute: new Date(T0 * 1000).toISOString() }] });
    await vi.advanceTimersByTimeAsync(0);
    expect(data.error).toMatch(/did not answer/);
    expect(data.frame.series[0].values.at(-1)).toBe(1);
    fail = false;
    nowMs += 15_000;
    await vi.advanceTimersByTimeAsync(15_000);
    expect(data.error).toBeNull();
    expect(api.queries.at(-1).from).toBe(T0);
  });

  it('stops reading and unsubscribes when destroyed', async () => {
    const api = fakeApi();
    const live = fakeLive();
    const data = panel({ api, live, panel: counterPanel, refreshInterval: 0 });
    await flush();
    data.destroy();
    live.handlers.rollup({ series: [{ name: 'hooks_total', minute: new Date(T0 * 1000).toISOString() }] });
    await flush();
    expect(api.queries).toHaveLength(1);
    expect(live.unsubscribed).toBe(true);
  });

  it('draws a whole minute from the broadcast at once, before the SQL answer arrives', async () => {
    const api = fakeApi(() => ({ series: [] }));
    const live = fakeLive();
    const data = panel({ api, live, panel: counterPanel, refreshInterval: 0 });
    await flush();
    nowMs = (T0 - 30) * 1000; // subscribed half a minute before T0: minute T0 is seen whole
    live.handlers.resync();
    await flush();
    api.hold();
    nowMs = (T0 + 30) * 1000;
    const at = new Date(T0 * 1000).toISOString();
    live.handlers.rollup({ series: [
      { series_id: 1, name: 'hooks_total', kind: 'counter', labels: { outcome: 'ok', signature: 'v' }, minute: at, count: 3, sum: 120 },
      { series_id: 2, name: 'hooks_total', kind: 'counter', labels: { outcome: 'ok', signature: 'x' }, minute: at, count: 1, sum: 60 },
      { series_id: 3, name: 'hooks_total', kind: 'counter', labels: { outcome: 'error' }, minute: at, count: 1, sum: 6 }
    ] });
    const byOutcome = Object.fromEntries(data.frame.series.map((s) => [s.labels.outcome, s.values.at(-1)]));
    expect(byOutcome).toEqual({ ok: 3, error: 0.1 }); // (120 + 60) / 60 and 6 / 60, per second
    // a later broadcast of one series replaces its totals (they are totals, not deltas)
    live.handlers.rollup({ series: [
      { series_id: 2, name: 'hooks_total', kind: 'counter', labels: { outcome: 'ok', signature: 'x' }, minute: at, count: 2, sum: 120 }
    ] });
    data.scheduleDraw();
    expect(data.frame.series.find((s) => s.labels.outcome === 'ok')?.values.at(-1)).toBe(4);
    api.releaseAll();
  });

  it('leaves to SQL a minute that began before the channel was joined, and what the broadcast cannot tell', async () => {
    const at = new Date(T0 * 1000).toISOString();
    const item = { series_id: 1, name: 'd', kind: 'histogram', labels: { node: 'http' }, minute: at, count: 1, sum: 0.5, p99: 0.5 };
    /** @param {any} spec @param {number} joinedAtMs */
    async function drawn(spec, joinedAtMs) {
      const api = fakeApi(() => ({ series: [] }));
      const live = fakeLive();
      const data = panel({ api, live, panel: { metric: 'd', ...spec }, refreshInterval: 0 });
      await flush();
      nowMs = joinedAtMs;
      live.handlers.resync();
      api.hold();
      nowMs = (T0 + 30) * 1000;
      live.handlers.rollup({ series: [item] });
      const values = data.frame.series.map((s) => s.values.at(-1));
      api.releaseAll();
      return values;
    }
    expect(await drawn({ by: ['node'], quantiles: ['p99'] }, (T0 - 30) * 1000)).toEqual([0.5]); // one series: exact
    expect(await drawn({ by: [], quantiles: ['p99'] }, (T0 - 30) * 1000)).toEqual([]); // merged sketches: SQL only
    expect(await drawn({ by: ['node'], agg: 'rate' }, (T0 + 10) * 1000)).toEqual([]); // joined inside the minute
    expect(await drawn({ by: ['node'], agg: 'rate' }, (T0 - 30) * 1000)).toEqual([1 / 60]);
  });
});
