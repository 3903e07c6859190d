/**
 * Alert transitions of a project as chart markers, kept live: the history of the shown range
 * (`GET /api/metrics/alerts/history`), each marker tagged with its rule's metric so that it is drawn only
 * on panels of that metric. An `alert` broadcast or a resync only triggers a coalesced re-read.
 */
import { coalesce } from './coalesce.js';
import { alertMarkers } from './markers.js';
import { resolveRange } from '../data/range.js';

const LIMIT = 500;
const FIRST_READ_DELAY_MS = 400;

export class AlertMarkerFeed {
  /** @type {Array<{at: number, state: string, label: string, metric?: string}>} */
  markers = $state.raw([]);

  /**
   * @param {{api: import('../data/api.js').MetricsApi, live: {subscribe: Function}, projectId: string, range: any,
   *   now?: () => number, firstReadDelay?: number}} options
   */
  constructor({ api, live, projectId, range, now = () => Date.now(), firstReadDelay = FIRST_READ_DELAY_MS }) {
    this.firstReadDelay = firstReadDelay;
    this.api = api;
    this.projectId = projectId;
    this.range = range;
    this.now = now;
    this.destroyed = false;
    this.started = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.firstRead = undefined;
    this.reader = coalesce(() => this.read());
    this.unsubscribe = live.subscribe(projectId, {
      alert: () => void this.reader.run(),
      resync: () => void this.reader.run()
    });
  }

  /** @param {any} range */
  setRange(range) {
    this.range = range;
    if (this.started) {
      void this.reader.run();
      return;
    }
    // markers are an overlay: the first read waits a moment so that the charts' own first reads go first
    // (a browser opens only six connections to one origin)
    this.started = true;
    this.firstRead = setTimeout(() => void this.reader.run(), this.firstReadDelay);
  }

  async read() {
    const { from, to } = resolveRange(this.range, this.now());
    const project_id = this.projectId;
    const [history, rules] = await Promise.all([
      this.api.get('/api/metrics/alerts/history', {
        project_id, from: new Date(from * 1000).toISOString(), to: new Date((to + 60) * 1000).toISOString(), limit: LIMIT
      }),
      this.api.list('/api/metrics/alerts', { project_id }, 'rules')
    ]);
    if (this.destroyed) return;
    const metricOf = new Map((rules?.rules ?? []).map((/** @type {any} */ r) => [r.id, r.metric]));
    const events = history?.events ?? [];
    this.markers = events
      .flatMap((/** @type {any} */ event) =>
        alertMarkers([event]).map((marker) => ({ ...marker, metric: metricOf.get(event.rule_id) }))
      )
      .sort((a, b) => a.at - b.at);
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.firstRead);
    this.unsubscribe();
  }
}
