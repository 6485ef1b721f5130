// The demo page and client/rally.js in headless Chromium against the real
// server (RALLY_BIN, default target/release/rally), with native bots.
//
// Every case uses its own room (and browser context) on one shared server,
// except the reconnect case, which needs a server of its own to restart.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import {
  checkPrerequisites, startServer, runBot, udpBlackHole, launchChromium,
  maybeServeClientFromDisk, artifactsDir, removeDir,
} from './harness.mjs';

const CONNECT_BUDGET_MS = 3000;
const TEST_TIMEOUT = 60_000;

let server = null;
let browser = null;
/** Console errors and uncaught page errors, across all tests. */
const problems = [];
let roomSeq = 0;

function freshRoom(tag) {
  return `${tag}-${process.pid}-${++roomSeq}`;
}

before(async () => {
  checkPrerequisites();
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    await server.stop();
    removeDir(server.certDir);
  }
});

/** Network errors a test provokes on purpose (server down) are not problems. */
const NET_ERROR = /net::ERR_|WebSocket connection to .* failed|Failed to load resource|WebTransport/i;

/**
 * Chromium itself logs a failed WebTransport handshake ("Failed to establish
 * a connection to URL: net::ERR_..."); page code cannot silence it. Tests
 * that aim WebTransport at a black hole on purpose accept exactly that line.
 */
function blackHoleLine(port) {
  return new RegExp(`^Failed to establish a connection to https://127\\.0\\.0\\.1:${port}/rally: net::ERR_`);
}

/** A fresh browser context (own storage), closed when test `t` ends. */
async function newContext(t, { origin = server.origin } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  t.after(() => context.close());
  await maybeServeClientFromDisk(context, origin);
  return context;
}

function watchPage(page, label, { allowNetworkErrors = false, allow = null } = {}) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (allowNetworkErrors && NET_ERROR.test(text)) return;
    if (allow && allow.test(text)) return;
    problems.push(`[${label}] console.error: ${text}`);
  });
  page.on('pageerror', (err) => problems.push(`[${label}] pageerror: ${err.message}`));
}

/** Opens the demo page; resolves once it is connected and has a snapshot. */
async function openGame(context, query, { label, origin = server.origin, allowNetworkErrors = false, allow = null, noWebTransport = false } = {}) {
  const page = await context.newPage();
  watchPage(page, label || query, { allowNetworkErrors, allow });
  if (noWebTransport) {
    await page.addInitScript(() => {
      delete window.WebTransport;
    });
  }
  const started = Date.now();
  await page.goto(`${origin}/?${query}`);
  await page.waitForFunction(
    () => window.rally && window.rally.status === 'connected' && window.rally.lastSnapshot !== null,
    null,
    { timeout: 10_000 },
  );
  const elapsed = Date.now() - started;
  return { page, elapsed };
}

function state(page) {
  return page.evaluate(() => {
    const r = window.rally;
    return {
      status: r.status,
      transport: r.transport,
      fallbackReason: r.fallbackReason,
      certHashUsed: r.certHashUsed,
      playerId: r.playerId,
      welcome: r.welcome,
      connectedAt: r.connectedAt,
      sessions: r.sessions,
      snapshotsReceived: r.snapshotsReceived,
      datagramSnapshots: r.datagramSnapshots,
      streamSnapshots: r.streamSnapshots,
      lastSnapshot: r.lastSnapshot,
      players: r.players,
      predicted: r.predicted,
      inputsSent: r.inputsSent,
      attempts: r.client ? r.client.attempts : [],
      error: r.error,
    };
  });
}

/** Waits until `page` sees player `id` and returns its position. */
async function positionSeenBy(page, id, timeout = 5000) {
  const handle = await page.waitForFunction((pid) => window.rally.players[pid] || null, id, { timeout });
  return handle.jsonValue();
}

/**
 * `mover` holds an arrow key (towards the arena centre); resolves once
 * `watcher` sees the mover's player travel at least 10% of a second's
 * worth of movement in that direction.
 */
