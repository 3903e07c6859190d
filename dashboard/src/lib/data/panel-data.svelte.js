/**
 * The data of one panel: its queries' answers from `GET /api/metrics`, kept live.
 *
 * Every number comes from SQL (`metrics.query` behind the API); the `rollup` broadcast is the fast
 * trigger that says which minutes of which metric changed. The panel then reads those steps again,
 * at once when no read is in flight (the server publishes at most once a second per project; a pause of
 * `refreshInterval` after each read bounds bursts), and merges the answer by (group, step) — so the broadcast, a
 * resync after a reconnect and the first backfill may finish in any order. Quantiles of many series,
 * `last` across workers and PostgreSQL-regex matchers therefore mean exactly what they mean in the API.
 * Redraws are batched to one per animation frame.
 */
import { alignDown, applyAnswer, createBuffer, groupKey, prune, readWindow } from './buffer.js';
import { groupOf, matcherPredicate, minuteValue } from './live-values.js';
import { defaultStep, resolveRange } from './range.js';

/** Aggregations where "no data" means "nothing happened": shown as 0, not as a gap. */
const ZERO_FILLED = new Set(['rate', 'sum', 'count']);
/** Read the tail again at least this often while live, broadcasts or not (lost messages, quiet counters). */
const QUIET_REFRESH_MS = 15_000;
const TICK_MS = 5_000;

/**
 * @typedef {object} PanelQuery
 * @property {string} agg
 * @property {string[]} match
 * @property {string} [quantile]            a quantile panel's series carry it as label `quantile`
 * @property {'numerator'|'denominator'} [part]  the two halves of a ratio panel
 */

/**
 * @typedef {object} Frame
 * @property {number[]} times       step starts, epoch seconds
 * @property {number} step          seconds
 * @property {Array<{key: string, label: string, labels: Record<string, string>, values: (number|null)[]}>} series
 * @property {number|null} partialFrom  start of the newest, still open step
 * @property {boolean} zeroFilled
 */

/** @type {Frame} */
const EMPTY_FRAME = { times: [], step: 60, series: [], partialFrom: null, zeroFilled: false };

/**
 * The queries a spec panel needs: one; one per quantile; or a ratio's numerator and denominator.
 * @param {any} panel
 * @returns {PanelQuery[]}
 */
export function panelQueries(panel) {
  const match = panel.match ?? [];
  if (panel.quantiles?.length) return panel.quantiles.map((/** @type {string} */ q) => ({ agg: q, match, quantile: q }));
  const agg = panel.agg ?? 'sum';
  if (panel.ratio) {
    return [
      { agg, match: [...match, ...(panel.ratio.numerator ?? [])], part: 'numerator' },
      { agg, match: [...match, ...(panel.ratio.denominator ?? [])], part: 'denominator' }
    ];
  }
  return [{ agg, match }];
}

/** @param {Record<string, string>} labels @param {string} fallback */
function seriesLabel(labels, fallback) {
  const parts = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(', ') : fallback;
}

export class PanelData {
  /** @type {Frame} */
  frame = $state.raw(EMPTY_FRAME);
  /** @type {'live' | 'paused'} */
  mode = $state('live');
  loading = $state(true);
  /** @type {string | null} */
  error = $state(null);

  /**
   * @param {{api: import('./api.js').MetricsApi, live: {subscribe: Function, noteData: () => void},
   *   projectId: string, panel: any, range: any, refreshInterval?: number, now?: () => number,
   *   requestFrame?: (cb: () => void) => unknown}} options
   */
  constructor({ api, live, projectId, panel, range, refreshInterval = 250, now, requestFrame }) {
    this.api = api;
    this.live = live;
    this.projectId = projectId;
    this.panel = panel;
    this.queries = panelQueries(panel);
    this.refreshInterval = refreshInterval;
    this.now = now ?? (() => Date.now());
    this.requestFrame = requestFrame ?? ((/** @type {() => void} */ cb) =>
      typeof requestAnimationFrame === 'function' ? requestAnimationFrame(cb) : setTimeout(cb, 16));
    this.rev = 0;
    this.generation = 0;
    this.buffers = this.queries.map(() => createBuffer());
    this.predicates = this.queries.map((q) => matcherPredicate(q.match));
    /** @type {number} epoch s since when the channel has been joined without a gap (minutes from then are whole) */
    this.liveSince = Infinity;
    /** @type {Map<number, Map<number, any>>} minute -> series id -> its broadcast totals */
    this.seen = new Map();
    /** @type {number | null} oldest step start that changed since the last read */
    this.dirtyFrom = null;
    /** @type {number | null} the `to` of the newest completed read (epoch s) */
    this.readUntil = null;
    this.lastReadAt = 0;
    this.tailRunning = false;
    this.backfilling = false;
    this.drawQueued = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.tailTimer = null;
    this.destroyed = false;
    this.controller = new AbortController();
    this.unsubscribe = live.subscribe(projectId, {
      rollup: (/** @type {any} */ payload) => this.onRollup(payload),
      resync: () => this.onResync()
    });
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.setRange(range);
  }

