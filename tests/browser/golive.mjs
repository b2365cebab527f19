// A creator goes live from /go-live as a person would (Chromium's fake camera and microphone:
// pick the camera, type the key, press "Go live"), then a viewer watches on /watch/<user>.
// Fails on console errors; saves screenshots under --out. Prints one JSON report.
//   node golive.mjs --base URL --user USER --key KEY --out DIR
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
mkdirSync(args.out, { recursive: true });
const report = { consoleErrors: [], failedRequests: [], screenshots: [], checks: {} };
const profile = mkdtempSync(join(tmpdir(), 'livegate-golive-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows'],
});
async function open(path) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.consoleErrors.push(`${path}: ${m.text()}`); });
  page.on('pageerror', (e) => report.consoleErrors.push(`${path}: ${e}`));
  // Chromium's console names no URL for a failed load; this says which request it was.
  page.on('response', (r) => { if (r.status() >= 400) report.failedRequests.push(`${path}: ${r.status()} ${r.url()}`); });
  await page.goto(`${args.base}${path}`);
  return page;
}
async function shoot(page, name) {
  const file = join(args.out, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}
let ok = false;
try {
  const studio = await open('/go-live');
  report.checks.obs = await studio.locator('#obs').innerText();
  await studio.locator('#key').fill(args.key);
  await studio.locator('#codec').selectOption('H264');
  await studio.locator('#golive').click();
  await studio.waitForFunction(() => window.livegate.state === 'live', null, { timeout: 30000 });
  // Now that the camera is allowed, the devices have names to choose from.
  await studio.waitForFunction(() => document.getElementById('camera').options.length > 1, null, { timeout: 5000 });
  report.checks.cameras = await studio.locator('#camera option').allInnerTexts();
  report.checks.state = await studio.locator('#state').innerText();
  await shoot(studio, 'go-live');

  const viewer = await open(`/watch/${args.user}`);
  await viewer.waitForFunction(() => document.getElementById('video').currentTime > 1.5, null, { timeout: 40000 });
  report.checks.watched = true;
  await shoot(viewer, 'watch-webrtc');
  await studio.locator('#stop').click();
  await studio.waitForFunction(() => window.livegate.state !== 'live', null, { timeout: 10000 });
  report.checks.stopped = await studio.locator('#state').innerText();
  ok = true;
} catch (e) {
  report.failure = String(e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
report.ok = ok && report.consoleErrors.length === 0;
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
