/** The page's place in the URL (project, view, time range), so a link or a reload shows the same view. */
import { rangeFromParams, rangeToParams } from '$lib/data/range.js';

export const VIEWS = /** @type {const} */ (['metrics', 'alerts', 'rules', 'receivers']);

/** @param {URL} url */
export function readUrl(url) {
  const view = url.searchParams.get('view');
  return {
    project: url.searchParams.get('project'),
    view: VIEWS.includes(/** @type {any} */ (view)) ? /** @type {typeof VIEWS[number]} */ (view) : 'metrics',
    range: rangeFromParams(url.searchParams)
  };
}

/**
 * @param {{project: string|null, view: string, range: import('$lib/data/range.js').TimeRange}} state
 * @returns {string} the search part, '?…'
 */
export function writeUrl({ project, view, range }) {
  const params = new URLSearchParams();
  if (project) params.set('project', project);
  if (view !== 'metrics') params.set('view', view);
  for (const [name, value] of rangeToParams(range)) params.set(name, value);
  return `?${params}`;
}
