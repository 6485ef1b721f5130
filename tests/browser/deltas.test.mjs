// Snapshot deltas in headless Chromium against the real server (dots):
// rally.js on WebTransport, WebSocket and HTTP streaming acknowledges
// snapshots, makes every delta whole, and shows the game exactly the state
// a client taking whole snapshots saw for the same tick (PROTOCOL.md §5.1).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchChromium, removeDir } from './harness.mjs';
import { newContext, openPage } from './pages.mjs';

let server = null;
let browser = null;

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

test('deltas made whole equal whole snapshots, tick by tick, on every transport', { timeout: 60_000 }, async (t) => {
  const room = `deltas-${process.pid}`;
  const ctx = await newContext(t, browser, server);
  const { page } = await openPage(ctx, server, '/dots', `transport=ws&room=${room}-page&name=host`);
  const got = await page.evaluate(async (room) => {
    const { connect } = await import('/client/rally.js');
    const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    const kinds = [
      ['whole', 'websocket', false],
      ['wt', 'webtransport', true],
      ['ws', 'websocket', true],
      ['http', 'http', true],
    ];
    const seen = {};
    const clients = [];
    for (const [name, transport, deltas] of kinds) {
      seen[name] = new Map();
      const c = await connect(undefined, {
        room, name, transport, deltas, locate: false, reconnect: false,
        onSnapshot: (s) => seen[name].set(s.tick, hex(s.payload)),
      });
      clients.push([name, c]);
    }
    // Everyone moves now and then, so the state changes.
    let n = 0;
    const timer = setInterval(() => {
      n++;
      clients.forEach(([, c], i) => c.sendInput(new Uint8Array([((n >> 4) + i) % 3 === 0 ? 1 << (i % 4) : 0])));
    }, 16);
    await new Promise((r) => setTimeout(r, 2500));
    clearInterval(timer);
    const out = {};
    for (const [name, c] of clients) {
      let compared = 0;
      let mismatched = 0;
      for (const [tick, p] of seen[name]) {
        const want = seen.whole.get(tick);
        if (want === undefined) continue;
        compared++;
        if (want !== p) mismatched++;
      }
      out[name] = { compared, mismatched, applied: c.stats.deltasApplied, ignored: c.stats.deltasIgnored, transport: c.transport };
      await c.close();
    }
    return out;
  }, room);
  console.log(`# ${JSON.stringify(got)}`);
  assert.equal(got.whole.applied, 0, 'deltas: false gets whole snapshots');
  for (const name of ['wt', 'ws', 'http']) {
    const g = got[name];
    assert.ok(g.compared > 80, `${name}: ${g.compared} ticks compared`);
    assert.equal(g.mismatched, 0, `${name}: every state equals the whole snapshot's`);
    assert.ok(g.applied > 80, `${name}: ${g.applied} deltas applied`);
    assert.equal(g.ignored, 0, name);
  }
  assert.equal(got.wt.transport, 'webtransport');
  assert.equal(got.http.transport, 'http');
});
