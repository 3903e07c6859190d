/**
 * The connection badge's rule, pure so it can be tested without timers: a stale chart must never look
 * current, so freshness of the newest data wins over the socket's status.
 */

export const FRESH_SECONDS = 5;
export const STALE_SECONDS = 30;

const STATUS_TEXT = /** @type {Record<string, string>} */ ({
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline'
});

/**
 * @param {{status: string, lastDataAt: number|null}} live
 * @param {number} nowMs
 * @returns {{level: 'ok'|'warning'|'critical'|'neutral', text: string, age: string, stale: boolean}}
 */
export function connectionState(live, nowMs) {
  const status = live?.status ?? 'connecting';
  const ageSeconds = live?.lastDataAt == null ? null : Math.max(0, (nowMs - live.lastDataAt) / 1000);
  const age = ageSeconds === null ? 'no data yet' : `updated ${ago(ageSeconds)}`;
  const text = STATUS_TEXT[status] ?? status;
  const stale = ageSeconds === null || ageSeconds >= FRESH_SECONDS;
  /** @type {'ok'|'warning'|'critical'|'neutral'} */
  let level;
  if (status === 'offline' || (ageSeconds !== null && ageSeconds > STALE_SECONDS)) level = 'critical';
  else if (status === 'reconnecting' || (status === 'live' && stale)) level = 'warning';
  else if (status === 'live') level = 'ok';
  else level = 'neutral'; // connecting, no verdict yet
  return { level, text, age, stale: status === 'live' && stale };
}

/** @param {number} s */
function ago(s) {
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}