async function moveAndWatch(mover, watcher) {
  const m = await state(mover);
  const id = m.playerId;
  const start = await positionSeenBy(watcher, id);
  const sign = start.x < m.welcome.arenaW / 2 ? 1 : -1;
  const key = sign > 0 ? 'ArrowRight' : 'ArrowLeft';
  const minTravel = m.welcome.speed * 0.1;
  await mover.bringToFront();
  await mover.keyboard.down(key);
  try {
    await watcher.waitForFunction(
      ([pid, x0, s, d]) => {
        const p = window.rally.players[pid];
        return p && (p.x - x0) * s >= d;
      },
      [id, start.x, sign, minTravel],
      { timeout: 5000 },
    );
  } finally {
    await mover.keyboard.up(key);
  }
}

const fmt = (s) => JSON.stringify({ transport: s.transport, fallbackReason: s.fallbackReason, attempts: s.attempts });

test('(a) auto connects over WebTransport with the cert hash, gets datagram snapshots, sees a native WebSocket bot move', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('a');
  const { page } = await openGame(await newContext(t), `transport=auto&room=${room}`, { label: 'a/auto' });
  const bot = runBot(server.origin, { room, duration: 5, transport: 'ws' });
  t.after(() => bot.kill());

  const s = await state(page);
  assert.equal(s.transport, 'webtransport', fmt(s));
  assert.equal(s.fallbackReason, null);
  assert.equal(s.certHashUsed, true, 'WebTransport should pin the /cert-hash digest');
  t.diagnostic(`attempts: ${JSON.stringify(s.attempts)}`);

  // The bot joins (its PlayerJoined may trail its first datagram snapshot):
  // find it by name and watch it move between snapshots.
  const botHandle = await page.waitForFunction(
    (me) => Object.values(window.rally.players).find((p) => p.id !== me && /^bot/.test(p.name)) || null,
    s.playerId,
    { timeout: 10_000 },
  );
  const first = await botHandle.jsonValue();
  await page.waitForFunction(
    ([id, x, y]) => {
      const p = window.rally.players[id];
      return p && Math.hypot(p.x - x, p.y - y) > 0.5;
    },
    [first.id, first.x, first.y],
    { timeout: 8000 },
  );

  const later = await state(page);
  assert.ok(later.datagramSnapshots > 0, `snapshots should arrive as datagrams (got ${later.datagramSnapshots} of ${later.snapshotsReceived})`);
  assert.equal(later.lastSnapshot.channel, 'datagram');

  const { code, json } = await bot.result;
  assert.equal(code, 0, 'bot exit code');
  assert.equal(typeof json, 'object');
});

test('(b) without the WebTransport API the page is on WebSocket within 3 s and plays with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('b');
  const wt = await openGame(await newContext(t), `transport=wt&room=${room}`, { label: 'b/wt' });
  const ws = await openGame(await newContext(t), `transport=auto&room=${room}`, { label: 'b/no-api', noWebTransport: true });

  const sw = await state(ws.page);
  assert.equal(sw.transport, 'websocket');
  assert.equal(sw.fallbackReason, 'WebTransport API unavailable');
  assert.ok(sw.connectedAt < CONNECT_BUDGET_MS, `connected ${sw.connectedAt} ms after navigation`);
  const st = await state(wt.page);
  assert.equal(st.transport, 'webtransport', fmt(st));

  await moveAndWatch(ws.page, wt.page);
  await moveAndWatch(wt.page, ws.page);
});

test('(c) with the UDP endpoint unreachable the page falls back to WebSocket within 3 s and plays with a WebTransport page', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('c');
  const hole = await udpBlackHole();
  t.after(() => hole.close());
  const wt = await openGame(await newContext(t), `transport=wt&room=${room}`, { label: 'c/wt' });
  const query = `transport=auto&room=${room}&wt=${encodeURIComponent(`https://127.0.0.1:${hole.port}/rally`)}`;
  const ws = await openGame(await newContext(t), query, { label: 'c/blackhole', allow: blackHoleLine(hole.port) });

  const sw = await state(ws.page);
  assert.equal(sw.transport, 'websocket', fmt(sw));
  assert.ok(sw.fallbackReason, 'fallbackReason should say why WebTransport was not used');
  assert.ok(sw.connectedAt < CONNECT_BUDGET_MS, `connected ${sw.connectedAt} ms after navigation`);
  t.diagnostic(`black hole page: connected ${Math.round(sw.connectedAt)} ms after navigation; ${fmt(sw)}`);
  assert.ok(hole.packets > 0, 'the browser should have tried the UDP endpoint');
  const st = await state(wt.page);
  assert.equal(st.transport, 'webtransport', fmt(st));

  await moveAndWatch(ws.page, wt.page);
  await moveAndWatch(wt.page, ws.page);

  // The abandoned WebTransport probe ends in a timeout, which the page learns.
  await ws.page.waitForFunction(() => /timeout/i.test(window.rally.fallbackReason || ''), null, { timeout: 5000 });
});

