/**
 * Alert states as the alert worker names them (docs/alerting.md, "The state machine"): how each is shown and
 * in which order a list puts them. Colours are theme variables, so light and dark themes both apply.
 */

/** @typedef {'pending'|'firing'|'recovering'|'resolved'|'inactive'|'nodata'} AlertState */

/** @type {Record<string, {label: string, color: string, order: number}>} */
export const STATES = {
  firing: { label: 'Firing', color: 'var(--mh-critical)', order: 0 },
  nodata: { label: 'No data', color: 'var(--mh-warning)', order: 1 },
  pending: { label: 'Pending', color: 'var(--mh-warning)', order: 2 },
  recovering: { label: 'Recovering', color: 'var(--mh-accent)', order: 3 },
  resolved: { label: 'Resolved', color: 'var(--mh-ok)', order: 4 },
  inactive: { label: 'Inactive', color: 'var(--mh-muted)', order: 5 }
};

/** The four states `GET /api/metrics/alerts/active` returns (and accepts as `state=`). */
export const ACTIVE_STATES = ['firing', 'pending', 'recovering', 'nodata'];

/**
 * How to show a state; an unknown one (a newer server) is shown by its name, muted, last.
 * @param {string|null|undefined} state
 */
export function stateInfo(state) {
  return STATES[state ?? ''] ?? { label: state ?? '–', color: 'var(--mh-muted)', order: 99 };
}

/**
 * Active alerts, most urgent first: by state order, then the newest `since` (the API's own order) first.
 * Returns a new array.
 * @template {{state: string, since?: string|null}} T
 * @param {T[]} alerts
 * @returns {T[]}
 */
export function sortAlerts(alerts) {
  return [...alerts].sort((a, b) => {
    const byState = stateInfo(a.state).order - stateInfo(b.state).order;
    if (byState) return byState;
    return (Date.parse(b.since ?? '') || 0) - (Date.parse(a.since ?? '') || 0);
  });
}
