// The dots page in headless Firefox ESR (Debian's firefox-esr, driven by
// puppeteer-core over WebDriver BiDi; never a downloaded browser) against
// the real server: WebTransport with the certificate hash, the WebSocket
// fallback, the HTTP streaming tier, keyboard play, and no console errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchFirefox, removeDir, clientFromDisk, clientFileFor } from './harness.mjs';
import { BLOCK_WEBSOCKET } from './pages.mjs';

const TEST_TIMEOUT = 60_000;

let server = null;
let browser = null;
let roomSeq = 0;
const problems = [];

function freshRoom(tag) {
  return `${tag}-${process.pid}-${++roomSeq}`;
}

before(async () => {
  checkPrerequisites();
  server = await startServer({ game: 'dots' });
  browser = await launchFirefox();
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    await server.stop();
    removeDir(server.certDir);
  }
});

/**
 * Opens the dots page in a browser context of its own (own storage, so no
 * remembered transport), watching its console; resolves once connected
 * with a snapshot.
 */
async function openDots(t, query, { label = query, noWebTransport = false, blockWebSocket = false } = {}) {
  const context = await browser.createBrowserContext();
  t.after(() => context.close());
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`[firefox ${label}] console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`[firefox ${label}] pageerror: ${err.message}`));
  if (clientFromDisk) {
    await page.setRequestInterception(true);
    page.on('request', (req) => {
      const file = req.url().startsWith(server.origin) ? clientFileFor(req.url(), server.game) : null;
      if (file) req.respond({ status: 200, contentType: file.contentType, body: file.body });
      else req.continue();
    });
  }
  if (noWebTransport) {
    await page.evaluateOnNewDocument(() => {
      delete window.WebTransport;
    });
  }
  if (blockWebSocket) await page.evaluateOnNewDocument(BLOCK_WEBSOCKET);
  await page.goto(`${server.origin}/dots?${query}`);
  await page.waitForFunction(() => window.rally && window.rally.status === 'connected' && window.rally.lastSnapshot !== null, { timeout: 10_000 });
  return page;
}

/** The page's mirrored state, without the live objects. */
function state(page) {
  return page.evaluate(() => {
    const { client, welcome, toPage, ...plain } = window.rally;
    return JSON.parse(JSON.stringify({ ...plain, attempts: client ? client.attempts : [] }));
  });
}

/**
 * `mover` holds an arrow key (towards the arena centre) until `watcher`
 * sees the mover's dot travel 10% of a second's worth.
 */
async function moveAndWatch(mover, watcher) {
  const m = await state(mover);
  const id = m.playerId;
  await watcher.waitForFunction((pid) => !!window.rally.players[pid], { timeout: 5000 }, id);
  const x0 = await watcher.evaluate((pid) => window.rally.players[pid].x, id);
  const sign = x0 < m.world.arenaW / 2 ? 1 : -1;
  const key = sign > 0 ? 'ArrowRight' : 'ArrowLeft';
  await mover.bringToFront();
  await mover.keyboard.down(key);
  try {
    await watcher.waitForFunction(
      (pid, x, s, d) => (window.rally.players[pid].x - x) * s >= d,
      { timeout: 5000 },
      id, x0, sign, m.world.speed * 0.1,
    );
  } finally {
    await mover.keyboard.up(key);
  }
}

test('Firefox: auto joins over WebTransport, pinning the /cert-hash digest, with datagram snapshots; the keyboard moves the dot', { timeout: TEST_TIMEOUT }, async (t) => {
  const page = await openDots(t, `transport=auto&room=${freshRoom('ff-wt')}&name=fox`, { label: 'wt' });
  const s = await state(page);
  t.diagnostic(`attempts: ${JSON.stringify(s.attempts)}`);
  assert.equal(s.transport, 'webtransport', JSON.stringify(s.attempts));
  assert.equal(s.fallbackReason, null);
  assert.equal(s.certHashUsed, true);
  assert.match(await page.$eval('#hud-transport', (e) => e.textContent), /^WebTransport \(HTTP\/3\), pinned cert hash$/);
  assert.equal(await page.$eval('#hud-reason', (e) => e.textContent), 'the fastest tier: it works');
  await moveAndWatch(page, page);
  await page.waitForFunction(() => window.rally.datagramSnapshots > 0, { timeout: 5000 });
});

test('Firefox: without the WebTransport API the page falls back to WebSocket and plays with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('ff-ws');
  const wt = await openDots(t, `transport=wt&room=${room}&name=wt`, { label: 'ws/wt' });
  const ws = await openDots(t, `transport=auto&room=${room}&name=ws`, { label: 'ws/no-api', noWebTransport: true });
  const s = await state(ws);
  assert.equal(s.transport, 'websocket', JSON.stringify(s.attempts));
  assert.equal(s.fallbackReason, 'WebTransport API unavailable');
  assert.equal(await ws.$eval('#hud-transport', (e) => e.textContent), 'WebSocket');
  assert.equal(await ws.$eval('#hud-reason', (e) => e.textContent), 'WebTransport API unavailable');
  await moveAndWatch(ws, wt);
  await moveAndWatch(wt, ws);
});

test('Firefox: with WebTransport removed and WebSocket blocked the page plays over HTTP streaming, with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('ff-http');
  const wt = await openDots(t, `transport=wt&room=${room}&name=wt`, { label: 'http/wt' });
  const http = await openDots(t, `transport=auto&room=${room}&name=tunnel`, { label: 'http/auto', noWebTransport: true, blockWebSocket: true });
  const s = await state(http);
  assert.equal(s.transport, 'http', JSON.stringify(s.attempts));
  assert.deepEqual(s.attempts.map((a) => a.transport), ['websocket', 'http']);
  assert.match(s.fallbackReason, /WebTransport API unavailable; WebSocket: WebSocket failed/);
  assert.equal(await http.$eval('#hud-transport', (e) => e.textContent), 'HTTP streaming');
  assert.equal(await http.$eval('#hud-reason', (e) => e.textContent), s.fallbackReason);
  assert.ok((await http.evaluate(() => window.blockedWebSockets)) >= 1);
  assert.equal(s.lastSnapshot.channel, 'http');
  await moveAndWatch(http, wt);
  await moveAndWatch(wt, http);
  const later = await state(http);
  assert.ok(later.httpSnapshots > 10 && later.rtt !== null, JSON.stringify({ snapshots: later.httpSnapshots, rtt: later.rtt }));
});

test('Firefox: no console errors or uncaught page errors in any test', () => {
  assert.deepEqual(problems, []);
});
