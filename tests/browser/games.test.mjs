// The three game pages in headless Chromium against real servers (one per
// game): dots chat across transports, names kept over a resume, typing
// that does not steer; relay cursors and stamps; a shooter shooting
// another; and a page for a game the server does not run.
//
// Pairs of pages always mix transports: one on WebTransport, one on
// WebSocket, so every scenario crosses between them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchChromium, removeDir } from './harness.mjs';
import { problems, newContext, openPage, state, dropTcpTo } from './pages.mjs';

const TEST_TIMEOUT = 60_000;

const servers = {};
let browser = null;
let roomSeq = 0;

function freshRoom(tag) {
  return `${tag}-${process.pid}-${++roomSeq}`;
}

before(async () => {
  checkPrerequisites();
  for (const game of ['dots', 'relay', 'shooter']) servers[game] = await startServer({ game });
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  for (const s of Object.values(servers)) {
    await s.stop();
    removeDir(s.certDir);
  }
});

/** Opens `/game` on `srv` in a context of its own (default: the server of that game). */
async function open(t, game, query, opts = {}, srv = servers[game]) {
  const context = await newContext(t, browser, srv);
  return (await openPage(context, srv, `/${game}`, query, opts)).page;
}

/** Types `text` into the dots chat field and sends it with Enter. */
async function say(page, text) {
  await page.bringToFront();
  await page.click('#chat-text');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

/** Waits until `page`'s chat shows `text` from `name`. */
function heard(page, name, text) {
  return page.waitForFunction(([n, x]) => window.rally.chat.some((c) => c.name === n && c.text === x), [name, text], { timeout: 5000 });
}

async function sessionsOpened(srv) {
  const m = (await (await fetch(`${srv.origin}/health`)).json()).metrics;
  return m.websocket.sessions_opened + m.webtransport.sessions_opened;
}

test('dots chat between a WebTransport page and a WebSocket page, names and all', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('chat');
  const ann = await open(t, 'dots', `transport=wt&room=${room}&name=ann`);
  const bob = await open(t, 'dots', `transport=ws&room=${room}&name=bob`);
  assert.equal((await state(ann)).transport, 'webtransport');
  assert.equal((await state(bob)).transport, 'websocket');
  await say(ann, 'hello from WebTransport ☃');
  await heard(bob, 'ann', 'hello from WebTransport ☃');
  await heard(ann, 'ann', 'hello from WebTransport ☃'); // the server sends every player the line, the sender included
  await say(bob, 'hi from WebSocket');
  await heard(ann, 'bob', 'hi from WebSocket');
  assert.match(await ann.textContent('#chat-log'), /bob: hi from WebSocket/);
  assert.equal(await ann.inputValue('#chat-text'), '', 'the field empties once sent');
});

test('typing WASD in the chat field does not move the dot; the same keys outside it do', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('typing');
  const page = await open(t, 'dots', `transport=auto&room=${room}&name=typist`);
  const me = (await state(page)).playerId;
  const x0 = (await state(page)).players[me].x;
  const ack0 = (await state(page)).lastSnapshot.ackSeq;
  await page.bringToFront();
  await page.click('#chat-text');
  await page.keyboard.type('wasd dad was sad');
  await page.keyboard.down('KeyD');
  await page.waitForTimeout(500);
  await page.keyboard.up('KeyD');
  await page.waitForFunction((a) => window.rally.lastSnapshot.ackSeq > a + 20, ack0, { timeout: 5000 });
  const typed = await state(page);
  assert.equal(typed.players[me].x, x0, 'inputs were sent and applied, and none moved the dot');
  assert.match(await page.inputValue('#chat-text'), /^wasd dad was sadd+$/);
  // Control: with the focus on the page, D steers.
  await page.click('#arena');
  const key = x0 < 480 ? 'KeyD' : 'KeyA';
  await page.keyboard.down(key);
  await page.waitForFunction(([id, x]) => Math.abs(window.rally.players[id].x - x) > 10, [me, x0], { timeout: 5000 });
  await page.keyboard.up(key);
});

