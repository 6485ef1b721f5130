// The third transport, HTTP streaming (PROTOCOL.md §11), in headless
// Chromium against the real server running dots: a page without
// WebTransport and with WebSocket blocked (a page-level shim that fails
// every socket, as a proxy stripping Upgrade would) plays over HTTP
// streaming and a native bot in the room sees it; chat between an HTTP page
// and a WebTransport page; resume after a drop; ?transport=http.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { checkPrerequisites, startServer, launchChromium, removeDir, rallyBin } from './harness.mjs';
import { problems, newContext, openPage, state, fmt, dropTcpTo } from './pages.mjs';

const TEST_TIMEOUT = 60_000;

let server = null;
let browser = null;
let roomSeq = 0;

function freshRoom(tag) {
  return `${tag}-${process.pid}-${++roomSeq}`;
}

before(async () => {
  checkPrerequisites();
  server = await startServer({ game: 'dots' });
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    await server.stop();
    removeDir(server.certDir);
  }
});

function openDots(t, query, opts = {}, srv = server) {
  return newContext(t, browser, srv).then((context) => openPage(context, srv, '/dots', query, opts));
}

/** `rally bot … --json` (forwarded to rally-tools): what a native bot saw. */
function bot(origin, room, { transport = 'ws', seconds = 4 } = {}) {
  const args = ['bot', '--url', origin, '--transport', transport, '--room', room, '--bots', '1', '--duration', String(seconds), '--json'];
  return new Promise((resolve, reject) => {
    execFile(rallyBin, args, { timeout: (seconds + 20) * 1000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`rally ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()));
    });
  });
}

/** Holds `key` on `page` until its own dot has moved `d` units along x (sign of d). */
async function steer(page, key, d) {
  const s = await state(page);
  const x0 = s.players[s.playerId].x;
  await page.bringToFront();
  await page.keyboard.down(key);
  try {
    await page.waitForFunction(([id, x, dd]) => (window.rally.players[id].x - x) * Math.sign(dd) >= Math.abs(dd), [s.playerId, x0, d], { timeout: 5000 });
  } finally {
    await page.keyboard.up(key);
  }
}

/** Types `text` into the chat field and sends it. */
async function say(page, text) {
  await page.bringToFront();
  await page.click('#chat-text');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

function heard(page, name, text) {
  return page.waitForFunction(([n, x]) => window.rally.chat.some((c) => c.name === n && c.text === x), [name, text], { timeout: 5000 });
}

test('without WebTransport and with WebSocket blocked the page plays dots over HTTP streaming; the HUD says so and why; a native bot sees it', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('h3');
  const { page, elapsed } = await openDots(t, `transport=auto&room=${room}&name=tunnel`, { label: 'http/auto', noWebTransport: true, blockWebSocket: true });
  const s = await state(page);
  assert.equal(s.transport, 'http', fmt(s));
  assert.deepEqual(s.attempts.map((a) => a.transport), ['websocket', 'http']);
  assert.match(s.fallbackReason, /^WebTransport: WebTransport API unavailable; WebSocket: WebSocket failed to connect \(close code 1006\)$/);
  assert.ok(await page.evaluate(() => window.blockedWebSockets) >= 1, 'the page tried WebSocket');
  t.diagnostic(`HTTP streaming page ready ${elapsed} ms after navigation; attempts ${JSON.stringify(s.attempts)}`);
  assert.equal(await page.textContent('#hud-transport'), 'HTTP streaming');
  assert.match(await page.textContent('#hud-reason'), /WebTransport API unavailable.*WebSocket failed/);
  assert.equal(s.lastSnapshot.channel, 'http');

  // The keyboard moves the dot, in the server's snapshots.
  const { arenaW } = s.world;
  const right = s.players[s.playerId].x < arenaW / 2;
  await steer(page, right ? 'ArrowRight' : 'ArrowLeft', right ? 20 : -20);
  const later = await state(page);
  assert.ok(later.httpSnapshots > 10, `snapshots keep coming down the stream (${later.httpSnapshots})`);
  assert.ok(later.rtt !== null, 'Pings go up in POSTs and their Pongs come down');

  // A native bot on WebSocket in the same room sees two players: itself and the page.
  const seen = await bot(server.origin, room);
  t.diagnostic(`bot: ${JSON.stringify(seen)}`);
  assert.equal(seen.errors, 0);
  assert.equal(seen.distinct_players_seen, 2, 'the bot saw the page\'s player');
  const health = await (await fetch(`${server.origin}/health`)).json();
  assert.ok(health.metrics.http.sessions_opened >= 1, JSON.stringify(health.metrics.http));
});

test('chat between an HTTP streaming page and a WebTransport page, both ways', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('hchat');
  const ann = (await openDots(t, `transport=http&room=${room}&name=ann`, { label: 'hchat/http' })).page;
  const bob = (await openDots(t, `transport=wt&room=${room}&name=bob`, { label: 'hchat/wt' })).page;
  assert.equal((await state(ann)).transport, 'http');
  assert.equal((await state(bob)).transport, 'webtransport');
  await say(ann, 'hello over HTTP streaming ☃');
  await heard(bob, 'ann', 'hello over HTTP streaming ☃');
  await heard(ann, 'ann', 'hello over HTTP streaming ☃');
  await say(bob, 'hi from WebTransport');
  await heard(ann, 'bob', 'hi from WebTransport');
  assert.equal((await state(ann)).names[(await state(bob)).playerId], 'bob');
});

test('?transport=http forces HTTP streaming; a dropped stream resumes the player (same id, inputs acknowledged, nothing re-joined)', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('hdrop');
  const { page } = await openDots(t, `transport=http&room=${room}&name=dropper`, { label: 'hdrop', allowNetworkErrors: true }, own);
  const before = await state(page);
  assert.equal(before.transport, 'http');
  assert.equal(before.fallbackReason, 'HTTP streaming requested');
  assert.equal(await page.textContent('#hud-reason'), 'HTTP streaming requested');
  assert.deepEqual(before.attempts.map((a) => a.transport), ['http'], 'no other transport tried');
  await page.evaluate(() => window.rally.client.send(new TextEncoder().encode('before the drop')));
  assert.ok((await dropTcpTo(own.tcpPort)) >= 1, 'a connection was dropped');
  await page.waitForFunction(() => window.rally.sessions === 2 && window.rally.status === 'connected', null, { timeout: 10_000 });
  const s = await state(page);
  assert.equal(s.transport, 'http');
  assert.equal(s.resumed, true);
  assert.equal(s.playerId, before.playerId);
  const ack = s.lastSnapshot.ackSeq;
  await page.waitForFunction((a) => window.rally.lastSnapshot.ackSeq > a, ack, { timeout: 5000 });
  assert.ok(!s.events.some((e) => / joined$/.test(e)), `no join events on a resume: ${JSON.stringify(s.events)}`);
  await page.evaluate(() => window.rally.client.send(new TextEncoder().encode('after the drop')));
  await page.waitForFunction(() => window.rally.chat.filter((c) => c.name === 'dropper').length >= 2, null, { timeout: 5000 });
  assert.deepEqual((await state(page)).chat.filter((c) => c.name === 'dropper').map((c) => c.text), ['before the drop', 'after the drop']);
});

test('no console errors or uncaught page errors in any test', () => {
  assert.deepEqual(problems, []);
});
