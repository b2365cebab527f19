// Two Chromium pages in one chat (each may be on its own livegate node): they exchange messages,
// both receive an event the site posts over the admin API, the limits answer with errors, and a
// banned viewer's message is refused. Prints one JSON report; the Rust test asserts on it.
//   node chat.mjs --a WS_URL --b WS_URL --api HTTP_BASE --admin TOKEN --user USER
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
const deadline = Date.now() + 40_000;
const report = { errors: [] };

async function until(what, check) {
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out: ${what}`);
}

async function open(context, url) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.errors.push(m.text()); });
  page.on('pageerror', (e) => report.errors.push(String(e)));
  await page.setContent('<!doctype html><title>chat</title>');
  await page.evaluate((url) => {
    window.log = [];
    window.ws = new WebSocket(url);
    window.ws.onmessage = (e) => window.log.push(JSON.parse(e.data));
    window.ws.onclose = (e) => window.log.push({ type: 'closed', code: e.code });
  }, url);
  return page;
}

const log = (page) => page.evaluate(() => window.log);
const say = (page, text) => page.evaluate((text) => window.ws.send(JSON.stringify({ type: 'message', text })), text);
const has = async (page, pred) => (await log(page)).some(pred);

async function admin(method, path, body) {
  const r = await fetch(`${args.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${args.admin}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return r.status;
}

const profile = mkdtempSync(join(tmpdir(), 'livegate-chat-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let ok = false;
try {
  const a = await open(context, args.a);
  const b = await open(context, args.b);
  for (const [name, page] of [['a', a], ['b', b]]) {
    await until(`welcome on ${name}`, () => has(page, (m) => m.type === 'welcome'));
  }
  const welcomeB = (await log(b)).find((m) => m.type === 'welcome');
  report.senderB = welcomeB.sender;
  report.nameA = (await log(a)).find((m) => m.type === 'welcome').name;

  await say(a, 'hello from a');
  await say(b, 'hello from b');
  for (const page of [a, b]) {
    for (const text of ['hello from a', 'hello from b']) {
      await until(`"${text}" everywhere`, () => has(page, (m) => m.type === 'message' && m.text === text));
    }
  }
  report.exchanged = true;

  report.eventStatus = await admin('POST', `/api/v1/streams/${args.user}/chat/events`, { kind: 'tip', data: { amount: 5, from: 'Ada' } });
  for (const page of [a, b]) {
    await until('the tip everywhere', () => has(page, (m) => m.type === 'event' && m.kind === 'tip' && m.data.amount === 5));
  }
  report.tipSeen = true;

  await say(a, 'x'.repeat(501));
  await until('the length error', () => has(a, (m) => m.type === 'error' && /too long/.test(m.error)));
  report.lengthRefused = true;
  for (let i = 0; i < 6; i++) await say(a, `burst ${i}`);
  await until('the rate error', () => has(a, (m) => m.type === 'error' && /slow down/.test(m.error)));
  report.rateRefused = true;

  report.banStatus = await admin('POST', `/api/v1/streams/${args.user}/chat/bans`, { sender: report.senderB });
  await until('the ban everywhere', async () => (await has(a, (m) => m.type === 'banned')) && (await has(b, (m) => m.type === 'banned')));
  await say(b, 'am I banned?');
  await until('the ban error', () => has(b, (m) => m.type === 'error' && /banned/.test(m.error)));
  report.banRefused = true;
  await new Promise((r) => setTimeout(r, 500));
  report.bannedMessageShown = await has(a, (m) => m.type === 'message' && m.text === 'am I banned?');
  ok = true;
} catch (e) {
  report.failure = String(e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
report.ok = ok;
console.log(JSON.stringify(report));
process.exit(ok ? 0 : 1);
