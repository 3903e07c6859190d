/**
 * Test doubles of the metrics API and the live connection, with canned answers shaped exactly like the HTTP
 * service's models (meshhook_rt_metrics/api/alert_models.py). Not shipped: `*.test.*` is excluded from dist.
 */
import { ApiError } from '../data/api.js';

export const PROJECT = '9b0c1d2e-0000-4000-8000-000000000001';
export const RULE_ID = '3f2a0000-0000-4000-8000-000000000002';
export const RECEIVER_ID = '7c1e0000-0000-4000-8000-000000000003';
export const USER_ID = 'aaaa0000-0000-4000-8000-000000000004';

/** ActiveAlert */
export function activeAlert(overrides = {}) {
  return {
    rule_id: RULE_ID,
    rule_name: 'webhook errors',
    fingerprint: '4e04aa',
    labels: { route: '/api/hooks/[slug]', team: 'ops', alertname: 'webhook errors', severity: 'critical' },
    state: 'firing',
    value: 0.8,
    since: '2026-11-27T04:12:00Z',
    active_at: '2026-11-27T04:10:00Z',
    fired_at: '2026-11-27T04:12:00Z',
    recovering_at: null,
    last_data_at: '2026-11-27T04:20:00Z',
    evaluated_at: '2026-11-27T04:20:00Z',
    ...overrides
  };
}

/** AlertEvent */
export function historyEvent(overrides = {}) {
  return {
    id: 42,
    project_id: PROJECT,
    rule_id: RULE_ID,
    rule_name: 'webhook errors',
    labels: { route: '/api/hooks/[slug]', alertname: 'webhook errors', severity: 'critical' },
    state: 'firing',
    previous: 'pending',
    fingerprint: '4e04aa',
    value: 0.8,
    at: '2026-11-27T04:12:00Z',
    ...overrides
  };
}

/** Rule */
export function rule(overrides = {}) {
  return {
    id: RULE_ID,
    project_id: PROJECT,
    name: 'webhook errors',
    description: '',
    metric: 'meshhook_webhook_requests_total',
    matchers: [{ label: 'outcome', op: '=', value: 'error' }],
    agg: 'rate',
    by: ['route'],
    window: '5m',
    op: '>',
    threshold: 0.5,
    for_duration: '2m',
    keep_firing_for: '0s',
    resolve_threshold: null,
    severity: 'critical',
    annotations: { summary: 'webhook errors above 0.5/s' },
    labels: {},
    no_data_after: null,
    no_data_policy: 'ok',
    group_wait: '0s',
    group_interval: '5m',
    repeat_interval: '4h',
    receiver_ids: [RECEIVER_ID],
    enabled: true,
    created_by: USER_ID,
    created_at: '2026-11-27T04:00:00Z',
    updated_at: '2026-11-27T04:00:00Z',
    ...overrides
  };
}

/** Receiver (never a secret: `has_secret` only) */
export function receiver(overrides = {}) {
  return {
    id: RECEIVER_ID,
    project_id: PROJECT,
    name: 'ops webhook',
    kind: 'webhook',
    target: 'https://ops.example.com/alerts',
    has_secret: true,
    created_by: USER_ID,
    created_at: '2026-11-27T04:00:00Z',
    updated_at: '2026-11-27T04:00:00Z',
    ...overrides
  };
}

/** Silence */
export function silence(overrides = {}) {
  return {
    id: '5d9b0000-0000-4000-8000-000000000005',
    project_id: PROJECT,
    rule_id: RULE_ID,
    matchers: [{ label: 'route', op: '=', value: '/api/hooks/[slug]' }],
    starts_at: '2026-11-27T04:30:00Z',
    ends_at: '2026-11-27T05:30:00Z',
    comment: 'deploy',
    state: 'active',
    created_by: USER_ID,
    created_at: '2026-11-27T04:30:00Z',
    ...overrides
  };
}

/** PreviewTransition */
export function transition(overrides = {}) {
  return {
    at: '2026-11-27T04:12:00Z',
    fingerprint: '4e04aa',
    labels: { route: '/api/hooks/[slug]', alertname: 'webhook errors', severity: 'critical' },
    state: 'firing',
    previous: 'inactive',
    value: 0.8,
    ...overrides
  };
}

