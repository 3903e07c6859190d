import { describe, expect, it } from 'vitest';
import { groupOf, matcherPredicate, minuteValue } from './live-values.js';

const item = (/** @type {any} */ fields) => ({ kind: 'counter', labels: {}, count: 1, ...fields });

describe('matcherPredicate', () => {
  it('evaluates =, != and simple anchored regexes like PostgreSQL, a missing label being ""', () => {
    const match = matcherPredicate(['outcome!~"accepted|ok"', 'route="/a"', 'region!="eu"']);
    expect(match?.({ outcome: 'rejected', route: '/a' })).toBe(true);
    expect(match?.({ outcome: 'accepted', route: '/a' })).toBe(false);
    expect(match?.({ outcome: 'acceptedx', route: '/a' })).toBe(true); // anchored: not a prefix match
    expect(match?.({ outcome: 'rejected', route: '/a', region: 'eu' })).toBe(false);
    expect(matcherPredicate(['status=~"5.."'])?.({ status: '503' })).toBe(true);
    expect(matcherPredicate(['node=""'])?.({})).toBe(true);
  });

  it('gives up (null) on what it cannot evaluate exactly like SQL', () => {
    expect(matcherPredicate(['path=~"\\\\d+"'])).toBeNull(); // escapes: ARE and JS differ
    expect(matcherPredicate(['not a matcher'])).toBeNull();
    expect(matcherPredicate([])?.({ any: 'x' })).toBe(true);
  });
});

describe('groupOf', () => {
  it('keeps the labels named by `by` that the series has; all of them for null', () => {
    expect(groupOf({ outcome: 'ok', signature: 'v' }, ['outcome', 'route'])).toEqual({ outcome: 'ok' });
    expect(groupOf({ outcome: 'ok' }, [])).toEqual({});
    expect(groupOf({ outcome: 'ok' }, null)).toEqual({ outcome: 'ok' });
  });
});

describe('minuteValue', () => {
  it('sums totals of the series of a group: rate, sum, count, avg', () => {
    const items = [item({ sum: 30, count: 3 }), item({ sum: 90, count: 9 })];
    expect(minuteValue('rate', items, [])).toBe(2);
    expect(minuteValue('sum', items, [])).toBe(120);
    expect(minuteValue('count', items, [])).toBe(12);
    expect(minuteValue('avg', items, [])).toBe(10);
    expect(minuteValue('rate', [item({ kind: 'histogram', sum: 5, count: 120 })], [])).toBe(2);
  });

  it('takes extremes only when every series sent them', () => {
    const gauges = [item({ kind: 'gauge', min: 2, max: 5 }), item({ kind: 'gauge', min: 1, max: 4 })];
    expect(minuteValue('min', gauges, [])).toBe(1);
    expect(minuteValue('max', gauges, [])).toBe(5);
    expect(minuteValue('max', [item({})], [])).toBeUndefined();
  });

  it('answers last and quantiles only for a group that is one series', () => {
    const one = item({ kind: 'histogram', labels: { node: 'http' }, last: 0.3, p99: 0.9 });
    expect(minuteValue('p99', [one], ['node'])).toBe(0.9);
    expect(minuteValue('last', [one], null)).toBe(0.3);
    expect(minuteValue('p99', [one], [])).toBeUndefined(); // the group may merge other series
    expect(minuteValue('last', [one, one], ['node'])).toBeUndefined();
    expect(minuteValue('p95', [one], ['node'])).toBeUndefined(); // not in the broadcast
  });
});
