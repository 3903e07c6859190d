import { describe, expect, it, vi } from 'vitest';
import { ApiError, createMetricsApi, fieldErrors } from './api.js';

/** @param {Array<{status: number, body?: any}>} answers */
function fakeFetch(answers) {
  /** @type {Array<{url: string, init: any}>} */
  const calls = [];
  const fetch = vi.fn(async (/** @type {string} */ url, /** @type {any} */ init) => {
    calls.push({ url, init });
    const { status, body } = answers.shift() ?? { status: 500 };
    return new Response(body === undefined ? null : JSON.stringify(body), { status });
  });
  return { fetch: /** @type {any} */ (fetch), calls };
}

describe('createMetricsApi', () => {
  it('sends the token and the query, a list parameter repeated and by= for a merge', async () => {
    const { fetch, calls } = fakeFetch([{ status: 200, body: { series: [] } }]);
    const api = createMetricsApi({ baseUrl: 'http://svc', getToken: async () => 't1', fetch });
    await api.query({ projectId: 'p', metric: 'm', agg: 'rate', by: [], match: ['a=b', 'c!=d'], from: 60, to: 120, step: '60s' });
    const url = new URL(calls[0].url);
    expect(url.pathname).toBe('/api/metrics');
    expect(url.searchParams.getAll('match')).toEqual(['a=b', 'c!=d']);
    expect(url.searchParams.getAll('by')).toEqual(['']);
    expect(calls[0].init.headers.authorization).toBe('Bearer t1');
  });

  it('after a 401 asks once for a new token and sends the request again with it', async () => {
    const { fetch, calls } = fakeFetch([{ status: 401, body: { code: 'unauthorized', message: 'expired' } }, { status: 200, body: { ok: 1 } }]);
    const refreshToken = vi.fn(async () => 't2');
    const api = createMetricsApi({ getToken: async () => 't1', refreshToken, fetch });
    expect(await api.get('/api/metrics/projects')).toEqual({ ok: 1 });
    expect(calls.map((c) => c.init.headers.authorization)).toEqual(['Bearer t1', 'Bearer t2']);
    expect(refreshToken).toHaveBeenCalledOnce();
  });

  it('gives up with the 401 when no new token comes', async () => {
    const { fetch, calls } = fakeFetch([{ status: 401, body: { code: 'unauthorized', message: 'expired' } }]);
    const api = createMetricsApi({ getToken: async () => 't1', refreshToken: async () => 't1', fetch });
    await expect(api.get('/x')).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
    expect(calls).toHaveLength(1);
  });

  it('turns the service error shape into ApiError, with field errors for forms and the body kept', async () => {
    const body = { code: 'validation_failed', message: 'invalid', details: [{ loc: ['body', 'threshold'], message: 'required' }] };
    const { fetch } = fakeFetch([{ status: 422, body }]);
    const api = createMetricsApi({ getToken: async () => null, fetch });
    const error = await api.post('/api/metrics/alerts', {}).catch((e) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(fieldErrors(error)).toEqual({ threshold: 'required' });
    expect(error.body).toEqual(body);
  });

  it('reports a service that does not answer as a network error', async () => {
    const fetch = vi.fn(async () => {
      throw new TypeError('fetch failed');
    });
    const api = createMetricsApi({ getToken: async () => null, fetch: /** @type {any} */ (fetch) });
    await expect(api.get('/x')).rejects.toMatchObject({ status: 0, code: 'network_error' });
  });
});
