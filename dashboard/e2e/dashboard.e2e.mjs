/**
 * The standalone dashboard page in Chromium against a whole local stack (started by
 * tests/dashboard/test_e2e.py, which sets the environment read by helpers.mjs). One background worker
 * (`feed`) records MeshHook-like traffic for the whole file; each test opens its own browser context.
 *
 *   node --test --test-concurrency=1 e2e/dashboard.e2e.mjs
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN,
  ADMIN_PROJECT,
  OTHER_PROJECT,
  SCREENSHOT,
  TOKEN_LIFETIME,
  VIEWER,
  badge,
  column,
  control,
  dataTable,
  launch,
  newPage,
  panel,
  record,
  signIn,
  startFeed,
  unique,
  until,
  waitLive
} from './helpers.mjs';

const QUEUES = 'Queue messages';
/** Each test at most 100 s (the whole file's limit is --test-timeout, 300 s in test_e2e.py). */
const LIMIT = { timeout: 100_000 };
/** @type {import('playwright-core').Browser} */
let browser;
/** @type {ReturnType<typeof startFeed>} */
let feed;
const FEED_QUEUE = unique('feed');

/**
 * Wait until the panel's data table shows `value` in the column of the series whose header has `label`.
 * @param {import('playwright-core').Page} page
 */
async function seeInTable(page, title, label, value, timeout = 8_000) {
  const read = await dataTable(page, title);
  return until(
    async () => {
      const table = await read();
      const c = column(table, label);
      return c >= 0 && table.rows.some((row) => row.cells[c] === value) ? table : null;
    },
    { timeout, message: `${value} for ${label} in the table of ${title}` }
  );
}

before(async () => {
  browser = await launch();
  feed = startFeed({ queue: FEED_QUEUE, interval: 1 });
  await until(async () => feed.ticks.length > 0, { timeout: 20_000, message: 'the feed worker to tick' });
});

after(async () => {
  await feed?.stop();
  await browser?.close();
});

