import { describe, expect, it } from 'vitest';
import {
  PRESETS,
  customRangeError,
  defaultStep,
  parseDuration,
  rangeFromParams,
  rangeToParams,
  resolveRange,
  sameRange
} from './range.js';

describe('parseDuration', () => {
  it('parses every preset and rejects junk', () => {
    for (const p of PRESETS) expect(parseDuration(p.last)).toBeGreaterThan(0);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('7d')).toBe(604800);
    expect(parseDuration('0h')).toBeNull();
    expect(parseDuration('1y')).toBeNull();
    expect(parseDuration('h')).toBeNull();
  });
});

describe('resolveRange', () => {
  it('ends a relative range at now (whole seconds)', () => {
    expect(resolveRange({ last: '1h' }, 1_800_000_000_500)).toEqual({ from: 1_800_000_000 - 3600, to: 1_800_000_000 });
  });
  it('keeps an absolute range', () => {
    expect(resolveRange({ from: 10, to: 20 }, 0)).toEqual({ from: 10, to: 20 });
  });
});

describe('defaultStep', () => {
  it('gives whole minutes for about 300 points', () => {
    expect(defaultStep(900)).toBe(60);
    expect(defaultStep(3600)).toBe(60);
    expect(defaultStep(3 * 3600)).toBe(60);
    expect(defaultStep(5 * 3600)).toBe(60);
  });
  it('uses 5-minute multiples above 5 hours and whole hours for long spans', () => {
    expect(defaultStep(6 * 3600)).toBe(300);
    expect(defaultStep(24 * 3600)).toBe(300);
    expect(defaultStep(2 * 86400)).toBe(600);
    expect(defaultStep(7 * 86400)).toBe(2100);
    expect(defaultStep(30 * 86400)).toBe(3 * 3600);
    for (const span of [3600, 86400, 7 * 86400, 90 * 86400]) {
      expect(defaultStep(span) % 60).toBe(0);
      expect(span / defaultStep(span)).toBeLessThanOrEqual(300);
    }
  });
});

describe('URL params', () => {
  it('round-trips relative and absolute ranges', () => {
    expect(rangeToParams({ last: '6h' }).toString()).toBe('last=6h');
    expect(rangeToParams({ from: 100.7, to: 200 }).toString()).toBe('from=100&to=200');
    expect(rangeFromParams(rangeToParams({ last: '24h' }))).toEqual({ last: '24h' });
    expect(rangeFromParams(rangeToParams({ from: 100, to: 200 }))).toEqual({ from: 100, to: 200 });
  });
  it('accepts ISO times', () => {
    expect(rangeFromParams(new URLSearchParams('from=2026-11-27T00:00:00Z&to=2026-11-27T01:00:00Z'))).toEqual({
      from: Date.UTC(2026, 10, 27) / 1000,
      to: Date.UTC(2026, 10, 27, 1) / 1000
    });
  });
  it('falls back on invalid or missing params', () => {
    const fallback = { last: '15m' };
    expect(rangeFromParams(new URLSearchParams(''), fallback)).toBe(fallback);
    expect(rangeFromParams(new URLSearchParams('last=forever'), fallback)).toBe(fallback);
    expect(rangeFromParams(new URLSearchParams('from=200&to=100'), fallback)).toBe(fallback);
    expect(rangeFromParams(new URLSearchParams('from=abc&to=100'), fallback)).toBe(fallback);
  });
  it('compares ranges', () => {
    expect(sameRange({ last: '1h' }, { last: '1h' })).toBe(true);
    expect(sameRange({ last: '1h' }, { from: 1, to: 2 })).toBe(false);
  });
});

describe('customRangeError', () => {
  it('requires from < to and at most 7 days', () => {
    expect(customRangeError(0, 60)).toBeNull();
    expect(customRangeError(60, 60)).toMatch(/before/);
    expect(customRangeError(0, 8 * 86400)).toMatch(/7 days/);
    expect(customRangeError(NaN, 60)).toMatch(/both/);
  });
});

describe('datetime-local', () => {
  it('round-trips local minutes', async () => {
    const { toDateTimeLocal, fromDateTimeLocal } = await import('./range.js');
    const t = 1_800_000_000 - (1_800_000_000 % 60);
    expect(toDateTimeLocal(t)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d$/);
    expect(fromDateTimeLocal(toDateTimeLocal(t))).toBe(t);
    expect(fromDateTimeLocal('')).toBeNaN();
    expect(fromDateTimeLocal('yesterday')).toBeNaN();
  });
});
