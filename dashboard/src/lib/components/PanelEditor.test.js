import { fireEvent, render, screen } from '@testing-library/svelte';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../data/api.js';
import { newPanel } from '../data/spec.js';
import PanelEditor from './PanelEditor.svelte';

const panel = newPanel({
  id: 'webhooks', title: 'Webhooks', metric: 'meshhook_webhook_requests_total', agg: 'rate', by: ['outcome'],
  unit: 'reqps', thresholds: [{ value: 5, color: 'warning' }], width: 6, height: 2
});
const spec = { version: 1, title: 'MeshHook', panels: [panel, newPanel({ id: 'queues', metric: 'meshhook_queue_messages' })] };

/** @param {string} label @param {string} value */
async function type(label, value) {
  await fireEvent.input(screen.getByLabelText(label), { target: { value } });
}

describe('PanelEditor', () => {
  it('saves the edited panel with lists parsed', async () => {
    const onsave = vi.fn();
    render(PanelEditor, { props: { panel, spec, onsave } });
    await type('Title', 'Webhook rate');
    await type('Group by (comma-separated labels; empty: all merged)', 'outcome, signature');
    await type('Label matchers (one per line, e.g. outcome="ok")', 'outcome!="ok"\n\nsignature="valid"');
    await fireEvent.change(screen.getByLabelText('Unit'), { target: { value: 'ops' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Add threshold' }));
    await type('Value 2', '20');
    await fireEvent.change(screen.getByLabelText('Colour 2'), { target: { value: 'critical' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Save' }));
    expect(onsave).toHaveBeenCalledTimes(1);
    expect(onsave.mock.calls[0][0]).toMatchObject({
      id: 'webhooks',
      title: 'Webhook rate',
      by: ['outcome', 'signature'],
      match: ['outcome!="ok"', 'signature="valid"'],
      unit: 'ops',
      quantiles: null,
      ratio: null,
      thresholds: [{ value: 5, color: 'warning' }, { value: 20, color: 'critical' }]
    });
  });

  it('shows rule violations by field and does not save', async () => {
    const onsave = vi.fn();
    render(PanelEditor, { props: { panel, spec, onsave } });
    await type('Width (1–12 columns)', '13');
    await type('ID', 'queues');
    await type('Metric', 'not a metric');
    await fireEvent.click(screen.getByRole('button', { name: 'Save' }));
    expect(onsave).not.toHaveBeenCalled();
    const width = screen.getByLabelText('Width (1–12 columns)');
    expect(width.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(/** @type {string} */ (width.getAttribute('aria-describedby')))?.textContent).toMatch(/1 to 12/);
    expect(screen.getByLabelText('ID').getAttribute('aria-invalid')).toBe('true');
    expect(document.body.textContent).toContain('another panel already has id "queues"');
    expect(document.body.textContent).toContain('must be a metric name');
    // fixing a field clears its message at once
    await type('Width (1–12 columns)', '12');
    expect(width.getAttribute('aria-invalid')).toBeNull();
  });

  it('shows the server’s field errors under their fields', () => {
    const error = new ApiError(422, 'invalid_request', 'invalid dashboard', [
      { loc: ['body', 'spec', 'panels', 0, 'metric'], message: 'unknown metric' },
      { loc: ['body', 'spec', 'panels', 0, 'thresholds', 0, 'value'], message: 'too large' }
    ]);
    render(PanelEditor, { props: { panel, spec, error, onsave: vi.fn() } });
    const metric = screen.getByLabelText('Metric');
    expect(metric.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(/** @type {string} */ (metric.getAttribute('aria-describedby')))?.textContent).toBe('unknown metric');
    expect(document.body.textContent).toContain('too large');
  });

  it('shows a server error without field details as a message', () => {
    render(PanelEditor, { props: { panel, spec, error: new ApiError(500, 'internal', 'database unavailable'), onsave: vi.fn() } });
    expect(screen.getByRole('alert').textContent).toBe('database unavailable');
  });

  it('offers cancel, move and remove for existing panels only', async () => {
    const oncancel = vi.fn();
    const onmove = vi.fn();
    const onremove = vi.fn();
    const { unmount } = render(PanelEditor, { props: { panel, spec, onsave: vi.fn(), oncancel, onmove, onremove } });
    await fireEvent.click(screen.getByRole('button', { name: 'Move up' }));
    await fireEvent.click(screen.getByRole('button', { name: 'Move down' }));
    await fireEvent.click(screen.getByRole('button', { name: 'Remove' }));
    await fireEvent.click(screen.getByRole('button', { name: 'Cancel' }));
    expect(onmove.mock.calls).toEqual([[-1], [1]]);
    expect(onremove).toHaveBeenCalled();
    expect(oncancel).toHaveBeenCalled();
    unmount();
    render(PanelEditor, { props: { panel: newPanel({}), spec, isNew: true, onsave: vi.fn(), onmove, onremove } });
    expect(screen.queryByRole('button', { name: 'Move up' })).toBeNull();
    expect(screen.queryByRole('button', { name: 'Remove' })).toBeNull();
  });

  it('suggests metric names from a datalist and hides metric fields for alerts panels', async () => {
    render(PanelEditor, { props: { panel, spec, metrics: ['meshhook_queue_messages', 'process_cpu_seconds_total'], onsave: vi.fn() } });
    const metric = screen.getByLabelText('Metric');
    const list = document.getElementById(/** @type {string} */ (metric.getAttribute('list')));
    expect([...(list?.querySelectorAll('option') ?? [])].map((o) => o.value)).toEqual(['meshhook_queue_messages', 'process_cpu_seconds_total']);
    await fireEvent.change(screen.getByLabelText('Type'), { target: { value: 'alerts' } });
    expect(screen.queryByLabelText('Metric')).toBeNull();
  });
});
