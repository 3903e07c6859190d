import { error, redirect } from '@sveltejs/kit';
import { env } from '$env/dynamic/private';

/**
 * The signed-in user's projects come from the metrics service (`GET /api/metrics/projects`, i.e.
 * `metrics.my_projects()`), called server-side with the user's own access token: it goes through
 * `metrics.membership()`, which a MeshHook installation rewires to its own project ownership (the rule of
 * `user_project_ids()`), so this list, the charts' queries and the Realtime channel joins agree by construction.
 * @type {import('./$types').PageServerLoad}
 */
export async function load({ locals: { safeGetSession }, url, fetch }) {
  const { session } = await safeGetSession();
  if (!session) redirect(303, `/login?next=${encodeURIComponent(url.pathname + url.search)}`);

  const response = await fetch(`${env.METRICS_API_URL}/api/metrics/projects`, {
    headers: { authorization: `Bearer ${session.access_token}`, accept: 'application/json' }
  });
  if (!response.ok) error(502, `the metrics service answered ${response.status}`);
  /** @type {{projects: {project_id: string, name: string|null, role: string}[]}} */
  const { projects } = await response.json();

  const wanted = url.searchParams.get('project');
  const project = projects.find((p) => p.project_id === wanted) ?? projects[0] ?? null;
  return {
    projects,
    projectId: project?.project_id ?? null,
    // '' = same origin: the browser calls /api/metrics/* on this app, proxied by routes/api/metrics/[...path]
    metricsApiUrl: ''
  };
}
