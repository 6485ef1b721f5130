// Transports, in headless Chromium against the real server (RALLY_BIN,
// default target/release/rally) running dots: WebTransport by default,
// the WebSocket fallback (no API, UDP black hole), the remembered winner,
// prediction, rendering, reconnect after a restart, resume after a drop,
// join tokens and a certificate renewal.
//
// Every case uses its own room (and browser context) on one shared server,
// except those that need a server of their own.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { checkPrerequisites, startServer, udpBlackHole, launchChromium, mintToken, artifactsDir, removeDir } from './harness.mjs';
import { problems, blackHoleLine, newContext, openPage, state, fmt, dropTcpTo } from './pages.mjs';

const CONNECT_BUDGET_MS = 3000;
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

/** Opens the dots page on `srv` (default: the shared server). */
function openDots(t, query, opts = {}, srv = server) {
  return newContext(t, browser, srv).then((context) => openPage(context, srv, '/dots', query, opts));
}

/** Waits until `page` sees player `id` and returns its position. */
async function positionSeenBy(page, id, timeout = 5000) {
  const handle = await page.waitForFunction((pid) => window.rally.players[pid] || null, id, { timeout });
  return handle.jsonValue();
}

/**
 * `mover` holds an arrow key (towards the arena centre); resolves once
 * `watcher` sees the mover's dot travel at least 10% of a second's worth of
 * movement in that direction.
 */
async function moveAndWatch(mover, watcher) {
  const m = await state(mover);
  const id = m.playerId;
  const start = await positionSeenBy(watcher, id);
  const { arenaW, speed } = m.world;
  const sign = start.x < arenaW / 2 ? 1 : -1;
  const key = sign > 0 ? 'ArrowRight' : 'ArrowLeft';
  await mover.bringToFront();
  await mover.keyboard.down(key);
  try {
    await watcher.waitForFunction(
      ([pid, x0, s, d]) => {
        const p = window.rally.players[pid];
        return p && (p.x - x0) * s >= d;
      },
      [id, start.x, sign, speed * 0.1],
      { timeout: 5000 },
    );
  } finally {
    await mover.keyboard.up(key);
  }
}

test('auto connects over WebTransport with the pinned cert hash and datagram snapshots, and plays with a WebSocket page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('a');
  const wt = await openDots(t, `transport=auto&room=${room}&name=wt`, { label: 'a/auto' });
  const ws = await openDots(t, `transport=ws&room=${room}&name=ws`, { label: 'a/ws' });
  const s = await state(wt.page);
  assert.equal(s.transport, 'webtransport', fmt(s));
  assert.equal(s.fallbackReason, null);
  assert.equal(s.certHashUsed, true, 'WebTransport should pin the /cert-hash digest');
  assert.equal(s.welcome.game, 'dots');
  assert.equal(s.welcome.version, 2);
  t.diagnostic(`attempts: ${JSON.stringify(s.attempts)}`);
  assert.equal((await state(ws.page)).transport, 'websocket');

  await moveAndWatch(ws.page, wt.page);
  await moveAndWatch(wt.page, ws.page);
  const later = await state(wt.page);
  assert.ok(later.datagramSnapshots > 0, `snapshots should arrive as datagrams (got ${later.datagramSnapshots} of ${later.snapshotsReceived})`);
  assert.equal(later.lastSnapshot.channel, 'datagram');
  assert.equal(later.names[(await state(ws.page)).playerId], 'ws', 'PlayerJoined names the other page');
});

test('without the WebTransport API the page is on WebSocket within 3 s and plays with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('b');
  const wt = await openDots(t, `transport=wt&room=${room}`, { label: 'b/wt' });
  const ws = await openDots(t, `transport=auto&room=${room}`, { label: 'b/no-api', noWebTransport: true });
  const sw = await state(ws.page);
  assert.equal(sw.transport, 'websocket');
  assert.equal(sw.fallbackReason, 'WebTransport API unavailable');
  assert.ok(sw.connectedAt < CONNECT_BUDGET_MS, `connected ${sw.connectedAt} ms after navigation`);
  const st = await state(wt.page);
  assert.equal(st.transport, 'webtransport', fmt(st));
  await moveAndWatch(ws.page, wt.page);
  await moveAndWatch(wt.page, ws.page);
});

