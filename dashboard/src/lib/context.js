/** The objects every panel of one dashboard shares, handed down through Svelte's context. */
import { getContext, setContext } from 'svelte';

const KEY = Symbol('meshhook-metrics-dashboard');

/**
 * @typedef {object} DashboardContext
 * @property {any} supabase                         the host app's supabase-js client
 * @property {string} projectId
 * @property {import('./data/api.js').MetricsApi} api
 * @property {import('./data/live.svelte.js').LiveConnection} live
 */

/** @param {DashboardContext} context */
export function setDashboardContext(context) {
  return setContext(KEY, context);
}

/** @returns {DashboardContext} */
export function getDashboardContext() {
  const context = getContext(KEY);
  if (!context) throw new Error('a metrics panel must sit inside <MetricsDashboard> (or setDashboardContext)');
  return /** @type {DashboardContext} */ (context);
}