test('(d) holding ArrowRight for 0.5 s moves the player right in the server snapshots; prediction converges', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('d');
  const { page } = await openGame(await newContext(t), `transport=auto&room=${room}`, { label: 'd' });
  const s = await state(page);
  const id = s.playerId;
  const { arenaW, speed } = s.welcome;
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

test('(e) the arena renders: screenshot saved to artifacts/game.png, canvas not blank', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('e');
  const { page } = await openGame(await newContext(t), `transport=auto&room=${room}&name=shot`, { label: 'e' });
  const bot = runBot(server.origin, { room, duration: 4, transport: 'ws' });
  t.after(() => bot.kill());
  await page.waitForFunction(() => Object.keys(window.rally.players).length >= 2, null, { timeout: 10_000 });
  await page.waitForTimeout(300);
  const path = join(artifactsDir, 'game.png');
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
  await bot.result.catch(() => {});
});

test('(f) a WebSocket win is remembered: the next visit goes straight to WebSocket', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('f');
  const hole = await udpBlackHole();
  t.after(() => hole.close());
  const context = await newContext(t);
  const query = `transport=auto&room=${room}&wt=${encodeURIComponent(`https://127.0.0.1:${hole.port}/rally`)}`;
  const allow = blackHoleLine(hole.port);
  const first = await openGame(context, query, { label: 'f/first', allow });
  assert.equal((await state(first.page)).transport, 'websocket');
  // Let the first visit's WebTransport probe finish before counting packets.
  await first.page.waitForFunction(() => /timeout/i.test(window.rally.fallbackReason || ''), null, { timeout: 5000 });
  await first.page.close();
  await new Promise((r) => setTimeout(r, 2000));
  const packetsBefore = hole.packets;
  const second = await openGame(context, query, { label: 'f/second', allow });
  const s = await state(second.page);
  assert.equal(s.transport, 'websocket');
  assert.match(s.fallbackReason, /^remembered: /);
  assert.ok(s.connectedAt < 1500, `remembered WebSocket connected after ${s.connectedAt} ms`);
  assert.deepEqual(s.attempts.map((a) => a.transport), ['websocket'], 'no WebTransport attempt on the remembered visit');
  await second.page.waitForTimeout(500);
  assert.equal(hole.packets, packetsBefore, 'no packets to the UDP endpoint on the remembered visit');
});

test('(g) the page reconnects after the server restarts', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer();
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('g');
  const context = await newContext(t, { origin: own.origin });
  const { page } = await openGame(context, `transport=auto&room=${room}`, { label: 'g', origin: own.origin, allowNetworkErrors: true });
  assert.equal((await state(page)).sessions, 1);
  await own.stop('SIGKILL');
  await page.waitForFunction(() => window.rally.status === 'reconnecting', null, { timeout: 5000 });
  // Same ports and certificate directory: the page's origin is unchanged.
  const again = await startServer({ port: own.tcpPort, certDir: own.certDir });
  t.after(() => again.stop());
  await page.waitForFunction(
    () => window.rally.status === 'connected' && window.rally.sessions === 2 && window.rally.lastSnapshot !== null,
    null,
    { timeout: 20_000 },
  );
  const s = await state(page);
  assert.ok(['webtransport', 'websocket'].includes(s.transport));
  assert.ok(s.lastSnapshot.players.some((p) => p.id === s.playerId), 'rejoined the room');
});

test('no console errors or uncaught page errors in any test', () => {
  assert.deepEqual(problems, []);
});
