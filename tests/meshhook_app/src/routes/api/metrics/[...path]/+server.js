// Same-origin proxy to the metrics HTTP service: the browser calls /api/metrics/* on this app (no CORS, one
// origin in the CSP), this forwards to METRICS_API_URL. Only the caller's bearer token and the content headers
// go through -- never the app's cookies. Without a bearer token the signed-in session's token is used.
import { env } from '$env/dynamic/private';

const FORWARDED_REQUEST = ['accept', 'content-type', 'if-match', 'if-none-match'];
const FORWARDED_RESPONSE = ['content-type', 'cache-control', 'etag', 'retry-after', 'location'];

/** @type {import('./$types').RequestHandler} */
async function proxy({ request, params, url, locals, fetch }) {
  const target = new URL(`${env.METRICS_API_URL}/api/metrics${params.path ? `/${params.path}` : ''}`);
  target.search = url.search;

  const headers = new Headers();
  for (const name of FORWARDED_REQUEST) {
    const value = request.headers.get(name);
    if (value) headers.set(name, value);
  }
  let authorization = request.headers.get('authorization');
  if (!authorization) {
    const { session } = await locals.safeGetSession();
    if (session) authorization = `Bearer ${session.access_token}`;
  }
  if (authorization) headers.set('authorization', authorization);

  const hasBody = request.method !== 'GET' && request.method !== 'HEAD';
  const upstream = await fetch(target, {
    method: request.method,
    headers,
    body: hasBody ? await request.arrayBuffer() : undefined
  });

  const out = new Headers();
  for (const name of FORWARDED_RESPONSE) {
    const value = upstream.headers.get(name);
    if (value) out.set(name, value);
  }
  return new Response(upstream.body, { status: upstream.status, headers: out });
}

export const GET = proxy;
export const POST = proxy;
export const PUT = proxy;
export const PATCH = proxy;
export const DELETE = proxy;
