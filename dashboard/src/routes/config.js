/**
 * The page's runtime settings, served by the metrics HTTP service next to it (`/dashboard/config.json`):
 * the Supabase URL and anon key (public by design) and where the API is ('' = this origin).
 */
import { base } from '$app/paths';

/** @returns {Promise<{supabaseUrl: string, supabaseAnonKey: string, apiUrl: string}>} */
export async function loadConfig() {
  // default cache mode: the preload in app.html answers it (the service sends config.json with no-cache)
  const response = await fetch(`${base}/config.json`);
  if (!response.ok) throw new Error(`config.json: ${response.status} ${response.statusText}`);
  const config = await response.json();
  if (!config.supabaseUrl || !config.supabaseAnonKey) {
    throw new Error('config.json names no Supabase URL or anon key (MESHHOOK_METRICS_SUPABASE_URL / _ANON_KEY)');
  }
  return { apiUrl: '', ...config };
}
