import { fail, redirect } from '@sveltejs/kit';

/** @type {import('./$types').Actions} */
export const actions = {
  default: async ({ request, locals: { supabase }, url }) => {
    const form = await request.formData();
    const email = String(form.get('email') ?? '');
    const password = String(form.get('password') ?? '');
    const { error } = await supabase.auth.signInWithPassword({ email, password });
    if (error) return fail(400, { email, message: error.message });
    // the session cookies were set by the server client's setAll (hooks.server.js)
    const next = url.searchParams.get('next');
    redirect(303, next && next.startsWith('/') && !next.startsWith('//') ? next : '/metrics');
  }
};