describe('dashboard', () => {
  test('the admin signs in and a value recorded through MetricsClient appears live', LIMIT, async () => {
    const { context, page, errors } = await newPage(browser);
    try {
      await signIn(page, ADMIN);
      await waitLive(page);
      // figures with captions: every panel of the default dashboard
      const figures = page.getByRole('figure');
      assert.ok((await figures.count()) >= 10, 'the default dashboard has its panels');
      for (const title of ['Webhooks', 'Webhook throughput by outcome', QUEUES, 'Largest ready queue']) {
        assert.equal(await panel(page, title).locator('figcaption').first().textContent().then((t) => t?.includes(title)), true, title);
      }
      const queue = unique('q');
      const value = 421; // fixed: the label is what is unique (and the screenshot stays alike)
      await dataTable(page, QUEUES); // open the table before recording
      const recordedAt = Date.now();
      await record({ metric: 'meshhook_queue_messages', labels: { queue, state: 'ready' }, value });
      await seeInTable(page, QUEUES, `queue=${queue}`, String(value), 5_000); // no reload
      const latency = Date.now() - recordedAt;
      assert.ok(latency < 5_000, `live within seconds (${latency} ms)`);
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } finally {
      await context.close();
    }
  });

  test("the viewer of another project sees none of this project's data (page, HTTP, WebSocket)", LIMIT, async (t) => {
    const marker = unique('secret');
    const value = 587;
    const admin = await newPage(browser);
    const viewer = await newPage(browser);
    /** @type {Array<{url: string, status: number, body: string}>} */
    const bodies = [];
    /** @type {string[]} */
    const frames = [];
    viewer.page.on('response', async (response) => {
      try {
        bodies.push({ url: response.url(), status: response.status(), body: await response.text() });
      } catch {
        /* redirects and aborted requests have no body */
      }
    });
    viewer.page.on('websocket', (ws) => {
      frames.push(`open ${ws.url()}`);
      ws.on('framereceived', (f) => frames.push(String(f.payload)));
      ws.on('framesent', (f) => frames.push(String(f.payload)));
    });
    try {
      await signIn(admin.page, ADMIN);
      await waitLive(admin.page);
      // the viewer even asks for the admin's project in the URL
      await signIn(viewer.page, VIEWER, `?project=${ADMIN_PROJECT}`);
      await waitLive(viewer.page);
      const picker = viewer.page.getByRole('combobox', { name: 'Project', exact: true });
      const options = await picker.locator('option').evaluateAll((os) => os.map((o) => /** @type {HTMLOptionElement} */ (o).value));
      assert.deepEqual(options, [OTHER_PROJECT], 'the picker lists only the viewer’s project');
      assert.equal(await picker.inputValue(), OTHER_PROJECT);
      assert.ok(!viewer.page.url().includes(ADMIN_PROJECT), 'the URL falls back to the viewer’s project');
      assert.equal(await viewer.page.getByRole('button', { name: 'Edit dashboard' }).count(), 0, 'viewers cannot edit');

      await record({ metric: 'meshhook_queue_messages', labels: { queue: marker, state: 'ready' }, value });
      await seeInTable(admin.page, QUEUES, marker, String(value)); // the admin's page has it: it was broadcast
      // the viewer's page had the same time to receive it; a rollup of its own project proves its socket works
      const read = await dataTable(viewer.page, QUEUES);
      await record({ metric: 'meshhook_queue_messages', labels: { queue: 'viewer-own', state: 'ready' }, value: 7, project: OTHER_PROJECT });
      await until(async () => column(await read(), 'viewer-own') >= 0, { timeout: 8_000, message: 'the viewer’s own data' });

      const text = await viewer.page.locator('body').innerText();
      for (const secret of [marker, FEED_QUEUE, ADMIN_PROJECT]) {
        assert.ok(!text.includes(secret), `page text has ${secret}`);
        // a request that itself names the admin's project (the page took it from the URL the test forged) may
        // be refused with that id echoed: that is the viewer's own input, not a leak; anything else is
        const body = bodies.find((b) => b.body.includes(secret) && !(secret === ADMIN_PROJECT && b.url.includes(secret) && b.status >= 400));
        assert.equal(body, undefined, `an HTTP response to the viewer contains ${secret}: ${JSON.stringify(body)?.slice(0, 400)}`);
        const frame = frames.find((f) => f.includes(secret));
        assert.equal(frame, undefined, `a WebSocket frame of the viewer contains ${secret}: ${frame?.slice(0, 300)}`);
      }
      assert.ok(frames.some((f) => f.startsWith('open ')), 'the viewer’s page did open a Realtime socket');
      assert.ok(frames.some((f) => f.includes(OTHER_PROJECT)), 'and joined its own project’s topic');
      assert.ok(bodies.length > 5, 'responses were recorded');
      for (const b of bodies.filter((x) => x.url.includes(ADMIN_PROJECT) && !x.url.includes('?project='))) {
        t.diagnostic(`the viewer's page asked for the admin's project: ${b.status} ${b.url}`);
      }
    } finally {
      await admin.context.close();
      await viewer.context.close();
    }
  });

  test('a gateway restart: the badge leaves Live and returns, and the spooled minutes fill the gap', { timeout: 150_000 }, async (t) => {
    const { context, page } = await newPage(browser);
    try {
      await signIn(page, ADMIN, '?last=15m');
      await waitLive(page);
      // The outage must contain the end of a minute, so that minute's last value was recorded while the
      // gateway was down and reaches the page only through the worker's spool and replay. It stays shorter
      // than the access-token lifetime: after a longer one the page stays offline (and its API calls answer 401)
      // for about a minute, until auth-js leaves its refresh-failure cooldown (a known bug of the page).
      const LEAD = 5; // the gateway goes down 5 s before a minute ends and stays down 10 s
      const toBoundary = 60 - ((Date.now() / 1000) % 60);
      await new Promise((r) => setTimeout(r, ((toBoundary - LEAD + 60) % 60) * 1000)); // align with the clock
      const down = Math.min(LEAD * 2, TOKEN_LIFETIME / 2);
      /** @type {string[]} */
      const seen = [];
      const watching = setInterval(async () => {
        const text = await badge(page).textContent().catch(() => null);
        if (text && seen[seen.length - 1] !== text) seen.push(text);
      }, 100);
      const restart = await control(['restart-gateway', '--down', down.toFixed(1)], 120_000);
      await until(async () => seen.some((s) => !s.startsWith('Live')), { timeout: 5_000, message: 'the badge to leave Live' });
      await waitLive(page, 30_000);
      clearInterval(watching);
      assert.ok(seen.some((s) => /Reconnecting|Offline|Connecting/.test(s)), `badge states: ${seen.join(' → ')}`);

      // every whole minute since the feed began: the table's value is the last tick recorded in that minute.
      // A minute whose ticks all fell in its last 2 s (the feed's first, if it began then) may hold no point:
      // its values were flushed, and stamped, in the next minute.
      const ticksByMinute = () => {
        /** @type {Map<number, number>} */
        const last = new Map();
        /** @type {Map<number, number>} */
        const first = new Map();
        for (const { tick, at } of feed.ticks) {
          const m = Math.floor(at / 60) * 60;
          last.set(m, tick);
          if (!first.has(m)) first.set(m, at);
        }
        return new Map([...last].filter(([m]) => /** @type {number} */ (first.get(m)) < m + 58));
      };
      const outageMinute = Math.floor(restart.stopped_at / 60) * 60;
      assert.ok(Math.floor(restart.started_at / 60) * 60 > outageMinute, `the outage contains a minute's end: ${JSON.stringify(restart)}`);
      const read = await dataTable(page, QUEUES);
      /** @type {any} */
      let problems = null;
      await until(
        async () => {
          const table = await read();
          const c = column(table, `queue=${FEED_QUEUE}`);
          if (c < 0) return false;
          const byTime = new Map(table.rows.map((row) => [row.t, row.cells[c]]));
          const minutes = [...ticksByMinute()].filter(([m]) => m + 60 <= Date.now() / 1000 - 2); // settled minutes
          // a value set in a minute's last second may be flushed (and stamped) in the next one: 2 ticks of slack,
          // while the last value before the outage is at least 4 ticks older than the minute's end
          problems = minutes.filter(([m, tick]) => !(Number(byTime.get(m)) >= tick - 2 && Number(byTime.get(m)) <= tick)).map(([m, tick]) => ({ minute: new Date(m * 1000).toISOString(), want: tick, got: byTime.get(m) }));
          const ok = minutes.some(([m]) => m === outageMinute) && problems.length === 0;
          if (ok) t.diagnostic(`badge: ${seen.join(' → ')}; minutes checked: ${minutes.map(([m, k]) => `${new Date(m * 1000).toISOString().slice(11, 16)}=${byTime.get(m)}/${k}`).join(' ')}`);
          return ok;
        },
        { timeout: 20_000, message: 'every minute of the feed, the outage’s included, in the table' }
      ).catch((error) => {
        throw new Error(`${error.message}\nmismatches: ${JSON.stringify(problems)}`);
      });
    } finally {
      await context.close();
    }
  });

  test('an access token that expires during the test is refreshed and the page stays live', LIMIT, async () => {
    assert.ok(TOKEN_LIFETIME <= 60, `the stack runs with a short token lifetime (${TOKEN_LIFETIME} s)`);
    const { context, page, errors } = await newPage(browser);
    const session = () =>
      page.evaluate(() => {
        const key = Object.keys(localStorage).find((k) => k.startsWith('sb-') && k.endsWith('-auth-token'));
        const s = key ? JSON.parse(localStorage.getItem(key) ?? 'null') : null;
        return s ? { token: s.access_token, expiresAt: s.expires_at } : null;
      });
    try {
      await signIn(page, ADMIN);
      await waitLive(page);
      const first = await session();
      assert.ok(first, 'a session is stored');
      const queue = unique('refresh');
      await record({ metric: 'meshhook_queue_messages', labels: { queue, state: 'ready' }, value: 1 });
      await seeInTable(page, QUEUES, queue, '1');
      // wait past the first token's expiry (a condition on the clock), then the page must still be live
      await until(async () => Date.now() / 1000 > first.expiresAt + 5, { timeout: (TOKEN_LIFETIME + 10) * 1000, interval: 500, message: 'the first token to expire' });
      const now = await session();
      assert.ok(now && now.token !== first.token && now.expiresAt > Date.now() / 1000, 'the session was refreshed');
      await record({ metric: 'meshhook_queue_messages', labels: { queue, state: 'ready' }, value: 2 });
      await seeInTable(page, QUEUES, queue, '2', 6_000);
      assert.match((await badge(page).textContent()) ?? '', /^Live/);
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } finally {
      await context.close();
    }
  });

  test('rule editor: a bad threshold is shown at the field; a good rule saves and persists', LIMIT, async () => {
    const { context, page } = await newPage(browser);
    try {
      await signIn(page, ADMIN);
      await page.getByRole('navigation', { name: 'Views' }).getByRole('button', { name: 'Alert rules' }).click();
      await page.getByRole('button', { name: 'New rule' }).click();
      const form = page.getByRole('form', { name: 'New alert rule' });
      const name = unique('rule');
      await form.getByLabel('Name', { exact: true }).fill(name);
      await form.getByLabel('Metric', { exact: true }).fill('meshhook_queue_messages');
      await form.getByLabel('Aggregation', { exact: true }).fill('max');
      await form.getByLabel('Window', { exact: true }).fill('1m');
      const threshold = form.getByLabel('Threshold', { exact: true });
      await threshold.fill('');
      const answer = page.waitForResponse((r) => r.url().includes('/api/metrics/alerts') && r.request().method() === 'POST');
      await form.getByRole('button', { name: /^(Create rule|Save)/ }).click();
      assert.equal((await answer).status(), 422);
      await until(async () => (await threshold.getAttribute('aria-invalid')) === 'true', { message: 'the threshold to be marked invalid' });
      const describedBy = await threshold.getAttribute('aria-describedby');
      const message = page.locator(`[id="${describedBy}"]`);
      await message.waitFor();
      assert.ok(((await message.textContent()) ?? '').trim().length > 0, 'the error text is next to the threshold');
      // the message sits in the threshold's own cell of the form
      const cell = threshold.locator('xpath=ancestor::*[contains(@class,"mh-cell")][1]');
      assert.equal(await cell.locator(`[id="${describedBy}"]`).count(), 1);

      await threshold.fill('1000');
      const saved = page.waitForResponse((r) => r.url().includes('/api/metrics/alerts') && r.request().method() === 'POST');
      await form.getByRole('button', { name: /^(Create rule|Save)/ }).click();
      assert.equal((await saved).status(), 201);
      const row = page.getByRole('row').filter({ hasText: name });
      await row.waitFor({ timeout: 10_000 });
      await page.reload();
      await page.getByRole('heading', { name: 'Alert rules' }).waitFor({ timeout: 15_000 });
      await row.waitFor({ timeout: 10_000 });
      assert.match((await row.textContent()) ?? '', /max\(meshhook_queue_messages\) > 1000/);
    } finally {
      await context.close();
    }
  });

  test('a firing alert appears live in the Alerts view', LIMIT, async () => {
    const { context, page } = await newPage(browser);
    try {
      await signIn(page, ADMIN, '?view=alerts');
      await page.getByRole('heading', { name: 'Alerts', level: 2 }).waitFor({ timeout: 15_000 });
      const queue = unique('alert');
      const name = unique('fires');
      await control([
        'rule', '--project', ADMIN_PROJECT, '--body',
        JSON.stringify({
          name, metric: 'meshhook_queue_messages', agg: 'max', window: '1m', op: '>', threshold: 0, for_duration: '0s',
          matchers: [{ label: 'queue', op: '=', value: queue }]
        })
      ]);
      const recordedAt = Date.now();
      await record({ metric: 'meshhook_queue_messages', labels: { queue, state: 'ready' }, value: 5 });
      const item = page.getByRole('list', { name: 'Active alerts' }).getByRole('listitem').filter({ hasText: name });
      await item.waitFor({ timeout: 15_000 }); // no reload
      assert.match((await item.textContent()) ?? '', /Firing/);
      assert.ok(Date.now() - recordedAt < 15_000);
    } finally {
      await context.close();
    }
  });

  test('keyboard only: Tab reaches every control of the dashboard view, and nothing traps focus', LIMIT, async (t) => {
    const { context, page } = await newPage(browser);
    try {
      await signIn(page, ADMIN);
      await waitLive(page);
      await page.getByRole('figure', { name: QUEUES }).getByRole('button', { name: 'Show data table' }).waitFor();
      // every visible interactive element, named by what a user perceives: its panel, kind and accessible name
      // (not by node identity: a panel may re-render while we press Tab)
      const controls = () =>
        page.evaluate(() => {
          const selector = 'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])';
          /** @param {Element} el */
          const key = (el) => {
            const figure = el.closest('figure');
            const where = figure ? `${figure.querySelector('figcaption')?.textContent?.trim().slice(0, 40)}` : 'page';
            const name = el.getAttribute('aria-label') ?? (el.labels?.[0]?.textContent ?? el.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 40);
            return `${where} | ${el.tagName.toLowerCase()} | ${name}`;
          };
          /** @type {any} */ (window).__e2eKey = key;
          return [...document.querySelectorAll(selector)]
            .filter((el) => {
              const box = el.getBoundingClientRect();
              return box.width > 0 && box.height > 0 && getComputedStyle(el).visibility !== 'hidden' && !(/** @type {any} */ (el).disabled) && !el.closest('[inert]');
            })
            .map(key);
        });
      const before = await controls();
      assert.ok(before.length > 15, `interactive elements found: ${before.length}`);
      await page.evaluate(() => /** @type {any} */ (document.activeElement)?.blur?.());
      await page.mouse.click(2, 2); // the page's top, nothing focused
      /** @type {string[]} */
      const order = [];
      for (let i = 0; i < before.length * 3 + 10; i++) {
        await page.keyboard.press('Tab');
        order.push(await page.evaluate(() => (document.activeElement && document.activeElement !== document.body ? /** @type {any} */ (window).__e2eKey(document.activeElement) : 'body')));
        if (order.length > before.length && order[order.length - 1] === order.find((k) => k !== 'body')) break; // wrapped around
      }
      const after = await controls();
      const expected = before.filter((k) => after.includes(k)); // present before and after the walk
      const reached = new Set(order);
      t.diagnostic(`${before.length} controls, ${order.length} Tab presses`);
      const missing = expected.filter((k) => !reached.has(k));
      assert.deepEqual(missing, [], `not reachable by Tab: ${JSON.stringify(missing)}`);
      // no trap: the cycle came back to the first control after visiting every one
      const first = order.find((k) => k !== 'body');
      assert.ok(order.lastIndexOf(first) > order.indexOf(first), `focus never cycled back: ${order.slice(-10).join(' || ')}`);
    } finally {
      await context.close();
    }
  });

  test('screenshot of the admin’s dashboard with live data (docs/img/dashboard.png)', { ...LIMIT, skip: !SCREENSHOT }, async () => {
    const { context, page } = await newPage(browser, { width: 1400, height: 1000 });
    try {
      await signIn(page, ADMIN, '?last=15m');
      await waitLive(page);
      // the feed's data is drawn: its series is in the queue panel's legend, the throughput panel has data
      await panel(page, QUEUES).getByRole('button', { name: `queue=${FEED_QUEUE}, state=ready` }).waitFor({ timeout: 10_000 });
      await panel(page, 'Webhook throughput by outcome').getByRole('list', { name: 'Series' }).waitFor({ timeout: 10_000 });
      await page.mouse.move(0, 0);
      await mkdir(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, animations: 'disabled' });
    } finally {
      await context.close();
    }
  });
});
