/**
 * Shared pieces of the browser tests: the stack's settings (from tests/dashboard/test_e2e.py), Chromium,
 * sign-in through the page's form, the Python control CLI (tests/dashboard/e2e_control.py), and readers of
 * what the page shows (connection badge, a panel's data table). Selectors use roles, labels and text only.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium.mjs';

/** @param {string} name */
function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/dashboard/test_e2e.py`);
  return value;
}

export const DASHBOARD_URL = required('DASHBOARD_URL');
export const REPO = required('E2E_REPO');
export const PYTHON = required('E2E_PYTHON');
export const ADMIN_PROJECT = required('E2E_ADMIN_PROJECT');
export const OTHER_PROJECT = required('E2E_OTHER_PROJECT');
export const TOKEN_LIFETIME = Number(process.env.MESHHOOK_METRICS_GATEWAY_ACCESS_TOKEN_LIFETIME ?? 3600);
export const SCREENSHOT = process.env.E2E_SCREENSHOT ?? '';
export const ADMIN = { email: 'admin@demo.meshhook.local', password: 'demo-admin-password' };
export const VIEWER = { email: 'viewer@other.meshhook.local', password: 'demo-viewer-password' };

/** A short unique token for label values and names. */
export const unique = (prefix = 'e2e') => `${prefix}-${randomBytes(4).toString('hex')}`;

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
}

/**
 * A fresh context and page; page errors are collected (tests assert none happened where it matters).
 * @param {import('playwright-core').Browser} browser
 */
export async function newPage(browser, { width = 1400, height = 1000 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme: 'light', locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error?.stack ?? error)));
  return { context, page, errors };
}

/**
 * Sign in through the page's form and wait for the signed-in header.
 * @param {import('playwright-core').Page} page @param {{email: string, password: string}} who
 */
export async function signIn(page, who, search = '') {
  await page.goto(DASHBOARD_URL + search);
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor({ timeout: 15_000 });
}

/** The ConnectionBadge's live region ("Live", "Live (stale)", "Reconnecting…", …). */
export const badge = (/** @type {import('playwright-core').Page} */ page) =>
  page.getByRole('status').filter({ hasText: /^(Live|Reconnecting…|Connecting…|Offline)/ });

/** @param {import('playwright-core').Page} page */
export async function waitLive(page, timeout = 20_000) {
  await badge(page).filter({ hasText: /^Live/ }).waitFor({ timeout });
}

/**
 * Poll `fn` until it returns a truthy value; fail with `message` (and the last value) after `timeout` ms.
 * @template T @param {() => Promise<T>} fn @returns {Promise<T>}
 */
export async function until(fn, { timeout = 10_000, interval = 200, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A panel (figure) by its caption. @param {import('playwright-core').Page} page @param {string} title */
export const panel = (page, title) => page.getByRole('figure', { name: title, exact: true });

/**
 * Open a panel's data table ("Show data table") and return a reader of it: headers and rows
 * (newest first) as text, each row with its step start (epoch s) from the row's <time datetime>.
 * @param {import('playwright-core').Page} page @param {string} title
 */
export async function dataTable(page, title) {
  const figure = panel(page, title);
  const show = figure.getByRole('button', { name: 'Show data table' });
  const table = figure.getByRole('table');
  // a panel still loading offers neither yet: asked at once, the button was not there and was never clicked
  await show.or(table).first().waitFor({ timeout: 10_000 });
  if (await show.count()) await show.click();
  await table.waitFor({ timeout: 10_000 });
  return async () =>
    table.evaluate((t) => ({
      headers: [...t.querySelectorAll('thead th')].map((th) => th.textContent?.trim() ?? ''),
      rows: [...t.querySelectorAll('tbody tr')].map((tr) => {
        const time = tr.querySelector('time')?.getAttribute('datetime');
        return {
          t: time ? Date.parse(time) / 1000 : null,
          partial: tr.textContent?.includes('(in progress)') ?? false,
          cells: [...tr.querySelectorAll('td')].map((td) => td.textContent?.trim() ?? '')
        };
      })
    }));
}

/** The column of a series in a table read by `dataTable` (header contains `text`), or -1. */
export function column(/** @type {{headers: string[]}} */ table, /** @type {string} */ text) {
  const i = table.headers.findIndex((h) => h.includes(text));
  return i < 0 ? -1 : i - 1; // cells exclude the row header (Time)
}

/**
 * Run tests/dashboard/e2e_control.py; resolves with its JSON answer.
 * @param {string[]} args @returns {Promise<any>}
 */
export function control(args, timeout = 90_000) {
  return new Promise((resolve, reject) => {
    execFile(PYTHON, ['-m', 'tests.dashboard.e2e_control', ...args], { cwd: REPO, timeout, env: process.env }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`e2e_control ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      const lines = stdout.trim().split('\n');
      resolve(JSON.parse(lines[lines.length - 1]));
    });
  });
}

/** Record one value through MetricsClient (flushed when this resolves). */
export function record({ metric, labels, value, kind = 'gauge', project = ADMIN_PROJECT }) {
  const text = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');
  return control(['record', '--project', project, '--metric', metric, '--kind', kind, '--labels', text, '--value', String(value)]);
}

/**
 * A background worker (e2e_control feed): ticks every `interval` s; `ticks` collects {tick, at} lines.
 * @returns {{ticks: Array<{tick: number, at: number}>, stop: () => Promise<void>}}
 */
export function startFeed({ queue, interval = 1, project = ADMIN_PROJECT }) {
  const child = spawn(
    PYTHON,
    ['-m', 'tests.dashboard.e2e_control', 'feed', '--project', project, '--queue', queue, '--interval', String(interval)],
    { cwd: REPO, env: process.env, stdio: ['ignore', 'pipe', 'inherit'] }
  );
  /** @type {Array<{tick: number, at: number}>} */
  const ticks = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line);
    if (msg.tick) ticks.push(msg);
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    ticks,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    }
  };
}
