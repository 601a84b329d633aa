// The admin dashboard (src/admin/dashboard.html) in a real headless chromium, against a running
// portier started by run.sh over the manifests it writes (see run.sh for the routes expected here).
//
//   bash tests/browser/run.sh
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import {
  ADMIN,
  MANIFESTS,
  PREFIXED,
  httpsGet,
  launch,
  openDashboard,
  probe,
  refreshes,
  sendTraffic,
  servedIndex,
} from './lib.mjs';

const FAST = '?refresh=400';
const EXPECTED_ROUTES = [
  'default/api#0.0',
  'default/portier-admin#0.0',
  'monitoring/grafana#0.0',
  'shop/shop#0.0',
  'shop/shop#0.1',
];

let browser;
let served; // 'file' | 'stale' | 'other'

before(async () => {
  const statuses = await sendTraffic();
  assert.deepEqual(statuses.slice(0, 2), [200, 200], 'portier answers through /portier');
  served = await servedIndex();
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** Console errors and uncaught page errors, as text (none are tolerated). */
const errorTexts = (errors) => errors.map((e) => `${e.text}${e.url ? ` (${e.url})` : ''}`);

async function open(url) {
  return openDashboard(browser.context, url);
}

async function routeIds(page) {
  return page.$$eval('#routes-table tbody tr[data-route-id]', (rows) => rows.map((r) => r.dataset.routeId).sort());
}

async function visibleRouteIds(page) {
  return page.$$eval('#routes-table tbody tr[data-route-id]:not([hidden])', (rows) =>
    rows.map((r) => r.dataset.routeId).sort(),
  );
}

const rowText = (page, id) => page.textContent(`#routes-table tr[data-route-id="${id}"]`);

test('admin / serves src/admin/dashboard.html', () => {
  assert.equal(served, 'file', 'GET / on the admin address is not src/admin/dashboard.html byte for byte (stale build?)');
});

test('loads and refreshes with no console errors', async () => {
  const { page, errors } = await open(ADMIN + FAST);
  await refreshes(page, 2);
  assert.deepEqual(errorTexts(errors), [], 'console errors or page errors');
  assert.match(await page.textContent('#version'), /^v\d+\.\d+/);
  assert.match(await page.textContent('#generation'), /^\d+$/);
  assert.match(await page.textContent('#live-text'), /^live ·/);
  assert.equal(await page.isHidden('#banner'), true);
  await page.close();
});

test('shows the routes table with the expected rows', async () => {
  const { page } = await open(ADMIN);
  assert.deepEqual(await routeIds(page), EXPECTED_ROUTES);
  const headers = await page.$$eval('#routes-table thead th', (ths) => ths.map((th) => th.textContent.trim()));
  for (const h of ['Host', 'Path', 'Match', 'Rule type', 'Strip / rewrite', 'Backend', 'Scheme', 'TLS']) {
    assert.ok(headers.includes(h), `column ${h} in ${headers}`);
  }
  const grafana = await rowText(page, 'monitoring/grafana#0.0');
  assert.match(grafana, /any host/);
  assert.match(grafana, /\/grafana/);
  assert.match(grafana, /PathPrefixStrip/);
  assert.match(grafana, /strip \/grafana/);
  assert.match(grafana, /Service monitoring\/grafana not found/);
  const api = await rowText(page, 'default/api#0.0');
  assert.match(api, /api\.example\.com/);
  assert.match(api, /\/v1 → \/api/);
  const shopExact = await rowText(page, 'shop/shop#0.1');
  assert.match(shopExact, /shop\.example\.com/);
  assert.match(shopExact, /Exact/);
  assert.match(shopExact, /shop\/shop-tls/);
  assert.match(shopExact, /shop\/shop:80/);
  assert.match(await page.textContent('#routes-count'), /^5 routes$/);
  await page.close();
});

test('the search box filters routes as one types', async () => {
  const { page } = await open(ADMIN);
  const search = page.getByLabel('Filter routes');
  await search.fill('shop');
  assert.deepEqual(await visibleRouteIds(page), ['shop/shop#0.0', 'shop/shop#0.1']);
  assert.match(await page.textContent('#routes-count'), /^2 of 5 routes shown$/);
  await search.fill('shop exact');
  assert.deepEqual(await visibleRouteIds(page), ['shop/shop#0.1']);
  await search.fill('PATHPREFIXSTRIP');
  assert.deepEqual(await visibleRouteIds(page), ['default/portier-admin#0.0', 'monitoring/grafana#0.0']);
  await search.fill('no-such-route-anywhere');
  assert.deepEqual(await visibleRouteIds(page), []);
  assert.match(await page.textContent('#routes-table tbody'), /No route matches “no-such-route-anywhere”/);
  await search.fill('');
  assert.deepEqual(await visibleRouteIds(page), EXPECTED_ROUTES);
  // "/" focuses the search box; the filter survives a refresh.
  await page.locator('body').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('/');
  await page.keyboard.type('grafana');
  assert.deepEqual(await visibleRouteIds(page), ['monitoring/grafana#0.0']);
  await page.close();
});

test('refused Ingresses are shown with the reason', async () => {
  const { page } = await open(ADMIN);
  const regex = page.locator('#warnings-table tr[data-object="Ingress default/legacy-regex"]');
  await regex.waitFor();
  assert.match(await regex.textContent(), /refused/);
  assert.match(await regex.textContent(), /rule-type.*Regex/);
  const auth = await page.textContent('#warnings-table tr[data-object="Ingress default/private"]');
  assert.match(auth, /refused/);
  assert.match(auth, /auth-(type|secret)/);
  const grafana = await page.textContent('#warnings-table tr[data-object="Ingress monitoring/grafana"]');
  assert.match(grafana, /warning/);
  assert.equal(await page.textContent('#card-refused [data-v]'), '2');
  await page.close();
});

test('backends show their health, certificates their days to expiry', async () => {
  const { page } = await open(ADMIN);
  const grafana = page.locator('#backends-table tr[data-backend="monitoring/grafana:3000"]');
  assert.match(await grafana.textContent(), /unavailable/);
  assert.match(await grafana.locator('.badge').first().getAttribute('class'), /\bbad\b/);
  const shop = await page.textContent('#backends-table tr[data-backend="shop/shop:80"]');
  assert.match(shop, /127\.0\.0\.1:\d+/);
  const cert = page.locator('#certificates-table tr[data-secret="shop/shop-tls"]');
  assert.match(await cert.textContent(), /shop\.example\.com/);
  // run.sh makes it valid for 10 days: under 14, so in warning style.
  const days = cert.locator('td.num .badge');
  assert.match(await days.textContent(), /^(9|10) days$/);
  assert.match(await days.getAttribute('class'), /\bwarn\b/);
  await page.close();
});

test('backends show the last error and recent error rate', async () => {
  const backends = JSON.parse((await probe(ADMIN + 'api/backends')).text);
  assert.ok(backends.every((b) => 'lastError' in b && 'errorRate' in b), 'api/backends has lastError and errorRate');
  const { page } = await open(ADMIN);
  const shop = page.locator('#backends-table tr[data-backend="shop/shop:80"]');
  // run.sh sent requests to the shop backend, whose port refuses connections.
  assert.notEqual((await shop.locator('td').nth(4).textContent()).trim(), '—');
  assert.match(await shop.locator('td').nth(5).textContent(), /%|no requests/);
  assert.match(await shop.locator('td').nth(1).textContent(), /failing|errors|failed/);
  // Passive health: the endpoint that refused is listed as failing under the addresses.
  const shopApi = backends.find((b) => b.name === 'shop/shop:80');
  assert.ok(shopApi.failingEndpoints.some((f) => f.address === '127.0.0.1:1' && f.failures >= 1), JSON.stringify(shopApi));
  assert.match(await shop.locator('td').nth(2).textContent(), /127\.0\.0\.1:1 failing/);
  await page.close();
});

test('accessible: no axe-core violations (WCAG 2 A/AA), light and dark', async () => {
  const axe = fileURLToPath(new URL('./node_modules/axe-core/axe.min.js', import.meta.url));
  for (const colorScheme of ['light', 'dark']) {
    const { page } = await openDashboard(browser.context, ADMIN, { colorScheme });
    // Include an explain answer (or the "cannot explain yet" notice) and a filtered table.
    await page.fill('#why-url', 'https://shop.example.com/cart');
    await page.click('#why-submit');
    await page.waitForFunction(() => document.getElementById('why-result').textContent.trim() !== '');
    await page.addScriptTag({ path: axe });
    const violations = await page.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] });
      return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
    });
    assert.deepEqual(violations, [], `${colorScheme}: accessibility violations`);
    await page.close();
  }
});

