import { render, screen } from '@testing-library/svelte';
import { describe, expect, it } from 'vitest';
import StatTile from './StatTile.svelte';

const panel = {
  id: 'err', title: 'Error ratio', type: 'stat', metric: 'm', unit: 'percentunit', width: 3, height: 1,
  thresholds: [{ value: 0.01, color: 'warning' }, { value: 0.05, color: 'critical' }]
};
/** @param {(number|null)[]} values @param {number|null} [partialFrom] */
const frame = (values, partialFrom = null) => ({
  times: values.map((_, i) => i * 60),
  step: 60,
  series: [{ key: 'all', label: 'all', labels: {}, values }],
  partialFrom,
  kind: 'ratio'
});

describe('StatTile', () => {
  it('shows the newest settled value, formatted, inside a captioned figure', () => {
    const { container } = render(StatTile, { props: { panel, data: { frame: frame([0.001, 0.02, 0.9], 120), loading: false, error: null } } });
    const figure = /** @type {HTMLElement} */ (container.querySelector('figure'));
    expect(figure.querySelector('figcaption')?.textContent).toBe('Error ratio');
    expect(figure.querySelector('.value')?.textContent).toBe('2%');
    expect(figure.dataset.level).toBe('warning');
  });

  it('colours critical above the highest threshold and ok below all', async () => {
    const { container, rerender } = render(StatTile, { props: { panel, data: { frame: frame([0.2]) } } });
    expect(/** @type {HTMLElement} */ (container.querySelector('figure')).dataset.level).toBe('critical');
    await rerender({ panel, data: { frame: frame([0.001]) } });
    expect(/** @type {HTMLElement} */ (container.querySelector('figure')).dataset.level).toBe('ok');
    expect(container.querySelector('.value')?.textContent).toBe('0.1%');
  });

  it('draws a sparkline that breaks at gaps', () => {
    const { container } = render(StatTile, { props: { panel, data: { frame: frame([0.01, 0.02, null, 0.03, 0.04]) } } });
    expect(container.querySelectorAll('svg polyline')).toHaveLength(2);
  });

  it('shows loading, error and empty states', async () => {
    const { container, rerender } = render(StatTile, { props: { panel, data: { frame: null, loading: true } } });
    expect(container.querySelector('.skeleton')).not.toBeNull();
    await rerender({ panel, data: { frame: null, loading: false, error: new Error('boom') } });
    expect(screen.getByRole('alert').textContent).toBe('boom');
    await rerender({ panel, data: { frame: frame([null, null]), loading: false, error: null } });
    expect(container.textContent).toContain('No data in this range');
  });
});
