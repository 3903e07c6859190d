// One supabase-js client per page load, as @supabase/ssr documents for SvelteKit: a browser client (a
// singleton in the browser, session in cookies) or, during SSR, a server client over the request's cookies.
import { createBrowserClient, createServerClient, isBrowser } from '@supabase/ssr';
import { env } from '$env/dynamic/public';

/** @type {import('./$types').LayoutLoad} */
export async function load({ data, depends, fetch }) {
  depends('supabase:auth');

  const supabase = isBrowser()
    ? createBrowserClient(env.PUBLIC_SUPABASE_URL, env.PUBLIC_SUPABASE_ANON_KEY, { global: { fetch } })
    : createServerClient(env.PUBLIC_SUPABASE_URL, env.PUBLIC_SUPABASE_ANON_KEY, {
        global: { fetch },
        cookies: { getAll: () => data.cookies }
      });

  // the session was validated by safeGetSession() in +layout.server.js; here it only feeds the client
  const {
    data: { session }
  } = await supabase.auth.getSession();

  return { supabase, session, user: data.user };
}