test('names survive a resume: the roster is not sent again, and the page keeps it', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('names');
  const ann = await open(t, 'dots', `transport=ws&room=${room}&name=ann`, { allowNetworkErrors: true }, own);
  // Bob is on WebTransport, which the TCP reset below leaves alone.
  const bob = await open(t, 'dots', `transport=wt&room=${room}&name=bob`, {}, own);
  const bobId = (await state(bob)).playerId;
  await ann.waitForFunction((id) => window.rally.names[id] === 'bob', bobId, { timeout: 5000 });
  assert.ok((await dropTcpTo(own.tcpPort)) >= 1);
  await ann.waitForFunction(() => window.rally.sessions === 2 && window.rally.status === 'connected', null, { timeout: 10_000 });
  const tick = (await state(ann)).serverTick;
  await ann.waitForFunction((tk) => window.rally.serverTick > tk, tick, { timeout: 5000 });
  const s = await state(ann);
  assert.equal(s.resumed, true);
  assert.equal(s.names[bobId], 'bob');
  assert.equal(s.players[bobId].name, 'bob', 'a snapshot after the resume still names bob');
  await say(bob, 'still there?');
  await heard(ann, 'bob', 'still there?');
});

test('relay: a WebTransport page and a WebSocket page see each other\'s cursor and stamps', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = freshRoom('relay');
  const ann = await open(t, 'relay', `transport=wt&room=${room}&name=ann`);
  const bob = await open(t, 'relay', `transport=ws&room=${room}&name=bob`);
  const annId = (await state(ann)).playerId;
  const bobId = (await state(bob)).playerId;
  assert.equal((await state(ann)).transport, 'webtransport');
  for (const [from, fromId, to, point] of [[ann, annId, bob, [0.25, 0.4]], [bob, bobId, ann, [0.7, 0.6]]]) {
    const p = await from.evaluate(([x, y]) => window.rally.toPage(x, y), point);
    await from.bringToFront();
    await from.mouse.move(p.x - 30, p.y - 30);
    await from.mouse.move(p.x, p.y, { steps: 5 });
    await to.waitForFunction(
      ([id, [x, y]]) => {
        const c = window.rally.cursors[id];
        return c && Math.abs(c.x - x) < 0.01 && Math.abs(c.y - y) < 0.01;
      },
      [fromId, point],
      { timeout: 5000 },
    );
    await from.mouse.down();
    await from.mouse.up();
    await to.waitForFunction(
      ([id, [x, y]]) => window.rally.stamps.some((s) => s.from === id && Math.abs(s.x - x) < 0.01 && Math.abs(s.y - y) < 0.01),
      [fromId, point],
      { timeout: 5000 },
    );
  }
  // Stamps are reliable (App), cursors unreliable (AppUnreliable): on WebTransport they came as datagrams.
  const a = await ann.evaluate(() => window.rally.client.stats);
  assert.ok(a.appUnreliableReceived > 0 && a.appReceived === 1, JSON.stringify(a));
  assert.equal((await state(ann)).stamps.length, 2, "ann keeps her own stamp and bob's");
});

test('an unreliable message too big for a datagram travels on the WebTransport stream, both ways (PROTOCOL.md §1)', { timeout: TEST_TIMEOUT }, async (t) => {
  const own = await startServer({ game: 'relay', extraArgs: ['--max-client-message', '3000'] });
  t.after(async () => {
    await own.stop();
    removeDir(own.certDir);
  });
  const room = freshRoom('big');
  const ann = await open(t, 'relay', `transport=wt&room=${room}&name=ann`, {}, own);
  const bob = await open(t, 'relay', `transport=wt&room=${room}&name=bob`, {}, own);
  // The test's own server stops before the pages close (t.after hooks run
  // in order), and a WebSocket page then logs its refused reconnect.
  const cat = await open(t, 'relay', `transport=ws&room=${room}&name=cat`, { allowNetworkErrors: true }, own);
  assert.equal((await state(ann)).welcome.maxMessage, 3000);
  const received = (page) => page.evaluate(() => window.rally.client.stats.appUnreliableReceived);
  const [bob0, cat0] = [await received(bob), await received(cat)];
  // 2001 bytes: no QUIC datagram is that large (Chromium allowed 1024 here).
  await ann.evaluate(() => window.rally.client.send(new Uint8Array(2000).fill(7), { reliable: false }));
  await bob.waitForFunction((n) => window.rally.client.stats.appUnreliableReceived > n, bob0, { timeout: 5000 });
  await cat.waitForFunction((n) => window.rally.client.stats.appUnreliableReceived > n, cat0, { timeout: 5000 });
});

