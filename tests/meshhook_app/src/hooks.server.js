// Supabase session on the server, as Supabase documents it for SvelteKit (@supabase/ssr): one server client
// per request in `event.locals.supabase`, cookies read and written through SvelteKit's `event.cookies`.
import { createServerClient } from '@supabase/ssr';
import { env } from '$env/dynamic/public';

/** @type {import('@sveltejs/kit').Handle} */
export async function handle({ event, resolve }) {
  event.locals.supabase = createServerClient(env.PUBLIC_SUPABASE_URL, env.PUBLIC_SUPABASE_ANON_KEY, {
    cookies: {
      getAll: () => event.cookies.getAll(),
      /** @param {{name: string, value: string, options: import('cookie').SerializeOptions}[]} cookiesToSet */
      setAll: (cookiesToSet) => {
        // SvelteKit needs an explicit path; @supabase/ssr's options keep httpOnly false for the browser client
        cookiesToSet.forEach(({ name, value, options }) => event.cookies.set(name, value, { ...options, path: '/' }));
      }
    }
  });

  /**
   * getSession() alone trusts the cookie; getUser() asks Supabase Auth, so only a validated session counts.
   * @returns {Promise<{session: import('@supabase/supabase-js').Session|null, user: import('@supabase/supabase-js').User|null}>}
   */
  event.locals.safeGetSession = async () => {
    const {
      data: { session }
    } = await event.locals.supabase.auth.getSession();
    if (!session) return { session: null, user: null };
    const {
      data: { user },
      error
    } = await event.locals.supabase.auth.getUser();
    if (error) return { session: null, user: null };
    return { session, user };
  };

  return resolve(event, {
    filterSerializedResponseHeaders(name) {
      return name === 'content-range' || name === 'x-supabase-api-version';
    }
  });
}
