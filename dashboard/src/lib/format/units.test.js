import { describe, expect, it } from 'vitest';
import { UNITS, formatDateTime, formatDuration, formatTime, formatValue, significant } from './units.js';

describe('formatValue', () => {
  it('reads missing values as a dash in every unit', () => {
    for (const { value: unit } of UNITS) {
      expect(formatValue(null, unit)).toBe('–');
      expect(formatValue(undefined, unit)).toBe('–');
      expect(formatValue(NaN, unit)).toBe('–');
    }
  });

  it('uses IEC prefixes for bytes', () => {
    expect(formatValue(1234567, 'bytes')).toBe('1.18 MiB');
    expect(formatValue(512, 'bytes')).toBe('512 B');
    expect(formatValue(1024, 'bytes')).toBe('1 KiB');
    expect(formatValue(1536, 'Bps')).toBe('1.5 KiB/s');
    expect(formatValue(5 * 1024 ** 3, 'bytes')).toBe('5 GiB');
  });

  it('rounds into the next prefix instead of printing 1000', () => {
    expect(formatValue(999_700, 'short')).toBe('1M');
    expect(formatValue(999.96, 'percent')).toBe('1000%');
  });

  it('scales short numbers with SI suffixes and keeps 3 significant digits', () => {
    expect(formatValue(0, 'short')).toBe('0');
    expect(formatValue(12.345, 'short')).toBe('12.3');
    expect(formatValue(1234, 'short')).toBe('1.23k');
    expect(formatValue(-2_500_000, 'short')).toBe('-2.5M');
    expect(formatValue(0.0123, 'short')).toBe('0.0123');
    expect(formatValue(4.2, 'reqps')).toBe('4.2 req/s');
    expect(formatValue(12000, 'ops')).toBe('12k ops/s');
  });

  it('formats both percent conventions', () => {
    expect(formatValue(12.34, 'percent')).toBe('12.3%');
    expect(formatValue(0.1234, 'percentunit')).toBe('12.3%');
    expect(formatValue(1, 'percentunit')).toBe('100%');
  });

  it('scales durations to one readable unit', () => {
    expect(formatValue(0.25, 's')).toBe('250 ms');
    expect(formatValue(0.0000042, 's')).toBe('4.2 µs');
    expect(formatValue(1.5, 's')).toBe('1.5 s');
    expect(formatValue(90, 's')).toBe('1.5 min');
    expect(formatValue(7200, 's')).toBe('2 h');
    expect(formatValue(250, 'ms')).toBe('250 ms');
    expect(formatValue(1500, 'ms')).toBe('1.5 s');
  });

  it('shows infinities and falls back to short for unknown units', () => {
    expect(formatValue(Infinity, 's')).toBe('∞');
    expect(formatValue(2000, 'furlongs')).toBe('2k');
  });
});

describe('significant', () => {
  it('uses exponent notation only for tiny values', () => {
    expect(significant(0.00001234)).toBe('1.23e-5');
    expect(significant(123.456)).toBe('123');
    expect(significant(2.0)).toBe('2');
  });
});

describe('formatDuration', () => {
  it('uses at most two parts', () => {
    expect(formatDuration(45)).toBe('45 s');
    expect(formatDuration(125)).toBe('2 min 5 s');
    expect(formatDuration(3600)).toBe('1 h');
    expect(formatDuration(3 * 3600 + 600 + 7)).toBe('3 h 10 min');
    expect(formatDuration(2 * 86400 + 4 * 3600)).toBe('2 d 4 h');
    expect(formatDuration(0.25)).toBe('250 ms');
    expect(formatDuration(null)).toBe('–');
  });
});

describe('formatTime', () => {
  const t = Date.UTC(2026, 10, 27, 13, 5, 9) / 1000;
  const d = new Date(t * 1000);
  const p = (/** @type {number} */ n) => String(n).padStart(2, '0');

  it('adds seconds for short spans and the date for long ones', () => {
    expect(formatTime(t, 300)).toBe(`${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`);
    expect(formatTime(t, 3600)).toBe(`${p(d.getHours())}:${p(d.getMinutes())}`);
    expect(formatTime(t, 7 * 86400)).toBe(`${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`);
    expect(formatTime(t, 90 * 86400)).toBe(`${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`);
  });

  it('formats a full date-time for tooltips', () => {
    expect(formatDateTime(t)).toMatch(/^2026-11-2\d \d\d:\d\d:09$/);
    expect(formatDateTime(NaN)).toBe('–');
  });
});
