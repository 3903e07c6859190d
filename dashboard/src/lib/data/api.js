/**
 * The metrics HTTP service seen from the browser: `GET /api/metrics` and the alert and dashboard endpoints,
 * called with the signed-in user's access token. Every number comes from SQL behind these endpoints; this
 * module only builds requests and turns the service's error shape into `ApiError`.
 */

/** An error answer of the HTTP service: `{code, message, details: [{loc, message, type}]}` (docs/api.md). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Array<{loc: (string|number)[], message: string, type?: string}>} [details]
   * @param {any} [body]  the whole answer, for endpoints whose error answer is a result of its own
   *                      (a receiver test's 502 carries the delivery's outcome)
   */
  constructor(status, code, message, details = [], body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.body = body;
  }
}

/**
 * The 422 details of an error keyed by field path without its `body`/`query` head, for forms:
 * `{loc: ['body', 'matchers', 1, 'value']}` becomes `'matchers.1.value'`.
 * @param {unknown} error
 * @returns {Record<string, string>}
 */
export function fieldErrors(error) {
  /** @type {Record<string, string>} */
  const fields = {};
  if (!(error instanceof ApiError)) return fields;
  for (const detail of error.details ?? []) {
    const path = (detail.loc ?? []).slice(detail.loc?.[0] === 'body' || detail.loc?.[0] === 'query' ? 1 : 0);
    const key = path.join('.') || '_';
    fields[key] ??= detail.message;
  }
  return fields;
}

/** @param {Date|number|string} t @returns {string} */
function timeParam(t) {
  if (t instanceof Date) return t.toISOString();
  return String(t);
}

/**
 * @typedef {object} QueryArgs
 * @property {string} projectId
 * @property {string} metric
 * @property {string} [agg]
 * @property {string[]|null} [by]   null: every label (one series per label set); []: all merged
 * @property {string[]} [match]
 * @property {Date|number} from
 * @property {Date|number} to
 * @property {string} [step]
 */

/**
 * @typedef {object} QueryAnswer
 * @property {Array<{labels: Record<string, string>, points: Array<[number, number|null]>}>} series
 * @property {string} from
 * @property {string} to
 * @property {string|null} step
 */

/**
 * @param {{baseUrl?: string, getToken: () => Promise<string|null|undefined>,
 *   refreshToken?: () => Promise<string|null|undefined>, fetch?: typeof fetch}} options
 *   refreshToken: asked once for a new token when the service answers 401 (an access token that expired
 *   while the tab slept or the network was gone), after which the request is sent again
 */