/** ReceiverTest */
export function receiverTest(overrides = {}) {
  return {
    message_id: 21, key: 't9a1', status: 'sent', attempts: 1, last_status: 202, last_error: null,
    detail: 'delivered', ...overrides
  };
}

/** Delivery */
export function delivery(overrides = {}) {
  return {
    id: 17, key: 't9a1', rule_id: null, receiver_id: RECEIVER_ID, kind: 'test', status: 'dead', attempts: 8,
    last_status: 400, last_error: 'HTTP 400 from the receiver', created_at: '2026-11-27T04:00:00Z',
    sent_at: null, next_attempt_at: null, alerts: [], ...overrides
  };
}

/** A 422 as the service sends it (`details[].loc` starts with body/query). */
export function validationError(...details) {
  return new ApiError(
    422, 'validation_failed', 'invalid request',
    details.map(([loc, message]) => ({ loc, message, type: 'value_error' }))
  );
}

/**
 * A fake `api` (get/post/put/patch/del): answers from `routes` keyed `'GET /path'` (the path without its query
 * string; the query is parsed into `params`). A route is a value, an Error (thrown), or a function
 * `(call) => value` called per request. Every call is recorded in `api.calls`.
 * @param {Record<string, unknown>} routes
 */
export function fakeApi(routes = {}) {
  /** @type {Array<{method: string, path: string, params: Record<string, unknown>, body: any}>} */
  const calls = [];
  /** @type {Array<(value?: unknown) => void>} */
  const gates = [];
  const api = {
    calls,
    routes,
    /** Holds answers until `release()` (to test requests in flight). */
    hold: false,
    release() {
      for (const open of gates.splice(0)) open();
    },
    /** @param {string} method */
    callsTo(method, path) {
      return calls.filter((c) => c.method === method && c.path === path);
    }
  };
  /** @param {string} method @param {string} fullPath @param {any} params @param {any} body */
  async function answer(method, fullPath, params, body) {
    const [path, query] = fullPath.split('?');
    const merged = { ...Object.fromEntries(new URLSearchParams(query ?? '')), ...(params ?? {}) };
    const call = { method, path, params: merged, body };
    calls.push(call);
    if (api.hold) await new Promise((resolve) => gates.push(resolve));
    const key = `${method} ${path}`;
    if (!(key in routes)) throw new ApiError(404, 'not_found', `no fake route ${key}`);
    let value = routes[key];
    if (typeof value === 'function') value = await value(call);
    if (value instanceof Error) throw value;
    return structuredClone(value);
  }
  return Object.assign(api, {
    get: (/** @type {string} */ p, /** @type {any} */ params) => answer('GET', p, params, undefined),
    // a list is one page here (a route's answer holds every row); api.test.js tests following `Link`
    list: (/** @type {string} */ p, /** @type {any} */ params) => answer('GET', p, params, undefined),
    post: (/** @type {string} */ p, /** @type {any} */ body) => answer('POST', p, undefined, body ?? {}),
    put: (/** @type {string} */ p, /** @type {any} */ body) => answer('PUT', p, undefined, body ?? {}),
    patch: (/** @type {string} */ p, /** @type {any} */ body) => answer('PATCH', p, undefined, body ?? {}),
    del: (/** @type {string} */ p, /** @type {any} */ params) => answer('DELETE', p, params, undefined)
  });
}

/** A fake live connection: `subscribe` records the handlers; `emit` calls them; `off` counts unsubscribes. */
export function fakeLive() {
  /** @type {Array<{projectId: string, handlers: any}>} */
  const subscriptions = [];
  const live = {
    status: 'live',
    subscriptions,
    unsubscribed: 0,
    /** @param {string} projectId @param {any} handlers */
    subscribe(projectId, handlers) {
      const entry = { projectId, handlers };
      subscriptions.push(entry);
      return () => {
        live.unsubscribed += 1;
        subscriptions.splice(subscriptions.indexOf(entry), 1);
      };
    },
    /** @param {'alert'|'resync'|'rollup'} event @param {unknown} [payload] */
    emit(event, payload) {
      for (const { handlers } of [...subscriptions]) handlers[event]?.(payload);
    }
  };
  return live;
}

/** Resolves after pending promises and Svelte's updates have run. */
export async function settle(times = 5) {
  for (let i = 0; i < times; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}
