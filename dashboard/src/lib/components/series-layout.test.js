import { describe, expect, it } from 'vitest';
import { buildLayout, toPlotData, withAlpha } from './series-layout.js';

/** @param {string} key @param {Record<string,string>} labels */
const s = (key, labels) => ({ key, label: key, labels, values: [1, 2] });

describe('buildLayout', () => {
  it('gives plain series one colour each and no bands', () => {
    const layout = buildLayout({ times: [0, 60], step: 60, partialFrom: null, series: [s('ok', { outcome: 'ok' }), s('err', { outcome: 'error' })] });
    expect(layout.quantiles).toBe(false);
    expect(layout.series.map((x) => x.color)).toEqual([0, 1]);
    expect(layout.bands).toEqual([]);
  });

  it('draws p50 as the line and bands up to the higher quantiles, per group', () => {
    const frame = {
      times: [0, 60], step: 60, partialFrom: null,
      series: [
        s('http-p99', { node_type: 'http', quantile: 'p99' }),
        s('http-p50', { node_type: 'http', quantile: 'p50' }),
        s('db-p50', { node_type: 'db', quantile: 'p50' }),
        s('http-p90', { node_type: 'http', quantile: 'p90' }),
        s('db-p99', { node_type: 'db', quantile: 'p99' })
      ]
    };
    const layout = buildLayout(frame);
    expect(layout.quantiles).toBe(true);
    expect(layout.series.map((x) => x.key)).toEqual(['http-p50', 'http-p90', 'http-p99', 'db-p50', 'db-p99']);
    expect(layout.series.map((x) => x.color)).toEqual([0, 0, 0, 1, 1]);
    expect(layout.series.map((x) => x.width)).toEqual([2, 1, 1, 2, 1]);
    // uPlot indices (x is 0): upper edge first
    expect(layout.bands).toEqual([
      { series: [2, 1], alpha: 0.25 },
      { series: [3, 2], alpha: 0.12 },
      { series: [5, 4], alpha: 0.25 }
    ]);
  });

  it('keeps its signature across new values and changes it when series change', () => {
    const a = buildLayout({ times: [0], step: 60, partialFrom: null, series: [s('a', {})] });
    const b = buildLayout({ times: [0, 60], step: 60, partialFrom: 60, series: [{ ...s('a', {}), values: [5, 6] }] });
    const c = buildLayout({ times: [0], step: 60, partialFrom: null, series: [s('a', {}), s('b', {})] });
    expect(a.signature).toBe(b.signature);
    expect(a.signature).not.toBe(c.signature);
  });
});

describe('toPlotData', () => {
  it('orders columns by layout and fills missing series with nulls', () => {
    const frame = { times: [0, 60], step: 60, partialFrom: null, series: [{ key: 'a', label: 'a', labels: {}, values: [1, null] }] };
    const layout = buildLayout({ ...frame, series: [...frame.series, s('b', {})] });
    expect(toPlotData(frame, layout)).toEqual([[0, 60], [1, null], [null, null]]);
  });

  it('leaves the open step out when asked (the panel draws it dashed)', () => {
    const frame = { times: [0, 60, 120], step: 60, partialFrom: 120, series: [{ key: 'a', label: 'a', labels: {}, values: [1, 2, 3] }] };
    const layout = buildLayout(frame);
    expect(toPlotData(frame, layout, { maskPartial: true })).toEqual([[0, 60, 120], [1, 2, null]]);
    expect(toPlotData(frame, layout)).toEqual([[0, 60, 120], [1, 2, 3]]);
  });
});

describe('withAlpha', () => {
  it('converts hex and rgb colours', () => {
    expect(withAlpha('#2463d1', 0.5)).toBe('rgba(36, 99, 209, 0.5)');
    expect(withAlpha('#fff', 0.1)).toBe('rgba(255, 255, 255, 0.1)');
    expect(withAlpha('rgb(1, 2, 3)', 0.2)).toBe('rgba(1, 2, 3, 0.2)');
    expect(withAlpha('red', 0.2)).toBe('red');
  });
});
