// Publishes to livegate over WHIP from headless Chromium's fake camera and microphone, through
// the server's own /publish page, and prints what happened as JSON (one entry per page).
// Usage: node publish.mjs [--seconds N] [--end stop|kill|leave] [--video F.y4m] [--audio F.wav]
//                         [--timeout N] URL...
// Each URL is a /publish page URL with ?key=…&codec=…&auto=1. Every page must reach "live" within
// --timeout seconds; it then stays live --seconds, and ends by the page's Stop button (DELETE),
// by SIGKILL of the browser (no DELETE: the server's idle timeout must notice) or not at all.
// Exit 0 when every page went live, 1 otherwise.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const seconds = Number(opt('seconds', 6));
const end = opt('end', 'stop');
const video = opt('video', null);
const audio = opt('audio', null);
const timeoutMs = Number(opt('timeout', 30)) * 1000;
const urls = args;
if (!urls.length) {
  console.error('usage: node publish.mjs [--seconds N] [--end stop|kill|leave] URL...');
  process.exit(2);
}

const flags = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
  // Background pages must not be throttled: several publish at once.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];
// HTTPS tests: trust the test certificates by their public keys (base64 SHA-256 list).
if (process.env.TRUST_SPKI) flags.push(`--ignore-certificate-errors-spki-list=${process.env.TRUST_SPKI}`);
if (video) flags.push(`--use-file-for-fake-video-capture=${video}`);
if (audio) flags.push(`--use-file-for-fake-audio-capture=${audio}`);
// A fresh profile per run; its path also names this run's processes for --end kill.
const profile = mkdtempSync(join(tmpdir(), 'livegate-whip-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: flags,
});
const started = Date.now();
const pages = [];
for (const url of urls) {
  const page = await browser.newPage();
  const log = [];
  page.on('console', (m) => log.push(m.text()));
  await page.goto(url);
  pages.push({ page, url, log });
}
const state = (p) => p.page.evaluate(() => ({ state: window.livegate.state, error: window.livegate.error }));
const results = pages.map(() => ({}));
await Promise.all(pages.map(async (p, i) => {
  for (;;) {
    const s = await state(p);
    if (s.state === 'live' || s.state === 'error' || Date.now() - started > timeoutMs) {
      results[i] = { ...s, liveAfterMs: s.state === 'live' ? Date.now() - started : null };
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}));
console.error(`publish.mjs: ${results.filter((r) => r.state === 'live').length}/${pages.length} live`);
await new Promise((r) => setTimeout(r, seconds * 1000));
for (const [i, p] of pages.entries()) {
  results[i].stats = await p.page.evaluate(() => window.livegate.stats());
  Object.assign(results[i], await p.page.evaluate(() => ({
    location: window.livegate.location,
    postedAt: window.livegate.postedAt,
    connectedAt: window.livegate.connectedAt,
    pattern: window.livegate.pattern,
  })));
  results[i].console = p.log.slice(-5);
}
if (end === 'kill') {
  // As a crashed tab or a pulled cable: no DELETE, no DTLS close.
  try { execFileSync('pkill', ['-KILL', '-f', profile]); } catch (e) { /* already gone */ }
} else {
  if (end === 'stop') {
    for (const p of pages) await p.page.evaluate(() => window.livegate.stop());
  }
  await browser.close();
}
rmSync(profile, { recursive: true, force: true });
console.log(JSON.stringify(results));
process.exit(results.every((r) => r.state === 'live') ? 0 : 1);
