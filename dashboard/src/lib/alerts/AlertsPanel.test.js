import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen, within } from '@testing-library/svelte';
import AlertsPanel from './AlertsPanel.svelte';
import { ApiError } from '../data/api.js';
import {
  PROJECT, RULE_ID, activeAlert, fakeApi, fakeLive, historyEvent, settle, silence
} from './fake-api.test.fixtures.js';

const ACTIVE = '/api/metrics/alerts/active';
const HISTORY = '/api/metrics/alerts/history';

function setup({ routes = {}, props = {} } = {}) {
  const api = fakeApi({
    [`GET ${ACTIVE}`]: {
      alerts: [
        activeAlert({ state: 'pending', fingerprint: 'p1', rule_name: 'queue backlog', value: 1234.5678,
          labels: { queue: 'emails', alertname: 'queue backlog', severity: 'warning' }, since: '2026-11-27T04:15:00Z' }),
        activeAlert()
      ]
    },
    ...routes
  });
  const live = fakeLive();
  const view = render(AlertsPanel, { props: { api, live, projectId: PROJECT, ...props } });
  return { api, live, view };
}

describe('AlertsPanel', () => {
  it('reads the active alerts of the project and lists them firing first', async () => {
    const { api } = setup();
    await settle();
    expect(api.calls[0]).toMatchObject({ method: 'GET', path: ACTIVE, params: { project_id: PROJECT } });
    const rows = within(screen.getByRole('list', { name: 'Active alerts' })).getAllByRole('listitem');
    expect(rows.map((r) => r.dataset.state)).toEqual(['firing', 'pending']);
    expect(rows[0].textContent).toContain('webhook errors');
    expect(rows[0].textContent).toContain('route="/api/hooks/[slug]", team="ops"');
    expect(rows[0].textContent).not.toContain('alertname=');
    expect(rows[0].textContent).toContain('0.8');
    expect(rows[1].textContent).toContain('1235');
    expect(rows[0].querySelector('.mh-state')?.textContent).toBe('Firing');
  });

  it('re-reads on alert and resync messages, at most one read in flight and one queued', async () => {
    const { api, live } = setup();
    await settle();
    expect(live.subscriptions).toHaveLength(1);
    expect(live.subscriptions[0].projectId).toBe(PROJECT);

    api.hold = true;
    live.emit('alert', { project_id: PROJECT, data_time: '2026-11-27T04:21:00Z', transitions: [], more: false });
    await settle();
    for (let i = 0; i < 5; i += 1) live.emit('alert', { transitions: [] });
    live.emit('resync');
    live.emit('rollup', { metrics: [] });
    await settle();
    expect(api.callsTo('GET', ACTIVE)).toHaveLength(2); // the first, and the burst's one in flight
    api.hold = false;
    api.release();
    await settle();
    expect(api.callsTo('GET', ACTIVE)).toHaveLength(3); // plus exactly one queued for the burst
    await settle();
    expect(api.callsTo('GET', ACTIVE)).toHaveLength(3);
  });

  it('shows the newest answer after a live message (the API is the truth)', async () => {
    const { api, live } = setup();
    await settle();
    api.routes[`GET ${ACTIVE}`] = { alerts: [activeAlert({ state: 'recovering', recovering_at: '2026-11-27T04:22:00Z',
      since: '2026-11-27T04:22:00Z' })] };
    live.emit('alert', { transitions: [] });
    await settle();
    const rows = within(screen.getByRole('list', { name: 'Active alerts' })).getAllByRole('listitem');
    expect(rows).toHaveLength(1);
    expect(rows[0].dataset.state).toBe('recovering');
  });

  it('unsubscribes when destroyed', async () => {
    const { live, view } = setup();
    await settle();
    view.unmount();
    expect(live.unsubscribed).toBe(1);
    expect(live.subscriptions).toHaveLength(0);
  });

  it('moves to another project: new subscription, old answers ignored', async () => {
    const OTHER = '11110000-0000-4000-8000-000000000009';
    const { api, live, view } = setup();
    await settle();
    api.hold = true;
    live.emit('alert', { transitions: [] }); // a read for the old project, still in flight at the switch
    await settle();
    api.routes[`GET ${ACTIVE}`] = (/** @type {any} */ call) =>
      ({ alerts: call.params.project_id === OTHER ? [] : [activeAlert()] });
    await view.rerender({ projectId: OTHER });
    api.hold = false;
    api.release();
    await settle(10);
    expect(live.unsubscribed).toBe(1);
    expect(live.subscriptions.map((s) => s.projectId)).toEqual([OTHER]);
    expect(api.callsTo('GET', ACTIVE).at(-1)?.params.project_id).toBe(OTHER);
    expect(screen.getByText('No active alerts')).toBeTruthy();
  });

  it('shows a load error with a retry', async () => {
    const { api } = setup({ routes: { [`GET ${ACTIVE}`]: new ApiError(403, 'forbidden', 'not a member of the project') } });
    await settle();
    expect(screen.getByRole('alert').textContent).toContain('not a member of the project');
    api.routes[`GET ${ACTIVE}`] = { alerts: [] };
    await fireEvent.click(screen.getByRole('button', { name: 'Retry' }));
    await settle();
    expect(screen.queryByRole('alert')).toBeNull();
    expect(screen.getByText('No active alerts')).toBeTruthy();
  });

  it('pages the history newest first without repeating rows of the same time', async () => {
    const page1 = [
      historyEvent({ id: 9, at: '2026-11-27T04:20:00Z', state: 'resolved', previous: 'firing' }),
      historyEvent({ id: 8, at: '2026-11-27T04:12:00Z' }),
      historyEvent({ id: 7, at: '2026-11-27T04:12:00Z', fingerprint: 'x2' })
    ];
    const page2 = [
      historyEvent({ id: 7, at: '2026-11-27T04:12:00Z', fingerprint: 'x2' }),
      historyEvent({ id: 6, at: '2026-11-27T04:12:00Z', fingerprint: 'x3' }),
      historyEvent({ id: 5, at: '2026-11-27T04:10:00Z', state: 'pending', previous: 'inactive', rule_id: null })
    ];
    const { api } = setup({
      routes: { [`GET ${HISTORY}`]: (/** @type {any} */ call) => ({ events: call.params.to ? page2 : page1 }) },
      props: { pageSize: 3 }
    });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'History' }));
    await settle();
    expect(api.callsTo('GET', HISTORY)[0].params).toEqual({ project_id: PROJECT, limit: 3 });

    await fireEvent.click(screen.getByRole('button', { name: 'Load older' }));
    await settle();
    const second = api.callsTo('GET', HISTORY)[1].params;
    expect(second.to).toBe('2026-11-27T04:12:00.001Z');
    expect(second.limit).toBe(5); // a page plus the two rows of 04:12 already shown

    const rows = within(screen.getByRole('list', { name: 'Alert history, newest first' })).getAllByRole('listitem');
    expect(rows).toHaveLength(5);
    expect(rows[0].dataset.state).toBe('resolved');
    expect(rows[4].textContent).toContain('(rule deleted)');
    // fewer rows than asked for: the end of the history
    expect(screen.queryByRole('button', { name: 'Load older' })).toBeNull();
  });

  it('prepends new history events after a live message', async () => {
    const { api, live } = setup({
      routes: { [`GET ${HISTORY}`]: { events: [historyEvent({ id: 8 })] } }
    });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'History' }));
    await settle();
    api.routes[`GET ${HISTORY}`] = { events: [historyEvent({ id: 10, state: 'resolved', at: '2026-11-27T04:30:00Z' }), historyEvent({ id: 8 })] };
    live.emit('alert', { transitions: [] });
    await settle();
    const call = api.callsTo('GET', HISTORY)[1];
    expect(call.params.from).toBe('2026-11-27T04:12:00Z');
    const rows = within(screen.getByRole('list', { name: 'Alert history, newest first' })).getAllByRole('listitem');
    expect(rows.map((r) => r.dataset.state)).toEqual(['resolved', 'firing']);
  });

  it("opens a silence form prefilled with the alert's labels and reports the silence", async () => {
    const onsilence = vi.fn();
    const { api } = setup({
      routes: { 'POST /api/metrics/alerts/silences': silence() },
      props: { onsilence }
    });
    await settle();
    const button = screen.getByRole('button', { name: /^Silence webhook errors/ });
    await fireEvent.click(button);
    expect(button.getAttribute('aria-expanded')).toBe('true');
    const values = screen.getAllByLabelText('Value').map((el) => /** @type {HTMLInputElement} */ (el).value);
    expect(values).toContain('/api/hooks/[slug]');
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    expect(api.callsTo('POST', '/api/metrics/alerts/silences')[0].body.rule_id).toBe(RULE_ID);
    expect(onsilence).toHaveBeenCalledWith(silence(), expect.objectContaining({ fingerprint: '4e04aa' }));
    expect(screen.getByRole('status').textContent).toContain('Silenced until');
    expect(screen.queryByRole('button', { name: 'Create silence' })).toBeNull();
  });

  it('keeps an open silence form across a live re-read', async () => {
    const { live } = setup();
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: /^Silence webhook errors/ }));
    live.emit('alert', { transitions: [] });
    await settle();
    expect(screen.getByRole('button', { name: 'Create silence' })).toBeTruthy();
  });

  it('compact: no tabs, only the active list', async () => {
    setup({ props: { compact: true } });
    await settle();
    expect(screen.queryByRole('button', { name: 'History' })).toBeNull();
    expect(screen.getByRole('list', { name: 'Active alerts' })).toBeTruthy();
  });

  it('offers no Silence button to a viewer (canSilence false), who could not create one', async () => {
    setup({ props: { canSilence: false } });
    await settle();
    expect(screen.getAllByRole('listitem').length).toBeGreaterThan(0);
    expect(screen.queryByRole('button', { name: /^Silence/ })).toBeNull();
  });
});