  /** Live for a trailing range (`{last: '1h'}`), paused for a fixed one (`{from, to}`, e.g. a zoom). */
  /** @param {any} range */
  setRange(range) {
    this.range = range;
    this.mode = range?.last ? 'live' : 'paused';
    this.generation += 1;
    this.buffers = this.queries.map(() => createBuffer());
    this.dirtyFrom = null;
    this.readUntil = null;
    this.loading = true;
    void this.backfill();
  }

  /** The window on screen now: step-aligned start, end, step (seconds). */
  window() {
    const { from, to } = resolveRange(this.range, this.now());
    const step = defaultStep(to - from);
    return { from: alignDown(from, step), to, step };
  }

  async backfill() {
    const generation = this.generation;
    const { from, to } = this.window();
    this.backfilling = true;
    try {
      await this.read(from, to);
    } finally {
      if (generation === this.generation) {
        this.backfilling = false;
        this.loading = false;
      }
    }
  }

  /**
   * Read [from, to) for every query of the panel and merge the answers.
   * @param {number} from
   * @param {number} to
   * @returns {Promise<boolean>} whether the answers arrived (a failed read is retried by the ticker)
   */
  async read(from, to) {
    const rev = ++this.rev;
    const generation = this.generation;
    const { step } = this.window();
    try {
      const answers = await Promise.all(
        this.queries.map((q) =>
          this.api.query(
            { projectId: this.projectId, metric: this.panel.metric, agg: q.agg, by: this.panel.by ?? null,
              match: q.match, from, to, step: `${step}s` },
            this.controller.signal
          )
        )
      );
      if (this.destroyed || generation !== this.generation) return false;
      let changed = false;
      answers.forEach((answer, i) => {
        changed = applyAnswer(this.buffers[i], { rev, from, to, step, series: answer.series }) || changed;
      });
      this.readUntil = Math.max(this.readUntil ?? to, to);
      this.error = null;
      this.live.noteData();
      // the SQL answer usually confirms what a broadcast already drew: no second redraw for the same picture
      if (changed || this.frame === EMPTY_FRAME) this.scheduleDraw();
      return true;
    } catch (error) {
      if (this.destroyed || generation !== this.generation) return false;
      this.error = error instanceof Error ? error.message : String(error);
      // read the same steps again at the next tick
      this.dirtyFrom = Math.min(this.dirtyFrom ?? from, from);
      return false;
    } finally {
      // the pause between reads counts from the end of a read: a second-long rhythm of broadcasts and a
      // second-long throttle counted from the start would drift against each other and delay every update
      this.lastReadAt = this.now();
    }
  }

  /** @param {any} payload a `rollup` broadcast */
  onRollup(payload) {
    if (this.mode !== 'live') return;
    let oldest = Infinity;
    /** @type {Set<number>} */
    const minutes = new Set();
    for (const item of payload?.series ?? []) {
      if (item.name !== this.panel.metric) continue;
      const minute = Date.parse(item.minute) / 1000;
      oldest = Math.min(oldest, minute);
      if (minute < this.liveSince) continue;
      if (!this.seen.has(minute)) this.seen.set(minute, new Map());
      this.seen.get(minute)?.set(item.series_id, item);
      minutes.add(minute);
    }
    if (oldest === Infinity) return;
    for (const minute of minutes) this.drawMinute(minute);
    this.markDirty(oldest);
    this.scheduleTail();
  }

  /**
   * Draw one whole minute from the broadcast totals of its series, for every query whose value they
   * determine (live-values.js), as an answer of its own: the SQL answer after it replaces it.
   * @param {number} minute
   */
  drawMinute(minute) {
    const { step } = this.window();
    if (step !== 60) return;
    const items = [...(this.seen.get(minute)?.values() ?? [])];
    const by = this.panel.by ?? null;
    this.queries.forEach((query, i) => {
      const matches = this.predicates[i];
      if (!matches) return;
      /** @type {Map<string, {labels: Record<string, string>, items: any[]}>} */
      const groups = new Map();
      for (const item of items) {
        if (!matches(item.labels ?? {})) continue;
        const labels = groupOf(item.labels ?? {}, by);
        const key = groupKey(labels);
        if (!groups.has(key)) groups.set(key, { labels, items: [] });
        groups.get(key)?.items.push(item);
      }
      const series = [];
      for (const group of groups.values()) {
        const value = minuteValue(query.agg, group.items, by);
        if (value === undefined) return; // one group the broadcast cannot tell: leave the minute to SQL
        series.push({ labels: group.labels, points: /** @type {Array<[number, number|null]>} */ ([[minute, value]]) });
      }
      applyAnswer(this.buffers[i], { rev: ++this.rev, from: minute, to: minute + 60, step, series });
    });
    this.scheduleDraw();
  }

