/**
 * Alert transitions as chart markers. Pure: the history (`GET /api/metrics/alerts/history` events) or a rule
 * preview's `transitions` in, `[{at, state, label}]` out, oldest first because charts draw along time.
 */
import { stateInfo } from './states.js';
import { epochSeconds, labelText } from './format.js';

/**
 * @typedef {object} AlertMarker
 * @property {number} at        epoch seconds of the transition (data time of the evaluation)
 * @property {string} state     what the alert became
 * @property {string} label     e.g. `webhook errors: Firing (route="/a")`
 */

/**
 * @param {Array<{at: string|number, state: string, rule_name?: string, labels?: Record<string, unknown>,
 *   previous?: string|null, id?: number}>|null|undefined} rows
 * @returns {AlertMarker[]}
 */
export function alertMarkers(rows) {
  /** @type {Array<AlertMarker & {id: number}>} */
  const markers = [];
  for (const row of rows ?? []) {
    const at = epochSeconds(row.at);
    if (!Number.isFinite(at)) continue; // a row that cannot be placed on a time axis
    const name = row.rule_name ?? String(row.labels?.alertname ?? 'alert');
    const labels = labelText(row.labels ?? {});
    const label = `${name}: ${stateInfo(row.state).label}${labels ? ` (${labels})` : ''}`;
    markers.push({ at, state: row.state, label, id: row.id ?? 0 });
  }
  // the API answers newest first; equal times keep the event order (id) so a chart's stack is stable
  markers.sort((a, b) => a.at - b.at || a.id - b.id);
  return markers.map(({ at, state, label }) => ({ at, state, label }));
}
