import { describe, expect, it } from 'vitest';
import { applyAnswer, createBuffer, groupKey, prune, readWindow } from './buffer.js';

const ok = { outcome: 'ok' };
const error = { outcome: 'error' };

/** @param {number} rev @param {number} from @param {number} to @param {any[]} series */
const answer = (rev, from, to, series) => ({ rev, from, to, step: 60, series });

describe('groupKey', () => {
  it('is the same for equal label sets in any order and differs otherwise', () => {
    expect(groupKey({ a: '1', b: '2' })).toBe(groupKey({ b: '2', a: '1' }));
    expect(groupKey({ a: '1' })).not.toBe(groupKey({ a: '2' }));
    expect(groupKey({})).toBe('[]');
  });
});

describe('applyAnswer and readWindow', () => {
  it('keeps the newest revision of each step whatever the order the answers arrive in', () => {
    const inOrder = createBuffer();
    const reversed = createBuffer();
    const backfill = answer(1, 0, 180, [{ labels: ok, points: [[0, 1], [60, 2], [120, 3]] }]);
    const tail = answer(2, 120, 180, [{ labels: ok, points: [[120, 30]] }]);
    applyAnswer(inOrder, backfill);
    applyAnswer(inOrder, tail);
    applyAnswer(reversed, tail);
    applyAnswer(reversed, backfill);
    for (const buffer of [inOrder, reversed]) {
      const { groups } = readWindow(buffer, { from: 0, to: 180, step: 60, zeroFill: false });
      expect(groups[0].values).toEqual([1, 2, 30]);
    }
  });

  it('drops a group from the steps a newer answer covered without it', () => {
    const buffer = createBuffer();
    applyAnswer(buffer, answer(1, 0, 120, [{ labels: ok, points: [[0, 1], [60, 1]] }, { labels: error, points: [[60, 5]] }]));
    applyAnswer(buffer, answer(2, 60, 120, [{ labels: ok, points: [[60, 2]] }]));
    const { groups } = readWindow(buffer, { from: 0, to: 120, step: 60, zeroFill: false });
    const byOutcome = Object.fromEntries(groups.map((g) => [g.labels.outcome, g.values]));
    expect(byOutcome.ok).toEqual([1, 2]);
    expect(byOutcome.error).toEqual([null, null]);
  });

  it('zero-fills covered steps for counters but leaves unknown steps null', () => {
    const buffer = createBuffer();
    applyAnswer(buffer, answer(1, 60, 180, [{ labels: ok, points: [[120, 4]] }]));
    const counters = readWindow(buffer, { from: 0, to: 240, step: 60, zeroFill: true });
    expect(counters.times).toEqual([0, 60, 120, 180]);
    expect(counters.groups[0].values).toEqual([null, 0, 4, null]);
    const gauges = readWindow(buffer, { from: 0, to: 240, step: 60, zeroFill: false });
    expect(gauges.groups[0].values).toEqual([null, null, 4, null]);
  });

  it('keeps explicit nulls from the API (e.g. avg of nothing) as gaps even when zero-filling', () => {
    const buffer = createBuffer();
    applyAnswer(buffer, answer(1, 0, 60, [{ labels: ok, points: [[0, null]] }]));
    expect(readWindow(buffer, { from: 0, to: 60, step: 60, zeroFill: true }).groups[0].values).toEqual([null]);
  });

  it('ignores points outside the answer range and aligns an unaligned start', () => {
    const buffer = createBuffer();
    applyAnswer(buffer, answer(1, 30, 120, [{ labels: ok, points: [[0, 1], [60, 2], [600, 9]] }]));
    expect([...buffer.steps.keys()].sort((a, b) => a - b)).toEqual([0, 60]);
  });
});

describe('applyAnswer says whether anything changed', () => {
  it('is false for an answer that only confirms what the buffer holds, true for new coverage or values', () => {
    const buffer = createBuffer();
    expect(applyAnswer(buffer, answer(1, 0, 120, [{ labels: ok, points: [[0, 1]] }]))).toBe(true);
    expect(applyAnswer(buffer, answer(2, 0, 120, [{ labels: ok, points: [[0, 1]] }]))).toBe(false);
    expect(applyAnswer(buffer, answer(3, 0, 180, [{ labels: ok, points: [[0, 1]] }]))).toBe(true); // step 120 now covered
    expect(applyAnswer(buffer, answer(4, 0, 180, [{ labels: ok, points: [[0, 2]] }]))).toBe(true);
    expect(applyAnswer(buffer, answer(0, 0, 180, [{ labels: ok, points: [[0, 9]] }]))).toBe(false); // older: ignored
  });
});

describe('prune', () => {
  it('forgets steps outside the window and labels no step uses', () => {
    const buffer = createBuffer();
    applyAnswer(buffer, answer(1, 0, 120, [{ labels: ok, points: [[60, 1]] }, { labels: error, points: [[0, 1]] }]));
    prune(buffer, 60, 120);
    expect([...buffer.steps.keys()]).toEqual([60]);
    expect([...buffer.labels.values()]).toEqual([ok]);
  });
});