test('shooter: one page shoots the other; the victim\'s health drops and the kill feed shows the kill', { timeout: 90_000 }, async (t) => {
  const room = freshRoom('shoot');
  const hunter = await open(t, 'shooter', `transport=wt&room=${room}&name=hunter`);
  const target = await open(t, 'shooter', `transport=ws&room=${room}&name=target`);
  const hunterId = (await state(hunter)).playerId;
  const targetId = (await state(target)).playerId;
  const world = (await state(hunter)).world;
  assert.ok(world && world.viewRadius > 0 && world.maxHealth > 0, JSON.stringify(world));

  await hunter.bringToFront();
  // Walk towards the target until it is well inside the view radius.
  for (let i = 0; ; i++) {
    const h = (await state(hunter)).self;
    const v = (await state(target)).self;
    const dx = v.x - h.x;
    const dy = v.y - h.y;
    if (Math.hypot(dx, dy) < world.viewRadius * 0.5) break;
    assert.ok(i < 100, 'could not get close to the target');
    const keys = [];
    if (Math.abs(dx) > world.playerRadius) keys.push(dx > 0 ? 'KeyD' : 'KeyA');
    if (Math.abs(dy) > world.playerRadius) keys.push(dy > 0 ? 'KeyS' : 'KeyW');
    for (const k of keys) await hunter.keyboard.down(k);
    await hunter.waitForTimeout(150);
    for (const k of keys) await hunter.keyboard.up(k);
  }
  await hunter.waitForFunction((id) => window.rally.players[id], targetId, { timeout: 5000 });

  // Aim with the mouse at the target (where the hunter sees it) and hold the button down.
  const aimAt = async () => {
    const v = (await state(hunter)).players[targetId];
    if (!v) return;
    const p = await hunter.evaluate(([x, y]) => window.rally.toPage(x, y), [v.x, v.y]);
    await hunter.mouse.move(p.x, p.y);
  };
  await aimAt();
  await hunter.mouse.down();
  try {
    await target.waitForFunction(() => window.rally.health < window.rally.maxHealth, null, { timeout: 10_000 });
    t.diagnostic(`target health ${(await state(target)).health} of ${world.maxHealth}`);
    const deadline = Date.now() + 30_000;
    while (!(await state(target)).kills.some((k) => k.victim === targetId)) {
      assert.ok(Date.now() < deadline, 'no kill within 30 s of hits');
      await aimAt();
      await hunter.waitForTimeout(100);
    }
  } finally {
    await hunter.mouse.up();
  }
  const feed = (await state(hunter)).kills.find((k) => k.victim === targetId);
  assert.deepEqual([feed.killer, feed.killerName, feed.victimName], [hunterId, 'hunter', 'target']);
  assert.match(await hunter.textContent('#feed'), /hunter ✕ target/);
  assert.ok((await state(hunter)).score >= 1, 'the kill scores');
  await target.waitForFunction(() => window.rally.respawnIn > 0 || window.rally.health === window.rally.maxHealth, null, { timeout: 5000 });
});

test('a page for a game the server does not run says which game runs and how to start the right one; it never connects', { timeout: TEST_TIMEOUT }, async (t) => {
  const srv = servers.relay;
  const before = await sessionsOpened(srv);
  const page = await open(t, 'dots', `room=${freshRoom('wrong')}`, { ready: false }, srv);
  await page.waitForFunction(() => window.rally.status === 'wrong-game', null, { timeout: 5000 });
  const notice = await page.textContent('#notice');
  assert.match(notice, /This server runs relay, not dots/);
  assert.match(notice, /rally serve --game dots/);
  assert.equal(await page.isVisible('#notice'), true);
  assert.equal(await page.getAttribute('#notice a', 'href'), `/relay?room=${new URL(page.url()).searchParams.get('room')}`);
  assert.equal((await state(page)).running, 'relay');
  await page.waitForTimeout(500);
  assert.equal(await sessionsOpened(srv), before, 'no session was opened');
});

test('GET / is the page of the game the server runs', { timeout: TEST_TIMEOUT }, async (t) => {
  for (const game of ['relay', 'shooter']) {
    const srv = servers[game];
    const context = await newContext(t, browser, srv);
    const { page } = await openPage(context, srv, '/', `room=${freshRoom('root')}`, { snapshots: game !== 'relay' });
    assert.equal((await state(page)).game, game);
    assert.equal((await state(page)).welcome.game, game);
  }
});

test('no console errors or uncaught page errors in any test', () => {
  assert.deepEqual(problems, []);
});