  /** After a (re)subscribe or a tab coming back: read everything since the last completed read. */
  onResync() {
    // minutes from the next whole one on are seen whole again; earlier ones may have missed broadcasts
    this.liveSince = Math.ceil(this.now() / 60_000) * 60;
    this.seen.clear();
    if (this.mode !== 'live' || this.readUntil === null) return; // the backfill reads it all anyway
    this.markDirty(this.readUntil - 1);
    this.lastReadAt = 0; // no throttle: the gap is what the user is looking at
    this.scheduleTail();
  }

  /** @param {number} t */
  markDirty(t) {
    this.dirtyFrom = Math.min(this.dirtyFrom ?? t, t);
  }

  /** One tail read in flight at most, and none sooner than refreshInterval after the previous one ended. */
  scheduleTail() {
    if (this.tailRunning || this.tailTimer || this.destroyed) return;
    const wait = this.lastReadAt + this.refreshInterval - this.now();
    if (wait > 0) {
      this.tailTimer = setTimeout(() => {
        this.tailTimer = null;
        void this.runTail();
      }, wait);
      return;
    }
    void this.runTail();
  }

  async runTail() {
    if (this.dirtyFrom === null || this.mode !== 'live' || this.destroyed) return;
    const { from: windowFrom, to, step } = this.window();
    const from = Math.max(alignDown(this.dirtyFrom, step), windowFrom);
    this.dirtyFrom = null;
    this.tailRunning = true;
    let ok = false;
    try {
      ok = await this.read(from, to);
    } finally {
      this.tailRunning = false;
    }
    // minutes named while this read ran; after a failure the ticker retries instead (no busy loop)
    if (ok && this.dirtyFrom !== null) this.scheduleTail();
  }

  /** Slide the live window and read the tail now and then even when no broadcast arrives. */
  tick() {
    if (this.destroyed) return;
    if (this.readUntil === null) {
      // the first read failed (service down, expired session): try again, live or not
      if (!this.backfilling) void this.backfill();
      return;
    }
    if (this.mode !== 'live') return;
    if (this.error && this.dirtyFrom !== null) {
      this.scheduleTail();
    } else if (this.now() - this.lastReadAt >= QUIET_REFRESH_MS) {
      this.markDirty(this.readUntil - 1);
      this.scheduleTail();
    }
    this.scheduleDraw();
  }

  scheduleDraw() {
    if (this.drawQueued || this.destroyed) return;
    this.drawQueued = true;
    this.requestFrame(() => {
      this.drawQueued = false;
      if (!this.destroyed) this.frame = this.compose();
    });
  }

  /** @returns {Frame} */
  compose() {
    const { from, to, step } = this.window();
    const nowS = this.now() / 1000;
    const zeroFill = ZERO_FILLED.has(String(this.queries[0]?.agg).toLowerCase());
    for (const minute of this.seen.keys()) if (minute < to - 180) this.seen.delete(minute);
    const windows = this.buffers.map((buffer) => {
      prune(buffer, from, to);
      return readWindow(buffer, { from, to, step, zeroFill });
    });
    const times = windows[0]?.times ?? [];
    const partial = alignDown(Math.min(nowS, to), step);
    const partialFrom = partial >= from && partial < to && nowS < to + step ? partial : null;
    return { times, step, series: this.composeSeries(windows), partialFrom, zeroFilled: zeroFill };
  }

  /**
   * @param {Array<ReturnType<typeof readWindow>>} windows
   * @returns {Frame['series']}
   */
  composeSeries(windows) {
    const title = this.panel.title ?? this.panel.metric;
    if (this.panel.ratio) {
      const [numerator, denominator] = windows;
      const byKey = new Map(numerator.groups.map((g) => [g.key, g]));
      // the two rates come from SQL; the panel only divides them, per group and step
      return denominator.groups.map((den) => ({
        key: den.key,
        labels: den.labels,
        label: seriesLabel(den.labels, title),
        values: den.values.map((d, i) => {
          const n = byKey.get(den.key)?.values[i] ?? (d === null ? null : 0);
          return d === null || n === null || d === 0 ? null : n / d;
        })
      }));
    }
    return windows.flatMap((w, i) => {
      const quantile = this.queries[i].quantile;
      return w.groups.map((g) => {
        const labels = quantile ? { ...g.labels, quantile } : g.labels;
        return { key: quantile ? `${quantile}:${g.key}` : g.key, labels, label: seriesLabel(labels, title), values: g.values };
      });
    });
  }

  destroy() {
    this.destroyed = true;
    this.controller.abort();
    this.unsubscribe();
    clearInterval(this.ticker);
    if (this.tailTimer) clearTimeout(this.tailTimer);
  }
}