test('with the UDP endpoint unreachable the page falls back to WebSocket within 3 s and plays with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('c');
  const hole = await udpBlackHole();
  t.after(() => hole.close());
  const wt = await openDots(t, `transport=wt&room=${room}`, { label: 'c/wt' });
  const query = `transport=auto&room=${room}&wt=${encodeURIComponent(`https://127.0.0.1:${hole.port}/rally`)}`;
  const ws = await openDots(t, query, { label: 'c/blackhole', allow: blackHoleLine(hole.port) });
  const sw = await state(ws.page);
  assert.equal(sw.transport, 'websocket', fmt(sw));
  assert.ok(sw.fallbackReason, 'fallbackReason should say why WebTransport was not used');
  assert.ok(sw.connectedAt < CONNECT_BUDGET_MS, `connected ${sw.connectedAt} ms after navigation`);
  t.diagnostic(`black hole page: connected ${Math.round(sw.connectedAt)} ms after navigation; ${fmt(sw)}`);
  assert.ok(hole.packets > 0, 'the browser should have tried the UDP endpoint');
  assert.equal((await state(wt.page)).transport, 'webtransport');
  await moveAndWatch(ws.page, wt.page);
  await moveAndWatch(wt.page, ws.page);
  // The abandoned WebTransport probe ends in a timeout, which the page learns and shows.
  await ws.page.waitForFunction(() => /timeout/i.test(window.rally.fallbackReason || ''), null, { timeout: 5000 });
  assert.match(await ws.page.textContent('#hud-reason'), /timeout/i);
});

test('holding ArrowRight for 0.5 s moves the dot right in the server snapshots; prediction converges', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('d');
  const { page } = await openDots(t, `transport=auto&room=${room}`, { label: 'd' });
  const s = await state(page);
  const id = s.playerId;
  const { arenaW, speed } = s.world;
  let x0 = (await positionSeenBy(page, id)).x;
  await page.bringToFront();
  if (x0 > arenaW - speed * 0.6) {
    // Too close to the right wall for the check: step left first.
    await page.keyboard.down('ArrowLeft');
    await page.waitForTimeout(800);
    await page.keyboard.up('ArrowLeft');
    await page.waitForTimeout(300);
    x0 = (await positionSeenBy(page, id)).x;
  }
  const ackBefore = (await state(page)).lastSnapshot.ackSeq;
  await page.keyboard.down('ArrowRight');
  await page.waitForTimeout(500);
  await page.keyboard.up('ArrowRight');
  // ~0.5 s of input is speed / 2 units; allow for start-up and rounding.
  await page.waitForFunction(([pid, x, d]) => window.rally.players[pid].x - x >= d, [id, x0, speed * 0.5 * 0.6], { timeout: 3000 });
  await page.waitForTimeout(400);
  const later = await state(page);
  const moved = later.players[id].x - x0;
  assert.ok(moved <= speed * 0.5 * 1.6, `moved ${moved} units, more than 0.5 s worth`);
  assert.ok(later.lastSnapshot.ackSeq > ackBefore, 'the server acknowledges inputs');
  // Idle inputs move nothing: once acked, prediction equals the server.
  assert.ok(Math.abs(later.predicted.x - later.players[id].x) < 0.01, `predicted ${later.predicted.x} vs server ${later.players[id].x}`);
});

