// The browser half of benchmarks/dashboard.py: a headless Chromium (playwright-core) that the Python
// orchestration drives with one JSON command per line on stdin; every answer is one JSON line on stdout.
//
// Everything is measured from OUTSIDE the dashboard's code, by an init script injected into each page:
// - "painted": the first task after the rendering step of the frame that shows a change. requestAnimationFrame
//   is wrapped so that the first rAF callback of a frame posts a MessageChannel message, which runs after that
//   frame's style/layout/paint; a change observed in a task outside a frame asks for the next frame. (The brief's
//   "next rAF after the change" would add up to one frame, ~16 ms, when the change happens inside a rAF.)
// - Realtime frames: window.WebSocket is replaced by a subclass that timestamps every `message` event (before
//   supabase-js' own onmessage handler) and notes the rollup broadcasts and the metric names they carry.
// - Tail reads: window.fetch is wrapped (start time, URL); Resource Timing gives each request's responseEnd.
// - uPlot redraws: CanvasRenderingContext2D.prototype.clearRect (uPlot clears the canvas at every redraw) records
//   the panel (its <figure>'s title) and when that draw was painted.
// - DOM values: a MutationObserver runs the page's "probe" (a data table cell, a panel's state) after every
//   DOM change and records changes with their paint time.
// Times are epoch milliseconds (performance.timeOrigin + performance.now(), the machine's clock, like Python's
// time.time()) unless named *_ms_since_nav.
//
// Usage: node benchmarks/dashboard_browser.mjs   (commands on stdin, see `handlers` below)
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../dashboard/e2e/chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'dashboard', 'package.json'));
const { chromium } = require('playwright-core');

const VIEWPORT = { width: 1400, height: 1000 };

// -- the instrumentation, injected before any script of the page -------------------------------------------
const INSTRUMENT = `(() => {
  if (window.__bench) return;
  const now = () => performance.timeOrigin + performance.now();
  const B = (window.__bench = { ws: [], fetches: [], draws: [], probes: [], marks: {}, watch: [], drawTitles: null });
  try { performance.setResourceTimingBufferSize(100000); } catch {}

  // post-paint timing
  let inFrame = false;
  let pending = [];
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    const t = now();
    inFrame = false;
    const callbacks = pending;
    pending = [];
    for (const cb of callbacks) cb(t);
  };
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (cb) =>
    raf((ts) => {
      if (!inFrame) {
        inFrame = true;
        channel.port2.postMessage(0);
      }
      return cb(ts);
    });
  B.whenPainted = (cb) => {
    pending.push(cb);
    if (!inFrame) window.requestAnimationFrame(() => {});
  };

  // Realtime frames
  const NativeWebSocket = window.WebSocket;
  const decoder = new TextDecoder();
  class BenchWebSocket extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        const t = now();
        const data = event.data;
        const text = typeof data === 'string' ? data : data instanceof ArrayBuffer ? decoder.decode(data) : '';
        if (!text.includes('rollup')) return;
        B.ws.push({ t, bytes: typeof data === 'string' ? data.length : data.byteLength ?? 0,
                    names: B.watch.filter((name) => text.includes(name)) });
      });
    }
  }
  window.WebSocket = BenchWebSocket;

  // API reads
  const nativeFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url.includes('/api/metrics?')) {
      const rec = { start: now(), url: new URL(url, location.href).href };
      B.fetches.push(rec);
      const promise = nativeFetch(input, init);
      promise.then((r) => { rec.headers = now(); rec.status = r.status; }, () => { rec.failed = now(); });
      return promise;
    }
    return nativeFetch(input, init);
  };
  B.resourceEnd = (rec) => {
    let best = null;
    for (const e of performance.getEntriesByName(rec.url)) {
      const start = performance.timeOrigin + e.startTime;
      if (Math.abs(start - rec.start) < 50 && (!best || Math.abs(start - rec.start) < best.d)) best = { d: Math.abs(start - rec.start), end: performance.timeOrigin + e.responseEnd };
    }
    return best ? best.end : null;
  };

  // uPlot redraws
  const clearRect = CanvasRenderingContext2D.prototype.clearRect;
  CanvasRenderingContext2D.prototype.clearRect = function (...args) {
    const result = clearRect.apply(this, args);
    if (B.drawTitles) {
      const figure = this.canvas.closest?.('figure');
      const title = figure?.querySelector('figcaption .title')?.textContent ?? '';
      if (B.drawTitles.includes(title)) {
        const rec = { t: now(), title };
        B.draws.push(rec);
        B.whenPainted((p) => (rec.painted = p));
      }
    }
    return result;
  };

  // DOM probes: B.probe() returns a JSON-able value; every change is recorded with its paint time
  B.probe = null;
  let last = undefined;
  const check = () => {
    if (!B.probe) return;
    let value;
    try { value = JSON.stringify(B.probe()); } catch (e) { value = JSON.stringify({ error: String(e) }); }
    if (value === last) return;
    last = value;
    const rec = { t: now(), value: JSON.parse(value) };
    B.probes.push(rec);
    B.whenPainted((p) => (rec.painted = p));
  };
  B.check = check;
  B.resetProbe = () => { last = undefined; };
  const start = () => new MutationObserver(check).observe(document.documentElement, { subtree: true, childList: true, characterData: true, attributes: true });
  if (document.documentElement) start(); else document.addEventListener('DOMContentLoaded', start);

  // page load: the first time-series panel painted with data, and the first panel that finished loading
  // (data or "No data in this range": the baseline's end point)
  const panels = () => [...document.querySelectorAll('figure.mh-panel')];
  const withData = (f) => f.querySelector('.plot canvas') && f.querySelectorAll('ul.legend li').length > 0 && !f.querySelector('.plot-area .state');
  const settled = (f) => f.getAttribute('aria-busy') === 'false' && (withData(f) || f.querySelector('.plot-area .state.empty'));
  const loadCheck = () => {
    if (!B.marks.firstData && panels().some(withData)) {
      B.marks.firstData = { t: now() };
      B.whenPainted((p) => (B.marks.firstData.painted = p));
    }
    if (!B.marks.firstSettled && panels().some(settled)) {
      B.marks.firstSettled = { t: now() };
      B.whenPainted((p) => (B.marks.firstSettled.painted = p));
    }
  };
  const startLoad = () => new MutationObserver(loadCheck).observe(document.documentElement, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-busy'] });
  if (document.documentElement) startLoad(); else document.addEventListener('DOMContentLoaded', startLoad);
})();`;

