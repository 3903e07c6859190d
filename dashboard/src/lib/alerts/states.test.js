import { describe, expect, it } from 'vitest';
import { sortAlerts, stateInfo } from './states.js';
import { coalesce } from './coalesce.js';
import { formatAlertValue } from './format.js';

describe('states', () => {
  it('sorts firing, nodata, pending, recovering; newest first within a state', () => {
    const sorted = sortAlerts([
      { state: 'recovering', since: '2026-01-01T00:00:00Z' },
      { state: 'pending', since: '2026-01-01T00:00:00Z' },
      { state: 'firing', since: '2026-01-01T00:00:00Z' },
      { state: 'firing', since: '2026-01-02T00:00:00Z' },
      { state: 'nodata', since: null }
    ]);
    expect(sorted.map((a) => `${a.state}@${a.since?.slice(0, 10)}`)).toEqual([
      'firing@2026-01-02', 'firing@2026-01-01', 'nodata@undefined', 'pending@2026-01-01', 'recovering@2026-01-01'
    ]);
  });

  it('shows an unknown state by name, last', () => {
    expect(stateInfo('weird')).toMatchObject({ label: 'weird', order: 99 });
    expect(stateInfo('firing').color).toBe('var(--mh-critical)');
  });

  it('formats values without a unit', () => {
    expect(formatAlertValue(null)).toBe('–');
    expect(formatAlertValue(0.123456)).toBe('0.1235');
    expect(formatAlertValue(1.5e9)).toBe('1.50e+9');
    expect(formatAlertValue(0)).toBe('0');
  });
});

describe('coalesce', () => {
  it('runs one load at a time and folds triggers during it into one more', async () => {
    /** @type {Array<() => void>} */
    const pending = [];
    let loads = 0;
    const reads = coalesce(() => {
      loads += 1;
      return new Promise((resolve) => pending.push(() => resolve(undefined)));
    });
    const first = reads.run();
    reads.run();
    reads.run();
    expect(loads).toBe(1);
    pending.shift()?.();
    await new Promise((r) => setTimeout(r, 0));
    expect(loads).toBe(2);
    pending.shift()?.();
    await first;
    expect(loads).toBe(2);
    expect(reads.busy).toBe(false);
  });

  it('keeps going after a failed load', async () => {
    let loads = 0;
    const reads = coalesce(async () => {
      loads += 1;
      if (loads === 1) throw new Error('down');
    });
    const run = reads.run();
    reads.run();
    await run;
    expect(loads).toBe(2);
  });
});