test('works behind a prefix (PathPrefixStrip /portier)', async () => {
  const { page, errors, requests } = await open(PREFIXED + FAST);
  await refreshes(page, 1);
  assert.deepEqual(await routeIds(page), EXPECTED_ROUTES);
  assert.match(await page.textContent('#warnings-table'), /legacy-regex/);
  assert.deepEqual(errorTexts(errors), []);
  const prefix = new URL(PREFIXED);
  const stray = requests.filter((u) => !u.startsWith('data:') && !new URL(u).pathname.startsWith(prefix.pathname));
  assert.deepEqual(stray, [], 'requests outside the prefix');
  assert.ok(requests.some((u) => u.startsWith(PREFIXED + 'api/routes')), 'api/routes fetched under the prefix');
  const raw = await page.getAttribute('footer a[href$="api/routes"]', 'href');
  assert.equal(new URL(raw, page.url()).href, PREFIXED + 'api/routes');
  await page.close();
});

test('the why form explains a URL', async () => {
  const { page, errors } = await open(ADMIN);
  await page.getByLabel('URL', { exact: true }).fill('https://shop.example.com/cart');
  await page.getByRole('button', { name: 'Explain', exact: true }).click();
  const verdict = page.locator('#why-result [data-verdict]');
  await verdict.waitFor();
  assert.equal(await verdict.getAttribute('data-verdict'), 'ok', await page.textContent('#why-result'));
  assert.match(await page.textContent('#why-result'), /shop\/shop/);

  await page.getByLabel('URL', { exact: true }).fill('nowhere.invalid/x');
  await page.getByRole('button', { name: 'Explain', exact: true }).click();
  await page.waitForFunction(() => !document.getElementById('why-result').textContent.includes('shop/shop'));
  assert.equal(await verdict.getAttribute('data-verdict'), 'bad', await page.textContent('#why-result'));

  // http:// answers a redirect to https, then explains where it leads.
  await page.getByLabel('URL', { exact: true }).fill('http://shop.example.com/cart');
  await page.getByRole('button', { name: 'Explain', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('#why-result [data-verdict]')?.dataset.verdict === 'info');
  const redirect = await page.textContent('#why-result');
  assert.match(redirect, /Redirect 30[178] to https:\/\/shop\.example\.com/);
  assert.match(redirect, /Then, at https:\/\/shop\.example\.com/);
  assert.match(redirect, /shop\/shop#0\.0 forwards it/);

  // A route's path button asks about that route.
  await page.click('#routes-table tr[data-route-id="default/api#0.0"] button[data-explain]');
  await page.waitForFunction(() => document.getElementById('why-url').value === 'https://api.example.com/v1');
  await page.waitForFunction(() => /default\/api/.test(document.getElementById('why-result').textContent));
  assert.equal(await verdict.getAttribute('data-verdict'), 'ok');
  assert.deepEqual(errorTexts(errors), []);
  await page.close();
});

test('live counters update without a reload', async () => {
  const metrics = await probe(ADMIN + 'metrics');
  assert.equal(metrics.status, 200, '/metrics answers');
  assert.match(metrics.text, /^portier_requests_total\{/m);
  const { page, errors } = await open(ADMIN + FAST);
  await page.evaluate(() => { window.__notReloaded = true; });
  const card = '#card-requests [data-v]';
  const cell = '#routes-table tr[data-route-id="default/portier-admin#0.0"] td.num';
  const count = (selector) => Number(document.querySelector(selector).firstChild.textContent.replace(/[^\d]/g, '') || NaN);
  await page.waitForFunction((c) => /\d/.test(document.querySelector(c).textContent), card);
  const before = { card: await page.evaluate(count, card), route: await page.evaluate(count, cell) };
  assert.ok(Number.isFinite(before.card) && Number.isFinite(before.route), JSON.stringify(before));
  // Requests through the https entry: GET /portier/healthz is counted under the portier-admin route.
  for (let i = 0; i < 5; i++) assert.equal(await httpsGet(PREFIXED + 'healthz'), 200);
  await page.waitForFunction(
    ([c, r, b]) => {
      const n = (s) => Number(document.querySelector(s).firstChild.textContent.replace(/[^\d]/g, ''));
      return n(c) >= b.card + 5 && n(r) >= b.route + 5;
    },
    [card, cell, before],
    { timeout: 20_000 },
  );
  assert.equal(await page.evaluate(() => window.__notReloaded), true);
  assert.deepEqual(errorTexts(errors), []);
  await page.close();
});

test('a config swap shows up without a reload', async (t) => {
  if (!MANIFESTS) {
    t.skip('PORTIER_MANIFESTS not set');
    return;
  }
  const { page, errors } = await open(ADMIN + FAST);
  await page.evaluate(() => { window.__notReloaded = true; });
  const generation = Number(await page.textContent('#generation'));
  const file = join(MANIFESTS, 'zz-live-test.yaml');
  writeFileSync(
    file,
    `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: live-test, namespace: default}
spec:
  rules:
  - host: live.example.com
    http:
      paths:
      - path: /live
        pathType: Prefix
        backend: {service: {name: api, port: {number: 80}}}
`,
  );
  try {
    await page.waitForSelector('#routes-table tr[data-route-id="default/live-test#0.0"]', { timeout: 20_000 });
    await page.waitForFunction((g) => Number(document.getElementById('generation').textContent) > g, generation);
    assert.match(await page.textContent('#routes-count'), /^6 routes$/);
  } finally {
    rmSync(file, { force: true });
  }
  await page.waitForSelector('#routes-table tr[data-route-id="default/live-test#0.0"]', { state: 'detached', timeout: 20_000 });
  assert.equal(await page.evaluate(() => window.__notReloaded), true);
  assert.deepEqual(errorTexts(errors), []);
  await page.close();
});
