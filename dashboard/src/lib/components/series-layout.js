/**
 * How a frame's series become uPlot series — pure, so the quantile convention is testable.
 *
 * Quantile convention (histogram panels, `panel.quantiles` e.g. ['p50','p90','p99']): PanelData's frame
 * carries one series per (group, quantile), `labels.quantile` = 'p50' | 'p90' | ... plus the group's
 * labels. Per group, in one colour:
 *   - the lowest quantile (p50, the median) is the solid line, width 2;
 *   - every higher quantile is a thin dashed edge line (width 1), and the area between it and the next
 *     lower quantile is a uPlot band: p50→p90 (or p95) at 25 % opacity, p90→p99 at 12 %, so the fan
 *     gets fainter towards the tail.
 * Series without `labels.quantile` are plain lines, one palette colour each.
 */

/**
 * @typedef {object} LayoutSeries
 * @property {string} key
 * @property {string} label
 * @property {number} color       palette index (0-based)
 * @property {string|null} quantile
 * @property {number} width
 * @property {number[]|null} dash
 */

/**
 * @typedef {object} Layout
 * @property {LayoutSeries[]} series
 * @property {Array<{series: [number, number], alpha: number}>} bands  uPlot series indices (1-based: 0 is x), upper first
 * @property {string} signature     changes only when the set of series (or their roles) changes
 * @property {boolean} quantiles
 */

/** @param {string} q 'p99.9' → 99.9 */
const quantileRank = (q) => Number(String(q).replace(/^p/, '')) || 0;

/** @param {Record<string, string>} labels */
function groupKey(labels) {
  return JSON.stringify(Object.entries(labels ?? {}).filter(([k]) => k !== 'quantile').sort(([a], [b]) => (a < b ? -1 : 1)));
}

const BAND_ALPHAS = [0.25, 0.12, 0.06];

/**
 * @param {import('./frame.js').Frame|null|undefined} frame
 * @returns {Layout}
 */
export function buildLayout(frame) {
  const input = frame?.series ?? [];
  const quantiles = input.some((s) => s.labels && 'quantile' in s.labels);
  /** @type {LayoutSeries[]} */
  const series = [];
  /** @type {Layout['bands']} */
  const bands = [];
  if (!quantiles) {
    input.forEach((s, i) => series.push({ key: s.key, label: s.label, color: i, quantile: null, width: 1.5, dash: null }));
  } else {
    /** @type {Map<string, typeof input>} */
    const groups = new Map();
    for (const s of input) {
      const g = groupKey(s.labels);
      if (!groups.has(g)) groups.set(g, []);
      /** @type {typeof input} */ (groups.get(g)).push(s);
    }
    let color = 0;
    for (const members of groups.values()) {
      members.sort((a, b) => quantileRank(a.labels?.quantile) - quantileRank(b.labels?.quantile));
      members.forEach((s, j) => {
        series.push({
          key: s.key,
          label: s.label,
          color,
          quantile: s.labels?.quantile ?? null,
          width: j === 0 ? 2 : 1,
          dash: j === 0 ? null : [4, 4]
        });
        // series index in uPlot = position + 1; band from this quantile down to the previous one
        if (j > 0) bands.push({ series: [series.length, series.length - 1], alpha: BAND_ALPHAS[Math.min(j - 1, 2)] });
      });
      color++;
    }
  }
  const signature = series.map((s) => `${s.key}|${s.quantile ?? ''}`).join('\n');
  return { series, bands, signature, quantiles };
}

/**
 * uPlot's columnar data for a layout: `[times, ...values in layout order]` (a series the frame lacks is
 * all null rather than shifting the others). With `maskPartial`, values of the open step
 * (`t >= partialFrom`) are left out: the panel draws them itself, dashed, so a half-filled step never
 * looks like a settled one (and does not stretch the y axis).
 * @param {import('./frame.js').Frame|null|undefined} frame
 * @param {Layout} layout
 * @param {{maskPartial?: boolean}} [options]
 * @returns {Array<Array<number|null>>}
 */
export function toPlotData(frame, layout, { maskPartial = false } = {}) {
  const times = frame?.times ?? [];
  const byKey = new Map((frame?.series ?? []).map((s) => [s.key, s.values]));
  const cut = maskPartial && frame?.partialFrom != null ? times.findIndex((t) => t >= /** @type {number} */ (frame.partialFrom)) : -1;
  return [
    times,
    ...layout.series.map((s) => {
      const values = byKey.get(s.key) ?? times.map(() => null);
      return cut < 0 ? values : values.map((v, i) => (i >= cut ? null : v));
    })
  ];
}

/**
 * `color` at `alpha` for canvas fills; handles #rgb, #rrggbb and rgb(); other forms come back unchanged.
 * @param {string} color @param {number} alpha
 */
export function withAlpha(color, alpha) {
  const c = color.trim();
  let m = /^#([0-9a-f])([0-9a-f])([0-9a-f])$/i.exec(c);
  if (m) return `rgba(${parseInt(m[1] + m[1], 16)}, ${parseInt(m[2] + m[2], 16)}, ${parseInt(m[3] + m[3], 16)}, ${alpha})`;
  m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(c);
  if (m) return `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, ${alpha})`;
  m = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/i.exec(c);
  if (m) return `rgba(${m[1]}, ${m[2]}, ${m[3]}, ${alpha})`;
  return c;
}
