import { describe, expect, it } from 'vitest';
import { alertMarkers } from './markers.js';
import { historyEvent, transition } from './fake-api.test.fixtures.js';

describe('alertMarkers', () => {
  it('turns history events (newest first) into markers oldest first, in epoch seconds', () => {
    const markers = alertMarkers([
      historyEvent({ id: 3, at: '2026-11-27T04:31:00Z', state: 'resolved', previous: 'firing' }),
      historyEvent({ id: 2, at: '2026-11-27T04:12:00Z', state: 'firing' }),
      historyEvent({ id: 1, at: '2026-11-27T04:10:00Z', state: 'pending', previous: 'inactive' })
    ]);
    expect(markers.map((m) => m.at)).toEqual([
      Date.parse('2026-11-27T04:10:00Z') / 1000,
      Date.parse('2026-11-27T04:12:00Z') / 1000,
      Date.parse('2026-11-27T04:31:00Z') / 1000
    ]);
    expect(markers.map((m) => m.state)).toEqual(['pending', 'firing', 'resolved']);
    expect(markers[1].label).toBe('webhook errors: Firing (route="/api/hooks/[slug]", severity="critical")');
  });

  it('orders events of one evaluation by id and skips rows without a time', () => {
    const markers = alertMarkers([
      historyEvent({ id: 8, fingerprint: 'b', labels: { route: '/b' } }),
      historyEvent({ id: 7, fingerprint: 'a', labels: { route: '/a' } }),
      historyEvent({ id: 6, at: 'not a time' })
    ]);
    expect(markers.map((m) => m.label)).toEqual(['webhook errors: Firing (route="/a")', 'webhook errors: Firing (route="/b")']);
  });

  it('takes preview transitions too (named by their alertname label)', () => {
    const [marker] = alertMarkers([transition({ state: 'nodata' })]);
    expect(marker.label.startsWith('webhook errors: No data')).toBe(true);
  });

  it('is empty for nothing', () => {
    expect(alertMarkers(null)).toEqual([]);
    expect(alertMarkers([])).toEqual([]);
  });
});