test('the arena renders: screenshot saved to artifacts/dots.png, canvas not blank, HUD filled', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('e');
  const { page } = await openDots(t, `transport=auto&room=${room}&name=shot`, { label: 'e' });
  await openDots(t, `transport=ws&room=${room}&name=other`, { label: 'e/other' });
  await page.waitForFunction(() => Object.keys(window.rally.players).length >= 2, null, { timeout: 10_000 });
  await page.waitForTimeout(300);
  const path = join(artifactsDir, 'dots.png');
  await page.screenshot({ path });
  const size = statSync(path).size;
  assert.ok(size > 10_000, `screenshot is only ${size} bytes`);
  const canvas = await page.evaluate(() => {
    const c = document.getElementById('arena');
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4) colours.add(((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]) >>> 0);
    return { w: c.width, h: c.height, colours: colours.size };
  });
  assert.ok(canvas.w > 100 && canvas.h > 50, `canvas is ${canvas.w}x${canvas.h}`);
  assert.ok(canvas.colours >= 20, `canvas has only ${canvas.colours} distinct colours`);
  const hud = await page.textContent('#hud');
  assert.match(hud, /server tick\s*\d+/);
  assert.match(hud, /WebTransport|WebSocket/);
  assert.match(hud, /RTT\s*\d/);
  assert.match(hud, /snapshots\s*[1-9]\d* \/s/);
  // Every page lists the three games and marks the one this server runs.
  const nav = await page.$$eval('#nav a', (as) => as.map((a) => [a.dataset.game, a.getAttribute('aria-current'), !!a.querySelector('.running')]));
  assert.deepEqual(nav, [['dots', 'page', true], ['relay', null, false], ['shooter', null, false]]);
});

test('a WebSocket win is remembered: the next visit goes straight to WebSocket', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('f');
  const hole = await udpBlackHole();
  t.after(() => hole.close());
  const context = await newContext(t, browser, server);
  const query = `transport=auto&room=${room}&wt=${encodeURIComponent(`https://127.0.0.1:${hole.port}/rally`)}`;
  const allow = blackHoleLine(hole.port);
  const first = await openPage(context, server, '/dots', query, { label: 'f/first', allow });
  assert.equal((await state(first.page)).transport, 'websocket');
  // Let the first visit's WebTransport probe finish before counting packets.
  await first.page.waitForFunction(() => /timeout/i.test(window.rally.fallbackReason || ''), null, { timeout: 5000 });
  await first.page.close();
  await new Promise((r) => setTimeout(r, 2000));
  const packetsBefore = hole.packets;
  const second = await openPage(context, server, '/dots', query, { label: 'f/second', allow });
  const s = await state(second.page);
  assert.equal(s.transport, 'websocket');
  assert.match(s.fallbackReason, /^remembered: /);
  assert.ok(s.connectedAt < 1500, `remembered WebSocket connected after ${s.connectedAt} ms`);
  assert.deepEqual(s.attempts.map((a) => a.transport), ['websocket'], 'no WebTransport attempt on the remembered visit');
  await second.page.waitForTimeout(500);
  assert.equal(hole.packets, packetsBefore, 'no packets to the UDP endpoint on the remembered visit');
});

test('the page reconnects after the server restarts (a fresh join: the old server forgot the player)', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('g');
  const { page } = await openDots(t, `transport=auto&room=${room}`, { label: 'g', allowNetworkErrors: true }, own);
  assert.equal((await state(page)).sessions, 1);
  await own.stop('SIGKILL', { keepPages: true });
  await page.waitForFunction(() => window.rally.status === 'reconnecting', null, { timeout: 5000 });
  // Same ports and certificate directory: the page's origin is unchanged.
  const again = await startServer({ game: 'dots', port: own.tcpPort, certDir: own.certDir });
  t.after(() => again.stop());
  await page.waitForFunction(
    () => window.rally.status === 'connected' && window.rally.sessions === 2 && window.rally.lastSnapshot !== null && window.rally.players[window.rally.playerId],
    null,
    { timeout: 20_000 },
  );
  const s = await state(page);
  assert.equal(s.resumed, false, 'the restarted server had no player to resume');
  assert.ok(['webtransport', 'websocket'].includes(s.transport));
  assert.ok(s.names[s.playerId], 'the roster came again with the fresh join');
});

