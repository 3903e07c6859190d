import { describe, expect, it } from 'vitest';
import { fireEvent, render, screen, within } from '@testing-library/svelte';
import ReceiversView from './ReceiversView.svelte';
import { ApiError } from '../data/api.js';
import {
  PROJECT, RECEIVER_ID, delivery, fakeApi, receiver, receiverTest, settle, validationError
} from './fake-api.test.fixtures.js';

const LIST = '/api/metrics/alerts/receivers';
const SLACK_ID = '7c1e0000-0000-4000-8000-0000000000aa';
const slack = receiver({ id: SLACK_ID, name: 'ops slack', kind: 'slack', target: 'https://hooks.slack.com/…', has_secret: false });

function setup(routes = {}, role = 'admin') {
  const api = fakeApi({ [`GET ${LIST}`]: { receivers: [receiver(), slack] }, ...routes });
  const view = render(ReceiversView, { props: { api, projectId: PROJECT, role } });
  return { api, view };
}

describe('ReceiversView', () => {
  it('lists receivers for admins without any secret', async () => {
    const { api } = setup();
    await settle();
    expect(api.calls[0]).toMatchObject({ method: 'GET', path: LIST, params: { project_id: PROJECT } });
    const rows = within(screen.getByRole('list', { name: 'Receivers' })).getAllByRole('listitem');
    expect(rows[0].textContent).toContain('https://ops.example.com/alerts');
    expect(rows[0].textContent).toContain('Secret set');
    expect(rows[1].textContent).toContain('https://hooks.slack.com/…');
    expect(rows[1].textContent).toContain('No secret');
  });

  it('shows a note to non-admins and asks nothing', async () => {
    const { api } = setup({}, 'editor');
    await settle();
    expect(api.calls).toHaveLength(0);
    expect(screen.getByText('Only project admins see notification targets.')).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Add receiver' })).toBeNull();
  });

  it('creates a receiver and reloads the list; field errors at their fields', async () => {
    let attempts = 0;
    const { api } = setup({
      [`POST ${LIST}`]: () => (++attempts === 1
        ? validationError([['body', 'target'], 'slack needs an https URL'])
        : receiver({ id: 'new', name: 'pd', kind: 'pagerduty', target: 'https://events.pagerduty.com/v2/enqueue' }))
    });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'Add receiver' }));
    await fireEvent.input(screen.getByLabelText('Name'), { target: { value: 'pd' } });
    await fireEvent.change(screen.getByLabelText('Kind'), { target: { value: 'pagerduty' } });
    await fireEvent.input(screen.getByLabelText('Routing key (required)'), { target: { value: 'R0UTING' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Create receiver' }));
    await settle();
    expect(api.callsTo('POST', LIST)[0].body).toEqual({ project_id: PROJECT, name: 'pd', kind: 'pagerduty', secret: 'R0UTING' });
    expect(screen.getByText('slack needs an https URL')).toBeTruthy();

    await fireEvent.click(screen.getByRole('button', { name: 'Create receiver' }));
    await settle();
    expect(api.callsTo('GET', LIST)).toHaveLength(2);
    expect(screen.queryByRole('button', { name: 'Create receiver' })).toBeNull();
  });

  it('edits only what changed and never sends a masked target back', async () => {
    const { api } = setup({ [`PATCH ${LIST}/${SLACK_ID}`]: slack });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'Edit ops slack' }));
    const name = /** @type {HTMLInputElement} */ (screen.getByLabelText('Name'));
    expect(name.value).toBe('ops slack');
    expect(/** @type {HTMLInputElement} */ (screen.getByLabelText('Incoming-webhook URL (https)')).value).toBe('');
    await fireEvent.input(name, { target: { value: 'ops chat' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Save receiver' }));
    await settle();
    expect(api.callsTo('PATCH', `${LIST}/${SLACK_ID}`)[0].body).toEqual({ name: 'ops chat' });
  });

  it('removes a secret only when asked', async () => {
    const { api } = setup({ [`PATCH ${LIST}/${RECEIVER_ID}`]: receiver({ has_secret: false }) });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'Edit ops webhook' }));
    const secret = /** @type {HTMLInputElement} */ (screen.getByLabelText('Signing secret or bearer token (optional)'));
    expect(secret.value).toBe('');
    expect(secret.type).toBe('password');
    await fireEvent.click(screen.getByRole('button', { name: 'Save receiver' }));
    await settle();
    expect(api.calls.filter((c) => c.method === 'PATCH')).toHaveLength(0);
    await fireEvent.click(screen.getByLabelText('Remove the secret'));
    await fireEvent.click(screen.getByRole('button', { name: 'Save receiver' }));
    await settle();
    expect(api.callsTo('PATCH', `${LIST}/${RECEIVER_ID}`)[0].body).toEqual({ secret: null });
  });

  it('deletes after a confirmation', async () => {
    const { api } = setup({ [`DELETE ${LIST}/${RECEIVER_ID}`]: null });
    await settle();
    await fireEvent.click(screen.getByRole('button', { name: 'Delete ops webhook' }));
    expect(api.calls.filter((c) => c.method === 'DELETE')).toHaveLength(0);
    await fireEvent.click(screen.getByRole('button', { name: 'Confirm delete ops webhook' }));
    await settle();
    expect(api.callsTo('DELETE', `${LIST}/${RECEIVER_ID}`)).toHaveLength(1);
    expect(api.callsTo('GET', LIST)).toHaveLength(2);
  });

  it('sends a test and shows the outcome: delivered, pending, dead-lettered', async () => {
    const outcomes = [
      receiverTest(),
      receiverTest({ status: 'pending', attempts: 0, last_status: null,
        detail: 'not delivered within 10 s; it stays queued: is an alert worker running?' }),
      // the 502's body is the outcome of the test (ReceiverTest in api/alert_models.py)
      new ApiError(502, 'http_502', '502 Bad Gateway', [],
        receiverTest({ status: 'dead', attempts: 1, last_status: 400, last_error: 'HTTP 400 from the receiver' }))
    ];
    const { api } = setup({
      [`POST ${LIST}/${RECEIVER_ID}/test`]: () => outcomes.shift()
    });
    await settle();
    const button = screen.getByRole('button', { name: 'Send test to ops webhook' });
    const status = () => within(button.closest('li') ?? document.body).getByRole('status').textContent;

    await fireEvent.click(button);
    await settle();
    expect(api.callsTo('POST', `${LIST}/${RECEIVER_ID}/test`)[0].params).toEqual({ wait: '10' });
    expect(status()).toBe('Delivered (status 202).');

    await fireEvent.click(button);
    await settle();
    expect(status()).toContain('is an alert worker running?');

    await fireEvent.click(button);
    await settle();
    expect(status()).toBe('Not delivered, the test was dead-lettered: HTTP 400 from the receiver.');
  });
});
