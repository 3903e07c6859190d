import { describe, expect, it, vi } from 'vitest';
import { ApiError, MAX_PAGE, createMetricsApi, fieldErrors, nextCursor } from './api.js';

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

describe('paginated lists', () => {
  it('nextCursor takes the cursor of the rel="next" link only', () => {
    expect(nextCursor(null)).toBe(null);
    expect(nextCursor('<http://h/api/metrics/alerts?project_id=p&limit=2&cursor=abc_-1>; rel="next"')).toBe('abc_-1');
    expect(nextCursor('</x?cursor=p1>; rel="prev", </x?cursor=n1>; rel=next')).toBe('n1');
    expect(nextCursor('</x?cursor=p1>; rel="prev"')).toBe(null);
    expect(nextCursor('</x?cursor=a%2Cb>; title="a, b"; rel="first next"')).toBe('a,b');
  });

  it('list follows Link rel="next" with the same request plus its cursor, and joins the pages', async () => {
    /** @type {string[]} */
    const urls = [];
    const pages = [
      { body: { rules: [{ id: 1 }, { id: 2 }] }, link: '<http://internal:9000/api/metrics/alerts?project_id=p&limit=500&cursor=c1>; rel="next"' },
      { body: { rules: [{ id: 3 }] }, link: '<http://internal:9000/api/metrics/alerts?project_id=p&limit=500&cursor=c2>; rel="next"' },
      { body: { rules: [] }, link: null }
    ];
    const fetch = vi.fn(async (/** @type {string} */ url) => {
      urls.push(url);
      const { body, link } = /** @type {any} */ (pages.shift());
      return new Response(JSON.stringify(body), { status: 200, headers: link ? { link } : {} });
    });
    const api = createMetricsApi({ baseUrl: 'http://svc/prefix', getToken: async () => 't', fetch: /** @type {any} */ (fetch) });
    const answer = await api.list('/api/metrics/alerts', { project_id: 'p' }, 'rules');
    expect(answer.rules.map((/** @type {any} */ r) => r.id)).toEqual([1, 2, 3]);
    expect(urls.map((u) => [new URL(u).origin + new URL(u).pathname, new URL(u).searchParams.get('cursor')])).toEqual([
      ['http://svc/prefix/api/metrics/alerts', null],
      ['http://svc/prefix/api/metrics/alerts', 'c1'],
      ['http://svc/prefix/api/metrics/alerts', 'c2']
    ]);
    expect(urls.every((u) => new URL(u).searchParams.get('limit') === String(MAX_PAGE))).toBe(true);
  });

  it('list stops after maxPages', async () => {
    const fetch = vi.fn(async () =>
      new Response(JSON.stringify({ silences: [{ id: 1 }] }), { status: 200, headers: { link: '</s?cursor=again>; rel="next"' } })
    );
    const api = createMetricsApi({ baseUrl: 'http://svc', getToken: async () => 't', fetch: /** @type {any} */ (fetch) });
    const answer = await api.list('/s', { project_id: 'p', state: 'active' }, 'silences', { maxPages: 3 });
    expect(answer.silences).toHaveLength(3);
    expect(fetch).toHaveBeenCalledTimes(3);
  });
});
