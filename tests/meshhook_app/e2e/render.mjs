// Signs in through the app's /login form and renders /metrics in Debian's Chromium (playwright-core from
// dashboard/node_modules). Prints one JSON object: what the page showed. Used by tests/dashboard/test_meshhook_app.py.
//
//   APP_URL=http://localhost:3000 EMAIL=… PASSWORD=… [PROJECT_ID=…] [SCREENSHOT=out.png] [CHROMIUM=/usr/bin/chromium] \
//     node tests/meshhook_app/e2e/render.mjs
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../../../dashboard/e2e/chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', '..', 'dashboard', 'package.json'));
const { chromium } = require('playwright-core');

const APP_URL = process.env.APP_URL ?? 'http://localhost:3000';
const TIMEOUT = Number(process.env.TIMEOUT_MS ?? 30000);

const result = { ok: false, steps: [], console: [], pageErrors: [], failedRequests: [] };
const profile = mkdtempSync(join(tmpdir(), 'meshhook-app-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless=new', ...CHROMIUM_ARGS]
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.pageErrors.push(String(e?.stack ?? e)));
  page.on('requestfailed', (r) => result.failedRequests.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) result.failedRequests.push(`${r.request().method()} ${r.url()} -> ${r.status()}`);
  });

  // 1. /metrics without a session goes to the sign-in form
  await page.goto(`${APP_URL}/metrics`);
  result.redirectedToLogin = new URL(page.url()).pathname === '/login';
  result.steps.push('redirect');

  // 2. sign in with the form (a form action on the server: cookies set by @supabase/ssr). Hydration sets the
  // email field's value from the page's props, so text typed before the app's scripts ran would be cleared and
  // the form, its required email empty, would not submit: type once the page is idle (hydrated)
  await page.waitForLoadState('networkidle');
  await page.getByLabel('Email').fill(process.env.EMAIL ?? '');
  await page.getByLabel('Password').fill(process.env.PASSWORD ?? '');
  await Promise.all([page.waitForURL((u) => u.pathname === '/metrics'), page.getByRole('button', { name: 'Sign in' }).click()]);
  result.steps.push('signed-in');

  // 3. the nav entry
  result.navHref = await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Metrics' }).getAttribute('href');

  // 4. the dashboard: panels (figure + figcaption), the badge reaching Live, the alerts list
  const throughput = page.locator('figure', { has: page.locator('figcaption', { hasText: 'Webhook throughput' }) });
  await throughput.first().waitFor({ state: 'visible' });
  result.steps.push('panel');
  result.figcaptions = await page.locator('figure figcaption').allInnerTexts();
  result.figureCount = await page.locator('figure').count();

  const badge = page.locator('.mh-badge');
  await page.waitForFunction(() => /Live/.test(document.querySelector('.mh-badge')?.textContent ?? ''), null, {
    timeout: TIMEOUT
  });
  result.badge = (await badge.innerText()).replace(/\s+/g, ' ').trim();
  result.steps.push('live');

  // a chart canvas drawn by uPlot inside the throughput panel
  result.throughputCanvas = await throughput.first().locator('canvas').count();
  result.alertsText = (await page.locator('body').innerText()).match(/Active|alerts?/i)?.[0] ?? null;
  result.bodyText = (await page.locator('main').innerText()).slice(0, 2000);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  result.ok = true;
} catch (error) {
  result.error = String(error?.stack ?? error);
  try {
    const page = context?.pages()[0];
    if (page) {
      result.url = page.url();
      result.bodyText = (await page.locator('body').innerText()).slice(0, 2000);
      if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    }
  } catch {}
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
