// Saves screenshots of the dashboard so a reviewer can look at it without a cluster:
//   bash tests/browser/run.sh screenshot   ->  target/dashboard.png and target/dashboard-dark.png
// (or, with portier already running: PORTIER_ADMIN=... PORTIER_PREFIXED=... node screenshot.mjs OUT.png)
import { ADMIN, launch, openDashboard, sendTraffic, servedIndex } from './lib.mjs';

const out = process.argv[2] || new URL('../../target/dashboard.png', import.meta.url).pathname;
await sendTraffic();
const fromFile = (await servedIndex()) !== 'file';
if (fromFile) console.log('note: admin / does not serve src/admin/dashboard.html (yet); the file is loaded in its place');
const browser = await launch();
try {
  for (const colorScheme of ['light', 'dark']) {
    const { page, errors } = await openDashboard(browser.context, ADMIN, { fromFile, colorScheme });
    // Show the "why" helper with an answer, as a user would use it.
    await page.fill('#why-url', 'https://shop.example.com/cart');
    await page.click('#why-submit');
    await page.waitForFunction(() => document.getElementById('why-result').textContent.trim() !== '');
    await page.evaluate(() => window.scrollTo(0, 0));
    const file = colorScheme === 'light' ? out : out.replace(/\.png$/, '') + '-dark.png';
    await page.screenshot({ path: file, fullPage: true });
    console.log(`saved ${file}${errors.length ? ` (console errors: ${JSON.stringify(errors)})` : ''}`);
    await page.close();
  }
} finally {
  await browser.close();
}
