// Headless Chromium with a page holding a muted <video> and hls.js, for play.mjs and latency.mjs.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// Runs `body(page)` in a fresh, empty profile (playwright passes it as --user-data-dir) and
// always closes the browser and removes the profile.
export async function withPlayerPage(body) {
  const profile = mkdtempSync(join(tmpdir(), 'livegate-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // HTTPS tests: trust the test certificates by their public keys (base64 SHA-256 list).
      ...(process.env.TRUST_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.TRUST_SPKI}`] : []),
    ],
  });
  try {
    const page = await browser.newPage();
    await page.setContent('<!doctype html><video id="v" muted playsinline></video>');
    await page.addScriptTag({ path: join(here, 'node_modules', 'hls.js', 'dist', 'hls.min.js') });
    // The watch page's own back-to-the-live-edge code, for play.mjs's BACK_TO_LIVE=1.
    await page.addScriptTag({ path: join(here, '..', '..', 'src', 'http', 'pages', 'live-edge.js') });
    return await body(page);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
