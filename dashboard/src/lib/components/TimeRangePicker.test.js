import { fireEvent, render, screen } from '@testing-library/svelte';
import { describe, expect, it } from 'vitest';
import { toDateTimeLocal } from '../data/range.js';
import TimeRangePicker from './TimeRangePicker.svelte';
import Harness from './TimeRangePicker.harness.test.svelte';

describe('TimeRangePicker', () => {
  it('offers the presets and binds a chosen one', async () => {
    /** @type {any[]} */
    const seen = [];
    render(Harness, { props: { initial: { last: '1h' }, onchange: (/** @type {any} */ v) => seen.push(v) } });
    const select = /** @type {HTMLSelectElement} */ (screen.getByLabelText('Time range'));
    expect([...select.options].map((o) => o.value)).toEqual(['15m', '1h', '3h', '6h', '12h', '24h', '2d', '7d', 'custom']);
    expect(select.value).toBe('1h');
    await fireEvent.change(select, { target: { value: '24h' } });
    expect(seen.at(-1)).toEqual({ last: '24h' });
  });

  it('validates a custom range before applying it', async () => {
    /** @type {any[]} */
    const seen = [];
    render(Harness, { props: { initial: { last: '1h' }, onchange: (/** @type {any} */ v) => seen.push(v) } });
    await fireEvent.change(screen.getByLabelText('Time range'), { target: { value: 'custom' } });
    const from = /** @type {HTMLInputElement} */ (screen.getByLabelText('From'));
    const to = /** @type {HTMLInputElement} */ (screen.getByLabelText('To'));
    expect(from.value).toMatch(/^\d{4}-/); // prefilled with the current range

    await fireEvent.input(from, { target: { value: '2026-11-27T10:00' } });
    await fireEvent.input(to, { target: { value: '2026-11-27T09:00' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Apply' }));
    expect(screen.getByRole('alert').textContent).toMatch(/before/);
    expect(from.getAttribute('aria-invalid')).toBe('true');
    expect(seen).toEqual([]);

    await fireEvent.input(to, { target: { value: '2026-12-05T10:00' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Apply' }));
    expect(screen.getByRole('alert').textContent).toMatch(/7 days/);

    await fireEvent.input(to, { target: { value: '2026-11-27T12:00' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Apply' }));
    expect(screen.queryByRole('alert')).toBeNull();
    const applied = seen.at(-1);
    expect(applied.to - applied.from).toBe(7200);
  });

  it('shows a fixed range (e.g. from a zoom) as custom, with the inputs filled', () => {
    render(TimeRangePicker, { props: { value: { from: 1_800_000_000, to: 1_800_003_600 } } });
    expect(/** @type {HTMLSelectElement} */ (screen.getByLabelText('Time range')).value).toBe('custom');
    expect(/** @type {HTMLInputElement} */ (screen.getByLabelText('From')).value).toBe(toDateTimeLocal(1_800_000_000));
  });
});
