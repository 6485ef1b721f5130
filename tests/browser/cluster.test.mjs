// Cluster mode in headless Chromium: two real nodes on a real redis-server
// (Debian's, started here on a free port). A page opened on one node for a
// room that lives on the other ends on the room's node, over WebTransport
// and over WebSocket, and its players share the room (PROTOCOL.md §13).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { checkPrerequisites, startServer, launchChromium, removeDir } from './harness.mjs';
import { newContext, openPage, state } from './pages.mjs';

const TEST_TIMEOUT = 60_000;

let redis = null;
let redisPort = 0;
const nodes = {};
let browser = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  redisPort = await freePort();
  const proc = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const failed = new Promise((_, reject) => proc.on('error', (e) => reject(new Error(`redis-server could not start (${e.message}): apt-get install redis-server (scripts/test.sh does)`))));
  const up = (async () => {
    for (let i = 0; i < 200; i++) {
      const ok = await new Promise((r) => {
        const c = net.connect(redisPort, '127.0.0.1', () => {
          c.end();
          r(true);
        });
        c.on('error', () => r(false));
      });
      if (ok) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not listen on ${redisPort}`);
  })();
  await Promise.race([up, failed]);
  return proc;
}

before(async () => {
  checkPrerequisites();
  redis = await startRedis();
  for (const id of ['n1', 'n2']) {
    nodes[id] = await startServer({ extraArgs: ['--redis', `redis://127.0.0.1:${redisPort}`, '--node-id', id, '--lease-ttl', '1500ms'] });
  }
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  for (const s of Object.values(nodes)) {
    await s.stop();
    removeDir(s.certDir);
  }
  if (redis) redis.kill('SIGKILL');
});

/** A fresh room that the cluster places on node `id` (asked through n1). */
async function roomOn(id, tag) {
  for (let i = 0; i < 40; i++) {
    const room = `${tag}-${process.pid}-${i}`;
    const v = await (await fetch(`${nodes.n1.origin}/rooms/${room}`)).json();
    if (v.node === id) return room;
  }
  throw new Error(`no room landed on ${id}`);
}

test('a page on one node joins a room on the other, over WebTransport and WebSocket, and both share it', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = await roomOn('n2', 'far');
  const ctx = await newContext(t, browser, nodes.n1);
  const wt = (await openPage(ctx, nodes.n1, '/dots', `transport=wt&room=${room}&name=wt`)).page;
  const ws = (await openPage(ctx, nodes.n1, '/dots', `transport=ws&room=${room}&name=ws`)).page;
  assert.equal((await state(wt)).transport, 'webtransport');
  assert.equal((await state(ws)).transport, 'websocket');
  for (const page of [wt, ws]) {
    assert.equal(await page.evaluate(() => window.rally.client.nodeUrl), nodes.n2.origin);
  }
  // The room runs on n2 alone, with both players.
  let listed = null;
  for (let i = 0; i < 50 && !listed; i++) {
    const v = await (await fetch(`${nodes.n1.origin}/rooms`)).json();
    listed = v.rooms.find((r) => r.name === room && r.players === 2) || null;
    if (!listed) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(listed, 'the room with two players in /rooms');
  assert.equal(listed.node, 'n2');
  const n1 = await (await fetch(`${nodes.n1.origin}/health`)).json();
  assert.equal(n1.rooms, 0, 'no copy of the room on n1');
});

test('a page joins a room on its own node there, with no detour', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = await roomOn('n1', 'near');
  const ctx = await newContext(t, browser, nodes.n1);
  const page = (await openPage(ctx, nodes.n1, '/dots', `transport=auto&room=${room}&name=near`)).page;
  assert.equal(await page.evaluate(() => window.rally.client.nodeUrl), nodes.n1.origin);
  assert.equal((await state(page)).transport, 'webtransport');
  // The pinned certificate hash came with the room's location.
  assert.equal(await page.evaluate(() => window.rally.client.certHashUsed), true);
});

test('without the lookup, the Redirect a node answers Hello with is followed, on every transport', { timeout: TEST_TIMEOUT }, async (t) => {
  const room = await roomOn('n2', 'redirect');
  const ctx = await newContext(t, browser, nodes.n1);
  const page = (await openPage(ctx, nodes.n1, '/dots', `transport=ws&room=${room}-page&name=host`)).page;
  for (const transport of ['webtransport', 'websocket', 'http']) {
    const got = await page.evaluate(async ([room, transport]) => {
      const { connect } = await import('/client/rally.js');
      const c = await connect(undefined, { room, name: transport.slice(0, 8), transport, locate: false, reconnect: false });
      const out = { nodeUrl: c.nodeUrl, transport: c.transport };
      await c.close();
      return out;
    }, [room, transport]);
    assert.deepEqual(got, { nodeUrl: nodes.n2.origin, transport }, transport);
  }
  const moved = (await (await fetch(`${nodes.n1.origin}/metrics`)).text()).match(/^rally_errors_total\{code="moved"\} (\d+)/m);
  assert.ok(moved && Number(moved[1]) >= 3, 'n1 counted the redirects');
});

test('when the room\'s node dies, the page finds the room placed anew on a live node and joins it afresh', { timeout: TEST_TIMEOUT }, async (t) => {
  // A third node to kill, so the file's other nodes stay up.
  const doomed = await startServer({ extraArgs: ['--redis', `redis://127.0.0.1:${redisPort}`, '--node-id', 'n3', '--lease-ttl', '1500ms'] });
  t.after(async () => {
    await doomed.stop('SIGKILL', { keepPages: true });
    removeDir(doomed.certDir);
  });
  const room = await roomOn('n3', 'phoenix');
  const ctx = await newContext(t, browser, nodes.n1);
  const { page } = await openPage(ctx, nodes.n1, '/dots', `transport=auto&room=${room}&name=phoenix`, { allowNetworkErrors: true });
  assert.equal(await page.evaluate(() => window.rally.client.nodeUrl), doomed.origin);
  const before = await page.evaluate(() => window.rally.client.sessions);
  const killedAt = Date.now();
  await doomed.stop('SIGKILL', { keepPages: true });
  await page.waitForFunction(
    ([n, origin]) => window.rally.client.sessions > n && window.rally.status === 'connected' && window.rally.client.nodeUrl !== origin,
    [before, doomed.origin],
    { timeout: 20_000 },
  );
  const took = Date.now() - killedAt;
  const now = await page.evaluate(() => ({ nodeUrl: window.rally.client.nodeUrl, resumed: window.rally.client.resumed }));
  assert.ok([nodes.n1.origin, nodes.n2.origin].includes(now.nodeUrl), now.nodeUrl);
  // The room's state died with its node: a fresh join, not a resume.
  assert.equal(now.resumed, false);
  const v = await (await fetch(`${nodes.n1.origin}/rooms/${room}`)).json();
  assert.notEqual(v.node, 'n3');
  console.log(`# page playing again on ${v.node} ${took} ms after its node was killed`);
});
