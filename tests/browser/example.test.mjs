// The README's "Write your game" example, examples/race.rs with its page
// examples/race.html, in headless Chromium: the game's own server binary
// serves the page; one page on WebTransport and one on WebSocket race, and
// both see the same winner.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchChromium, removeDir, raceBin } from './harness.mjs';

let server = null;
let browser = null;

before(async () => {
  checkPrerequisites();
  server = await startServer({ bin: raceBin });
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    await server.stop();
    removeDir(server.certDir);
  }
});

async function racer(t, { noWebTransport = false } = {}) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  if (noWebTransport) await page.addInitScript(() => delete window.WebTransport);
  await page.goto(`${server.origin}/`);
  await page.waitForFunction(() => /^connected over/.test(document.getElementById('status').textContent), null, { timeout: 10_000 });
  return { page, errors };
}

test('the race example: two pages on two transports, one mashes space, both see it win', { timeout: 60_000 }, async (t) => {
  const a = await racer(t);
  const b = await racer(t, { noWebTransport: true });
  assert.equal(await a.page.textContent('#status'), 'connected over webtransport');
  assert.equal(await b.page.textContent('#status'), 'connected over websocket');
  assert.equal(await a.page.textContent('#goal'), '50');
  await a.page.keyboard.press('Space');
  await a.page.waitForFunction(() => /: 1$/.test(document.querySelector('.bar.me')?.textContent ?? ''), null, { timeout: 5000 });
  const name = (await a.page.textContent('.bar.me')).split(':')[0];
  // One press per input: a tick is 1/60 s, so 40 ms apart never merge two.
  for (let i = 1; i < 50; i++) {
    await a.page.keyboard.press('Space');
    await a.page.waitForTimeout(40);
  }
  for (const p of [a.page, b.page]) {
    await p.waitForFunction(() => document.getElementById('winner').textContent.endsWith('won!'), null, { timeout: 5000 });
    assert.equal(await p.textContent('#winner'), `${name} won!`);
  }
  assert.deepEqual([...a.errors, ...b.errors], []);
});