export function createMetricsApi({
  baseUrl = '',
  getToken,
  refreshToken,
  fetch: fetchImpl = globalThis.fetch.bind(globalThis)
}) {
  const root = baseUrl.replace(/\/+$/, '');

  /**
   * @param {string} method
   * @param {string} path
   * @param {Record<string, unknown>} [params]
   * @param {unknown} [body]
   * @param {AbortSignal} [signal]
   */
  async function request(method, path, params, body, signal) {
    return (await exchange(method, path, params, body, signal)).json;
  }

  /**
   * The answer's JSON and the `cursor` of its `Link: <...>; rel="next"` header (null on a list's last page).
   * @param {string} method
   * @param {string} path
   * @param {Record<string, unknown>} [params]
   * @param {unknown} [body]
   * @param {AbortSignal} [signal]
   * @returns {Promise<{json: any, next: string|null}>}
   */
  async function exchange(method, path, params, body, signal) {
    const url = new URL(root + path, root ? undefined : globalThis.location?.origin ?? 'http://localhost');
    for (const [name, value] of Object.entries(params ?? {})) {
      if (value === undefined || value === null) continue;
      for (const item of Array.isArray(value) ? value : [value]) url.searchParams.append(name, String(item));
    }
    const target = root ? url.toString() : url.pathname + url.search;
    /** @param {string|null|undefined} token */
    const send = async (token) => {
      /** @type {Record<string, string>} */
      const headers = { accept: 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      try {
        return await fetchImpl(target, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal
        });
      } catch (cause) {
        if (signal?.aborted) throw cause;
        throw new ApiError(0, 'network_error', `the metrics service did not answer (${String(cause)})`);
      }
    };
    const token = await getToken();
    let response = await send(token);
    if (response.status === 401 && refreshToken) {
      const fresh = await refreshToken().catch(() => null);
      if (fresh && fresh !== token) response = await send(fresh);
    }
    if (response.status === 204) return { json: null, next: null };
    const text = await response.text();
    /** @type {any} */
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        json?.code ?? `http_${response.status}`,
        json?.message ?? `${response.status} ${response.statusText}`,
        json?.details ?? [],
        json
      );
    }
    return { json, next: nextCursor(response.headers.get('link')) };
  }

  return {
    /**
     * `GET /api/metrics`: one metric over a range, aggregated per step, computed by `metrics.query`.
     * @param {QueryArgs} args
     * @param {AbortSignal} [signal]
     * @returns {Promise<QueryAnswer>}
     */
    query({ projectId, metric, agg = 'sum', by, match = [], from, to, step }, signal) {
      /** @type {Record<string, unknown>} */
      const params = { project_id: projectId, metric, agg, from: timeParam(from), to: timeParam(to), step, match };
      if (by) params.by = by.length ? by : [''];
      return request('GET', '/api/metrics', params, undefined, signal);
    },
    /** @param {string} path @param {Record<string, unknown>} [params] @param {AbortSignal} [signal] */
    get: (path, params, signal) => request('GET', path, params, undefined, signal),
    /**
     * Every row of a paginated list (`GET` with `limit`/`cursor`, docs/api.md "Lists"): the first answer with
     * `answer[key]` holding the rows of all its pages, read by following `Link` rel="next" (the same request
     * with the link's `cursor`, so a proxy's view of the URL does not matter). At most `maxPages` pages.
     * @param {string} path
     * @param {Record<string, unknown>} params
     * @param {string} key  the body's list: 'rules', 'receivers', 'silences', ...
     * @param {{signal?: AbortSignal, maxPages?: number}} [options]
     * @returns {Promise<any>}
     */
    async list(path, params, key, { signal, maxPages = 100 } = {}) {
      let { json, next } = await exchange('GET', path, { limit: MAX_PAGE, ...params }, undefined, signal);
      const first = json ?? {};
      const rows = [...(first[key] ?? [])];
      for (let pages = 1; next && pages < maxPages; pages++) {
        ({ json, next } = await exchange('GET', path, { limit: MAX_PAGE, ...params, cursor: next }, undefined, signal));
        rows.push(...(json?.[key] ?? []));
      }
      return { ...first, [key]: rows };
    },
    /** @param {string} path @param {unknown} body */
    post: (path, body) => request('POST', path, undefined, body ?? {}),
    /** @param {string} path @param {unknown} body */
    put: (path, body) => request('PUT', path, undefined, body ?? {}),
    /** @param {string} path @param {unknown} body */
    patch: (path, body) => request('PATCH', path, undefined, body ?? {}),
    /** @param {string} path @param {Record<string, unknown>} [params] */
    del: (path, params) => request('DELETE', path, params)
  };
}

/** @typedef {ReturnType<typeof createMetricsApi>} MetricsApi */

/** The largest page the service gives (`limit` of its lists). */
export const MAX_PAGE = 500;

/**
 * The `cursor` of the `rel="next"` link of a `Link` header (RFC 8288), or null.
 * @param {string|null} header
 * @returns {string|null}
 */
export function nextCursor(header) {
  for (const part of (header ?? '').split(/,(?=\s*<)/)) {
    const found = /^\s*<([^>]*)>(.*)$/.exec(part);
    const rel = found && /;\s*rel\s*=\s*(?:"([^"]*)"|([^;\s]+))/i.exec(found[2]);
    if (!found || !rel || !(rel[1] ?? rel[2]).toLowerCase().split(/\s+/).includes('next')) continue;
    try {
      return new URL(found[1], 'http://link.invalid').searchParams.get('cursor');
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * `getToken` and `refreshToken` for createMetricsApi from a supabase-js client's session.
 * @param {any} supabase
 */
export function sessionAuth(supabase) {
  return { getToken: sessionToken(supabase), refreshToken: refreshedToken(supabase) };
}

/**
 * A new access token from supabase-js (`refreshSession`), or null when it cannot get one now.
 * @param {any} supabase
 */
export function refreshedToken(supabase) {
  return async () => (await supabase.auth.refreshSession()).data?.session?.access_token ?? null;
}

/**
 * The access token of a supabase-js client's current session (refreshed by supabase-js itself).
 * @param {{auth: {getSession: () => Promise<{data: {session: {access_token: string}|null}}>}}} supabase
 */
export function sessionToken(supabase) {
  return async () => (await supabase.auth.getSession()).data.session?.access_token ?? null;
}
