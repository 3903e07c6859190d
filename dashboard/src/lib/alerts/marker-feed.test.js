import { describe, expect, it } from 'vitest';
import { AlertMarkerFeed } from './marker-feed.svelte.js';

const T = Date.parse('2026-12-06T00:30:00Z');
const event = (/** @type {number} */ id, /** @type {string} */ at, /** @type {string} */ state, /** @type {string|null} */ rule) => ({
  id, project_id: 'p1', rule_id: rule, rule_name: `rule ${rule}`, labels: {}, state, previous: null, fingerprint: 'f', value: 1, at
});

function setup() {
  /** @type {any[]} */
  const calls = [];
  let history = [event(2, '2026-12-06T00:20:00Z', 'resolved', 'r1'), event(1, '2026-12-06T00:10:00Z', 'firing', 'r1'),
    event(3, '2026-12-06T00:15:00Z', 'firing', 'gone')];
  const api = {
    /** @param {string} path @param {any} params */
    async get(path, params) {
      calls.push({ path, params });
      if (path.endsWith('/history')) return { events: history };
      throw new Error(`unexpected GET ${path}`);
    },
    /** @param {string} path @param {any} params @param {string} key */
    async list(path, params, key) {
      calls.push({ path, params, key });
      return { rules: [{ id: 'r1', metric: 'hooks_total' }] };
    }
  };
  /** @type {any} */
  const handlers = {};
  const live = { subscribe: (/** @type {string} */ _p, /** @type {any} */ h) => (Object.assign(handlers, h), () => (handlers.off = true)) };
  const feed = new AlertMarkerFeed({ api: /** @type {any} */ (api), live, projectId: 'p1', range: { last: '1h' }, now: () => T, firstReadDelay: 0 });
  return { feed, calls, handlers, setHistory: (/** @type {any[]} */ h) => (history = h) };
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

describe('AlertMarkerFeed', () => {
  it('reads the history of the range and tags each marker with its rule metric, oldest first', async () => {
    const { feed, calls } = setup();
    feed.setRange({ last: '1h' });
    await settle();
    const history = calls.find((c) => c.path.endsWith('/history'));
    expect(history.params).toMatchObject({ project_id: 'p1', from: '2026-12-05T23:30:00.000Z' });
    expect(feed.markers.map((m) => [m.state, m.metric])).toEqual([
      ['firing', 'hooks_total'], ['firing', undefined], ['resolved', 'hooks_total']
    ]);
  });

  it('reads again on an alert broadcast and a resync, and stops with destroy', async () => {
    const { feed, calls, handlers, setHistory } = setup();
    feed.setRange({ last: '1h' });
    await settle();
    setHistory([]);
    handlers.alert({ transitions: [] });
    await settle();
    expect(feed.markers).toEqual([]);
    handlers.resync();
    await settle();
    expect(calls.filter((c) => c.path.endsWith('/history'))).toHaveLength(3);
    feed.destroy();
    expect(handlers.off).toBe(true);
  });
});