// -- state ---------------------------------------------------------------------------------------------------
let browser = null;
let storageState = null;
/** @type {{context: any, page: any, cdp: any, busy: any}|null} */
let live = null;

async function launch() {
  browser ??= await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
  return browser;
}

async function newContext() {
  const context = await (await launch()).newContext({ viewport: VIEWPORT, storageState: storageState ?? undefined });
  await context.addInitScript(INSTRUMENT);
  return context;
}

async function metrics(cdp) {
  const { metrics } = await cdp.send('Performance.getMetrics');
  return Object.fromEntries(metrics.map((m) => [m.name, m.value]));
}

const handlers = {
  /** Sign in through the page's form once; later contexts start signed in (storage state). */
  async signin({ url, email, password }) {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(url);
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 30000 });
    storageState = await context.storageState();
    await context.close();
    return { ok: true };
  },

  /** n page loads, a new (signed-in) context each: navigation start -> first chart with data / first panel settled. */
  async loads({ url, n, timeout_ms = 30000, mark = 'firstData' }) {
    const runs = [];
    for (let i = 0; i < n; i++) {
      const context = await newContext();
      const page = await context.newPage();
      const started = Date.now();
      await page.goto(url, { waitUntil: 'commit' });
      await page.waitForFunction((m) => window.__bench?.marks?.[m]?.painted, mark, { timeout: timeout_ms, polling: 20 });
      const run = await page.evaluate(() => {
        const B = window.__bench;
        const nav = performance.getEntriesByType('navigation')[0];
        const since = (t) => (t == null ? null : t - performance.timeOrigin);
        const apis = B.fetches.map((f) => ({ start: since(f.start), end: since(B.resourceEnd(f)) }));
        return {
          first_data_ms_since_nav: since(B.marks.firstData?.painted),
          first_settled_ms_since_nav: since(B.marks.firstSettled?.painted),
          response_end_ms: nav?.responseEnd ?? null,
          dom_content_loaded_ms: nav?.domContentLoadedEventEnd ?? null,
          first_api_start_ms: apis.length ? Math.min(...apis.map((a) => a.start)) : null,
          api_requests: apis.length,
          last_api_end_before_mark_ms: Math.max(0, ...apis.map((a) => a.end ?? 0).filter((e) => e <= (since(B.marks.firstData?.painted) ?? since(B.marks.firstSettled?.painted) ?? Infinity))),
          resources: performance.getEntriesByType('resource').map((e) => [new URL(e.name).pathname.slice(0, 40), Math.round(e.startTime), Math.round(e.responseEnd)]),
          charts: document.querySelectorAll('figure.mh-panel').length,
          charts_with_data: [...document.querySelectorAll('figure.mh-panel')].filter((f) => f.querySelectorAll('ul.legend li').length > 0).length
        };
      });
      run.wall_ms = Date.now() - started;
      runs.push(run);
      await context.close();
    }
    return { runs };
  },

  /** Open the long-lived page; `tables`: panel titles whose "Show data table" is clicked and probed;
   * `draws`: panel titles whose uPlot redraws are recorded; `watch`: metric names looked for in rollups. */
  async open({ url, tables = [], draws = [], watch = [], wait_title = null, timeout_ms = 30000 }) {
    if (live) await handlers.close();
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(url);
    await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: timeout_ms });
    for (const title of [...tables, ...(wait_title ? [wait_title] : [])]) {
      await page.locator('figure.mh-panel', { has: page.locator('figcaption .title', { hasText: title }) }).waitFor({ timeout: timeout_ms });
    }
    for (const title of tables) {
      const figure = page.locator('figure.mh-panel', { has: page.locator('figcaption .title', { hasText: title }) });
      await figure.getByRole('button', { name: 'Show data table' }).click();
      await figure.locator('table.mh-table').waitFor({ timeout: timeout_ms });
    }
    await page.evaluate(({ tables, draws, watch }) => {
      const B = window.__bench;
      B.watch = watch;
      B.drawTitles = draws.length ? draws : null;
      if (!tables.length) return;
      // newest row of each table (the "in progress" step included) and the sum of its column
      B.probe = () => {
        const out = {};
        for (const title of tables) {
          const table = [...document.querySelectorAll('table.mh-table')].find((t) => t.caption?.textContent === title);
          if (!table) { out[title] = null; continue; }
          const cells = [...table.querySelectorAll('tbody tr')].map((tr) => tr.querySelector('td')?.textContent ?? '');
          const numbers = cells.map((c) => Number(c)).filter((n) => Number.isFinite(n));
          out[title] = { newest: cells[0] ?? null, total: numbers.reduce((a, b) => a + b, 0), rows: cells.length };
        }
        return out;
      };
      B.resetProbe();
      B.check();
    }, { tables, draws, watch });
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable', { timeDomain: 'timeTicks' });
    live = { context, page, cdp, busy: null };
    const offset = await page.evaluate(() => ({ page_clock_minus_date_ms: performance.timeOrigin + performance.now() - Date.now() }));
    return { ok: true, ...offset };
  },

  /** Drain what the page recorded (probe changes, rollup frames, API reads, redraws). */
  async events() {
    return live.page.evaluate(() => {
      const B = window.__bench;
      const out = {
        probes: B.probes.splice(0),
        ws: B.ws.splice(0),
        fetches: B.fetches.splice(0).map((f) => ({ ...f, end: B.resourceEnd(f) })),
        draws: B.draws.splice(0)
      };
      return out;
    });
  },

  /** Main-thread busy time: CDP Performance.getMetrics deltas between busy_start and busy_stop. */
  async busy_start() {
    live.busy = { at: Date.now(), m: await metrics(live.cdp) };
    return { ok: true };
  },
  async busy_stop() {
    const end = await metrics(live.cdp);
    const wall = (Date.now() - live.busy.at) / 1000;
    const delta = (name) => (end[name] ?? 0) - (live.busy.m[name] ?? 0);
    const out = {
      wall_s: wall,
      task_s: delta('TaskDuration'),
      script_s: delta('ScriptDuration'),
      layout_s: delta('LayoutDuration'),
      style_s: delta('RecalcStyleDuration'),
      busy_fraction: delta('TaskDuration') / wall,
      js_heap_used_mb: (end.JSHeapUsedSize ?? 0) / 1048576,
      nodes: end.Nodes ?? null
    };
    live.busy = null;
    return out;
  },

  async close() {
    if (live) await live.context.close();
    live = null;
    return { ok: true };
  },

  async quit() {
    if (live) await live.context.close().catch(() => {});
    if (browser) await browser.close();
    browser = null;
    return { ok: true };
  }
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
    const handler = handlers[request.cmd];
    if (!handler) throw new Error(`unknown command ${request.cmd}`);
    const result = await handler(request);
    process.stdout.write(JSON.stringify({ ok: true, result }) + '\n');
    if (request.cmd === 'quit') break;
  } catch (error) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }) + '\n');
  }
}
if (browser) await browser.close().catch(() => {});
process.exit(0);
