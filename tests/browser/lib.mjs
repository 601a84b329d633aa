// Shared by dashboard.test.mjs and screenshot.mjs: launch Debian's chromium through
// playwright-core and open the dashboard of the portier that run.sh started.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const ADMIN = need('PORTIER_ADMIN'); // http://127.0.0.1:<admin port>/
export const PREFIXED = need('PORTIER_PREFIXED'); // https://127.0.0.1:<https port>/portier/
export const MANIFESTS = process.env.PORTIER_MANIFESTS || ''; // the folder portier watches
export const DASHBOARD_FILE = new URL('../../src/admin/dashboard.html', import.meta.url);
export const DASHBOARD_HTML = readFileSync(DASHBOARD_FILE, 'utf8');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return v;
}

/** GET with node's fetch (plain http: the admin address). */
export async function probe(url) {
  try {
    const res = await fetch(url, { cache: 'no-store' });
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: 0, text: String(e) };
  }
}

/**
 * GET over https to portier's https entry (self-signed here), with the given Host and SNI.
 * Resolves to the status code; never rejects.
 */
export function httpsGet(url, host) {
  const u = new URL(url);
  return new Promise((resolve) => {
    const req = https.get(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        servername: host || undefined,
        headers: host ? { host } : {},
        rejectUnauthorized: false,
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
        res.on('error', () => resolve(0));
      },
    );
    req.setTimeout(10_000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/**
 * Some traffic through the https entry, so counters and backend errors have something to show:
 * the admin through /portier, a 404, the unavailable grafana route (503), and the shop routes,
 * whose backend port refuses connections (502).
 */
export async function sendTraffic() {
  const base = new URL(PREFIXED).origin;
  const gets = [
    httpsGet(PREFIXED + 'healthz'),
    httpsGet(PREFIXED + 'api/version'),
    httpsGet(base + '/nowhere'),
    httpsGet(base + '/grafana/'),
  ];
  for (const path of ['/', '/cart', '/healthz']) gets.push(httpsGet(base + path, 'shop.example.com'));
  return Promise.all(gets);
}

/**
 * What GET / on the admin address serves: 'file' when it is src/admin/dashboard.html byte for
 * byte, 'stale' when it is a dashboard but another version (binary older than the file), 'other'
 * when portier does not serve the dashboard yet.
 */
export async function servedIndex() {
  const r = await probe(ADMIN);
  if (r.text === DASHBOARD_HTML) return 'file';
  if (r.text.includes('id="routes-table"')) return 'stale';
  return 'other';
}

export async function launch() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'portier-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    ignoreHTTPSErrors: true,
    viewport: { width: 1400, height: 900 },
    timeout: 60_000,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Opens the dashboard at `url` in a new page and waits for its first refresh. Console errors and
 * page errors are collected in `errors`, every request URL in `requests`. With `fromFile`, the
 * document itself is answered with src/admin/dashboard.html (for a portier that does not serve
 * it yet); everything the page fetches still goes to the real portier.
 */
export async function openDashboard(context, url, { fromFile = false, colorScheme = 'light' } = {}) {
  const page = await context.newPage();
  await page.emulateMedia({ colorScheme });
  const errors = [];
  const requests = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push({ text: m.text(), url: m.location().url || '' });
  });
  page.on('pageerror', (e) => errors.push({ text: String(e && e.stack || e), url: '' }));
  page.on('request', (r) => requests.push(r.url()));
  if (fromFile) {
    const doc = new URL(url);
    await page.route((u) => u.origin === doc.origin && u.pathname === doc.pathname, (route) =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: DASHBOARD_HTML }),
    );
  }
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });
  return { page, errors, requests };
}

/** Waits until the page has refreshed `n` more times. */
export async function refreshes(page, n = 1) {
  const start = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.waitForFunction((want) => Number(document.body.dataset.refreshes) >= want, start + n, { timeout: 20_000 });
}
