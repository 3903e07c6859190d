import { describe, expect, it, vi } from 'vitest';
import { fireEvent, render, screen } from '@testing-library/svelte';
import RuleEditor from './RuleEditor.svelte';
import { ApiError } from '../data/api.js';
import { bodyOf, formOf, patchOf } from './rule-form.js';
import {
  PROJECT, RECEIVER_ID, RULE_ID, fakeApi, receiver, rule, settle, transition, validationError
} from './fake-api.test.fixtures.js';

/** @param {string} label @param {string} value */
async function type(label, value) {
  await fireEvent.input(screen.getByLabelText(label), { target: { value } });
}

function setup({ routes = {}, props = {} } = {}) {
  const api = fakeApi(routes);
  const onsaved = vi.fn();
  const view = render(RuleEditor, { props: { api, projectId: PROJECT, onsaved, ...props } });
  return { api, onsaved, view };
}

describe('RuleEditor', () => {
  it('creates a rule with the API field names, then previews it', async () => {
    const created = rule({ by: ['route'], threshold: 0.5 });
    const { api, onsaved } = setup({
      routes: {
        'POST /api/metrics/alerts': created,
        [`POST /api/metrics/alerts/${RULE_ID}/preview`]: {
          rule_id: RULE_ID, from: '2026-11-27T04:00:00Z', to: '2026-11-27T05:00:00Z', step: null,
          transitions: [transition(), transition({ at: '2026-11-27T04:31:00Z', state: 'resolved', previous: 'firing', value: 0.1 })]
        }
      },
      props: { receivers: [receiver(), receiver({ id: 'r2', name: 'slack', kind: 'slack', target: 'https://hooks.slack.com/…', has_secret: false })] }
    });
    await type('Name', 'webhook errors');
    await type('Metric', 'meshhook_webhook_requests_total');
    await type('Aggregation', 'rate');
    await fireEvent.change(screen.getByLabelText('Alert per'), { target: { value: 'labels' } });
    await type('Group by labels (comma-separated)', 'route, outcome ');
    await fireEvent.click(screen.getByRole('button', { name: 'Add matcher' }));
    await type('Label', 'outcome');
    await type('Value', 'error');
    await fireEvent.input(screen.getByLabelText('Threshold'), { target: { value: '0.5' } });
    await type('Pending for', '2m');
    await fireEvent.change(screen.getByLabelText('Severity'), { target: { value: 'critical' } });
    await fireEvent.click(screen.getByLabelText(/ops webhook/));
    await fireEvent.click(screen.getByRole('button', { name: 'Create rule' }));
    await settle();

    const [call] = api.callsTo('POST', '/api/metrics/alerts');
    expect(call.body).toEqual({
      project_id: PROJECT, name: 'webhook errors', description: '', metric: 'meshhook_webhook_requests_total',
      matchers: [{ label: 'outcome', op: '=', value: 'error' }], agg: 'rate', by: ['route', 'outcome'],
      window: '5m', op: '>', threshold: 0.5, for_duration: '2m', keep_firing_for: '0s', resolve_threshold: null,
      severity: 'critical', annotations: {}, labels: {}, no_data_after: null, no_data_policy: 'ok',
      group_wait: '0s', group_interval: '5m', repeat_interval: '4h', receiver_ids: [RECEIVER_ID], enabled: true
    });
    expect(onsaved).toHaveBeenCalledWith(created);
    expect(screen.getByRole('button', { name: 'Save changes' })).toBeTruthy();

    await fireEvent.click(screen.getByRole('button', { name: 'Preview' }));
    await settle();
    const [previewCall] = api.callsTo('POST', `/api/metrics/alerts/${RULE_ID}/preview`);
    const from = Date.parse(/** @type {string} */ (previewCall.params.from));
    const to = Date.parse(/** @type {string} */ (previewCall.params.to));
    expect(to - from).toBe(3600e3);
    expect(previewCall.params.step).toBeUndefined();
    expect(screen.getByText(/2 state changes; would have fired\s+1 time/)).toBeTruthy();
    const items = screen.getAllByRole('listitem');
    expect(items.map((li) => li.querySelector('.mh-state')?.textContent)).toEqual(['Firing', 'Resolved']);
  });

  it('patches only what changed', async () => {
    const { api } = setup({
      routes: { [`PATCH /api/metrics/alerts/${RULE_ID}`]: rule({ threshold: 1, enabled: false }) },
      props: { rule: rule(), receivers: [receiver()] }
    });
    await fireEvent.input(screen.getByLabelText('Threshold'), { target: { value: '1' } });
    await fireEvent.click(screen.getByLabelText('Enabled'));
    await fireEvent.click(screen.getByRole('button', { name: 'Save changes' }));
    await settle();
    expect(api.calls).toHaveLength(1);
    expect(api.calls[0]).toMatchObject({ method: 'PATCH', path: `/api/metrics/alerts/${RULE_ID}` });
    expect(api.calls[0].body).toEqual({ threshold: 1, enabled: false });
  });

  it('sends nothing when nothing changed', async () => {
    const { api } = setup({ props: { rule: rule() } });
    await fireEvent.click(screen.getByRole('button', { name: 'Save changes' }));
    await settle();
    expect(api.calls).toHaveLength(0);
    expect(screen.getByRole('status').textContent).toContain('Nothing to change');
  });

  it('keeps receivers the user cannot list when saving other fields', async () => {
    const { api } = setup({
      routes: { [`PATCH /api/metrics/alerts/${RULE_ID}`]: rule({ name: 'renamed' }) },
      props: { rule: rule(), receivers: [] }
    });
    expect(screen.getByText(/only admins see it; kept/)).toBeTruthy();
    await type('Name', 'renamed');
    await fireEvent.click(screen.getByRole('button', { name: 'Save changes' }));
    await settle();
    expect(api.calls[0].body).toEqual({ name: 'renamed' });
  });

  it('shows 422 details at their fields, the rest in a banner', async () => {
    setup({
      routes: {
        [`PATCH /api/metrics/alerts/${RULE_ID}`]: validationError(
          [['body', 'matchers', 0, 'value'], 'regex does not compile'],
          [['body', 'resolve_threshold'], 'must be at most the threshold'],
          [['body', 'annotations', 'summary'], "unknown template name 'foo'"],
          [['body', 'receiver_ids', 0], 'not a receiver of the project']
        )
      },
      props: { rule: rule({ annotations: { summary: '{{ foo }}' } }), receivers: [receiver()] }
    });
    await fireEvent.input(screen.getByLabelText('Resolve threshold (optional)'), { target: { value: '6' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Save changes' }));
    await settle();
    /** @param {HTMLElement} el */
    const describedText = (el) => document.getElementById(/** @type {string} */ (el.getAttribute('aria-describedby')))?.textContent;
    expect(describedText(screen.getAllByLabelText('Value')[0])).toBe('regex does not compile');
    expect(describedText(screen.getByLabelText('Resolve threshold (optional)'))).toBe('must be at most the threshold');
    expect(screen.getByText("unknown template name 'foo'")).toBeTruthy();
    expect(screen.getByText('not a receiver of the project')).toBeTruthy();
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('shows conflicts and empty-patch errors in the banner', async () => {
    setup({
      routes: { 'POST /api/metrics/alerts': new ApiError(409, 'conflict', 'an alert rule named "x" exists') }
    });
    await fireEvent.click(screen.getByRole('button', { name: 'Create rule' }));
    await settle();
    expect(screen.getByRole('alert').textContent).toContain('an alert rule named "x" exists');
  });

  it("shows a preview's 422 at the step", async () => {
    const { api } = setup({
      routes: { [`POST /api/metrics/alerts/${RULE_ID}/preview`]: validationError([['query', 'step'], 'more than 1,440 evaluations']) },
      props: { rule: rule() }
    });
    await fireEvent.change(screen.getByLabelText('Range'), { target: { value: String(7 * 86400) } });
    await fireEvent.change(screen.getByLabelText('Step'), { target: { value: '1m' } });
    await fireEvent.click(screen.getByRole('button', { name: 'Preview' }));
    await settle();
    expect(api.calls[0].params.step).toBe('1m');
    expect(screen.getByText('more than 1,440 evaluations')).toBeTruthy();
  });
});

describe('rule-form', () => {
  it('maps the grouping choice to by: null, [] or names', () => {
    const form = formOf(rule());
    expect(form.grouping).toBe('labels');
    expect(bodyOf({ ...form, grouping: 'series' }).by).toBeNull();
    expect(bodyOf({ ...form, grouping: 'all' }).by).toEqual([]);
    expect(formOf(rule({ by: null })).grouping).toBe('series');
    expect(formOf(rule({ by: [] })).grouping).toBe('all');
  });

  it('patches by, resolve_threshold and no_data_after to null when cleared', () => {
    const stored = rule({ resolve_threshold: 0.3, no_data_after: '10m' });
    const form = formOf(stored);
    form.resolve_threshold = null;
    form.no_data_after = '';
    form.grouping = 'series';
    expect(patchOf(stored, form)).toEqual({ resolve_threshold: null, no_data_after: null, by: null });
  });

  it('ignores receiver order and label key order', () => {
    const stored = rule({ receiver_ids: ['a', 'b'], labels: { team: 'ops', tier: '1' } });
    const form = formOf(stored);
    form.receiver_ids = ['b', 'a'];
    form.labels = [{ key: 'tier', value: '1' }, { key: 'team', value: 'ops' }];
    expect(patchOf(stored, form)).toEqual({});
  });
});