test('a dropped WebSocket resumes its player: same id, inputs still acknowledged, nothing re-joined', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('h');
  const { page } = await openDots(t, `transport=ws&room=${room}&name=dropper`, { label: 'h', allowNetworkErrors: true }, own);
  const before = await state(page);
  assert.ok((await dropTcpTo(own.tcpPort)) >= 1, 'a connection was dropped');
  await page.waitForFunction(() => window.rally.sessions === 2 && window.rally.status === 'connected', null, { timeout: 10_000 });
  const s = await state(page);
  assert.equal(s.resumed, true);
  assert.equal(s.playerId, before.playerId);
  const ack = s.lastSnapshot.ackSeq;
  await page.waitForFunction((a) => window.rally.lastSnapshot.ackSeq > a, ack, { timeout: 5000 });
  assert.ok(!s.events.some((e) => / joined$/.test(e)), `no join events on a resume: ${JSON.stringify(s.events)}`);
});

test('reliable messages across a drop reach the game exactly once, in order, those sent while away included (PROTOCOL.md §7.2)', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('replay');
  const ann = (await openDots(t, `transport=ws&room=${room}&name=ann`, { label: 'replay/ann', allowNetworkErrors: true }, own)).page;
  // Bob listens on WebTransport, which the TCP reset leaves alone.
  const bob = (await openDots(t, `transport=wt&room=${room}&name=bob`, { label: 'replay/bob' }, own)).page;
  const sendLines = (from, to) => ann.evaluate(([a, b]) => {
    for (let i = a; i <= b; i++) window.rally.client.send(new TextEncoder().encode(`line ${i}`));
  }, [from, to]);
  await sendLines(1, 20);
  await dropTcpTo(own.tcpPort); // some of those may still be in flight
  await ann.waitForFunction(() => window.rally.status === 'reconnecting', null, { timeout: 5000 });
  await sendLines(21, 25); // queued until the resume
  await ann.waitForFunction(() => window.rally.sessions === 2 && window.rally.status === 'connected', null, { timeout: 10_000 });
  await sendLines(26, 30);
  const expected = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`);
  await bob.waitForFunction((n) => window.rally.chat.filter((c) => c.name === 'ann').length >= n, expected.length, { timeout: 10_000 });
  await bob.waitForTimeout(300); // a duplicate would come right behind
  const got = (await state(bob)).chat.filter((c) => c.name === 'ann').map((c) => c.text);
  assert.deepEqual(got, expected);
  const a = await state(ann);
  assert.equal(a.resumed, true);
  t.diagnostic(`ann re-sent ${await ann.evaluate(() => window.rally.client.stats.appResent)} after the resume (Welcome.client_seq ${await ann.evaluate(() => window.rally.client.welcome.clientSeq)})`);
});

test('join tokens: a page with ?token= from `rally token` plays over WebTransport; one without is refused', { timeout: TEST_TIMEOUT }, async (t) => {
  const secret = 'browser-test-secret-0123456789abcdef';
  const own = await startServer({ game: 'dots', extraArgs: ['--token-secret', secret] });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('tok');
  const token = await mintToken(secret, { room });
  const { page } = await openDots(t, `transport=auto&room=${room}&token=${encodeURIComponent(token)}`, { label: 'tok/ok' }, own);
  assert.equal((await state(page)).transport, 'webtransport');
  const refused = await openDots(t, `transport=auto&room=${room}`, { label: 'tok/none', allowNetworkErrors: true, ready: false }, own);
  await refused.page.waitForFunction(() => window.rally.error && /WebSocket/.test(window.rally.error), null, { timeout: 15_000 });
  const r = await state(refused.page);
  assert.notEqual(r.status, 'connected');
  t.diagnostic(`refused page: ${r.error}`);
});

test('no console errors or uncaught page errors in any test', () => {
  assert.deepEqual(problems, []);
});
