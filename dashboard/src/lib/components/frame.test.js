import { describe, expect, it } from 'vitest';
import { isEmpty, latestSettled, thresholdLevel } from './frame.js';

const frame = {
  times: [0, 60, 120, 180],
  step: 60,
  series: [{ key: 'a', label: 'a', labels: {}, values: [1, 2, null, 9] }],
  partialFrom: 180,
  kind: 'counter'
};

describe('frame helpers', () => {
  it('skips the partial step and nulls for the latest value', () => {
    expect(latestSettled(frame)).toEqual({ value: 2, time: 60 });
    expect(latestSettled({ ...frame, partialFrom: null })).toEqual({ value: 9, time: 180 });
    expect(latestSettled(null)).toBeNull();
  });
  it('lets the highest threshold at or below the value win', () => {
    const t = [{ value: 10, color: 'critical' }, { value: 5, color: 'warning' }];
    expect(thresholdLevel(t, 4)).toBe('ok');
    expect(thresholdLevel(t, 5)).toBe('warning');
    expect(thresholdLevel(t, 50)).toBe('critical');
    expect(thresholdLevel(t, null)).toBe('ok');
    expect(thresholdLevel([], 50)).toBe('ok');
  });
  it('calls a frame of nulls empty', () => {
    expect(isEmpty({ ...frame, series: [{ ...frame.series[0], values: [null, null, null, null] }] })).toBe(true);
    expect(isEmpty(frame)).toBe(false);
  });
});
