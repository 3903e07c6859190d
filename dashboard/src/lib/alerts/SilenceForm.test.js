import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen } from '@testing-library/svelte';
import SilenceForm from './SilenceForm.svelte';
import { ApiError } from '../data/api.js';
import { PROJECT, RULE_ID, activeAlert, fakeApi, settle, silence, validationError } from './fake-api.test.fixtures.js';

const NOW = Date.parse('2026-11-27T04:30:00Z');

function setup(routes = { 'POST /api/metrics/alerts/silences': silence() }, alert = activeAlert()) {
  const api = fakeApi(routes);
  const onsaved = vi.fn();
  const view = render(SilenceForm, { props: { api, projectId: PROJECT, alert, onsaved, now: () => NOW } });
  return { api, onsaved, view };
}

describe('SilenceForm', () => {
  it("prefills = matchers from the alert's labels and posts them with its rule and a 1 h end", async () => {
    const { api, onsaved } = setup();
    const values = screen.getAllByLabelText('Value').map((el) => /** @type {HTMLInputElement} */ (el).value);
    expect(values).toEqual(['/api/hooks/[slug]', 'ops', 'webhook errors', 'critical']);

    await fireEvent.input(screen.getByLabelText('Comment'), { target: { value: 'deploy' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();

    const [call] = api.callsTo('POST', '/api/metrics/alerts/silences');
    expect(call.body).toEqual({
      project_id: PROJECT,
      rule_id: RULE_ID,
      matchers: [
        { label: 'route', op: '=', value: '/api/hooks/[slug]' },
        { label: 'team', op: '=', value: 'ops' },
        { label: 'alertname', op: '=', value: 'webhook errors' },
        { label: 'severity', op: '=', value: 'critical' }
      ],
      ends_at: '2026-11-27T05:30:00.000Z',
      comment: 'deploy'
    });
    expect(onsaved).toHaveBeenCalledWith(silence());
  });

  it('uses the chosen preset, can drop the rule and a matcher', async () => {
    const { api } = setup();
    await fireEvent.click(screen.getByLabelText('1 day'));
    await fireEvent.click(screen.getByLabelText(/Only alerts of the rule/));
    await fireEvent.click(screen.getByRole('button', { name: 'Remove matcher 2' }));
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    const { body } = api.calls[0];
    expect(body.ends_at).toBe('2026-11-28T04:30:00.000Z');
    expect(body.rule_id).toBeNull();
    expect(body.matchers.map((/** @type {any} */ m) => m.label)).toEqual(['route', 'alertname', 'severity']);
  });

  it('refuses a custom end that is missing without calling the API', async () => {
    const { api } = setup();
    await fireEvent.click(screen.getByLabelText('Until…'));
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    expect(api.calls).toHaveLength(0);
    expect(screen.getByText('Choose when the silence ends')).toBeTruthy();
  });

  it('shows 422 details at their fields and unknown ones in the banner', async () => {
    const { onsaved } = setup({
      'POST /api/metrics/alerts/silences': validationError(
        [['body', 'matchers', 1, 'value'], 'must not contain NUL characters'],
        [['body', 'ends_at'], 'must be in the future'],
        [['body', 'starts_at'], 'outside 2000-9000']
      )
    });
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    const valueInput = screen.getAllByLabelText('Value')[1];
    const described = document.getElementById(/** @type {string} */ (valueInput.getAttribute('aria-describedby')));
    expect(described?.textContent).toBe('must not contain NUL characters');
    expect(screen.getByText('must be in the future')).toBeTruthy();
    expect(screen.getByRole('alert').textContent).toContain('starts_at: outside 2000-9000');
    expect(onsaved).not.toHaveBeenCalled();
  });

  it('shows a 403 as a banner', async () => {
    setup({ 'POST /api/metrics/alerts/silences': new ApiError(403, 'forbidden', 'viewers cannot silence') });
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    expect(screen.getByRole('alert').textContent).toContain('viewers cannot silence');
  });

  it('starts empty without an alert and posts a project-wide silence', async () => {
    const { api } = setup(undefined, null);
    expect(screen.queryAllByLabelText('Value')).toHaveLength(0);
    await fireEvent.click(screen.getByRole('button', { name: 'Add matcher' }));
    await fireEvent.input(screen.getByLabelText('Label'), { target: { value: ' queue ' } });
    await fireEvent.input(screen.getByLabelText('Value'), { target: { value: 'emails' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Create silence' }));
    await settle();
    expect(api.calls[0].body.rule_id).toBeNull();
    expect(api.calls[0].body.matchers).toEqual([{ label: 'queue', op: '=', value: 'emails' }]);
  });
});
