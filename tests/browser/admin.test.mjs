// The admin page (`rally serve --admin-token`) in headless Chromium against
// the real server binary: opened with #token=..., it lists a WebSocket and a
// WebTransport player of real dots pages with their transport and a
// measured RTT, and its charts grow and follow the sessions without a
// reload; a wrong token shows the 401 message, and the password field
// recovers from it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchChromium, removeDir } from './harness.mjs';
import { problems, newContext, openPage } from './pages.mjs';

const TOKEN = 'admin-test-token-7f3a';
const TEST_TIMEOUT = 60_000;

let browser = null;
let server = null;

before(async () => {
  checkPrerequisites();
  browser = await launchChromium();
  server = await startServer({ game: 'dots', extraArgs: ['--admin-token', TOKEN] });
});

after(async () => {
  if (server) {
    await server.stop();
    removeDir(server.certDir);
  }
  if (browser) await browser.close();
  assert.deepEqual(problems, []);
});

/**
 * Opens the admin page with `fragment`; console errors are problems,
 * except `allow` (Chromium logs a refused fetch itself).
 */
async function openAdmin(context, fragment, { allow = null } = {}) {
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !(allow && allow.test(msg.text()))) problems.push(`[admin] console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`[admin] pageerror: ${err.message}`));
  await page.goto(`${server.origin}/admin${fragment}`);
  return page;
}

/** The players table: one entry per row with a player. */
function playerRows(page) {
  return page.$$eval('#players tbody tr[data-transport]', (rows) =>
    rows.map((tr) => {
      const cells = [...tr.querySelectorAll('td')].map((td) => td.textContent);
      return { transport: tr.dataset.transport, room: cells[0], name: cells[2], shown: cells[3], rtt: cells[4], jitter: cells[5] };
    }),
  );
}

const samples = (page, chart) => page.$eval(`#chart-${chart}`, (c) => Number(c.dataset.samples));

test('the admin page lists WebSocket and WebTransport players with RTT, and its charts update without a reload', { timeout: TEST_TIMEOUT }, async (t) => {
  const context = await newContext(t, browser, server);
  const admin = await openAdmin(context, `#token=${TOKEN}`);
  await admin.waitForFunction(() => window.admin && window.admin.updates >= 1, null, { timeout: 10_000 });
  // The token left the address bar for sessionStorage; it was never in a query string.
  assert.equal(new URL(admin.url()).hash, '');
  assert.equal(await admin.evaluate(() => sessionStorage.getItem('rally-admin-token')), TOKEN);
  assert.equal(await admin.isVisible('#notice'), false);
  await admin.evaluate(() => {
    window.loadedOnce = true;
  });

  const room = 'admin-room';
  await openPage(context, server, '/dots', `transport=ws&room=${room}&name=wsplayer`);
  await openPage(context, server, '/dots', `transport=wt&room=${room}&name=wtplayer`);

  // Both players, with their transports and a measured RTT (sampled once a second).
  await admin.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#players tbody tr[data-transport]')];
    return rows.length === 2 && rows.every((tr) => Number.isFinite(parseFloat(tr.querySelectorAll('td')[4].textContent)));
  }, null, { timeout: 15_000 });
  const rows = await playerRows(admin);
  const byTransport = Object.fromEntries(rows.map((r) => [r.transport, r]));
  assert.deepEqual(Object.keys(byTransport).sort(), ['websocket', 'webtransport']);
  assert.equal(byTransport.websocket.name, 'wsplayer');
  assert.equal(byTransport.webtransport.name, 'wtplayer');
  for (const r of rows) {
    assert.equal(r.room, room);
    assert.equal(r.shown, r.transport);
    const rtt = parseFloat(r.rtt);
    assert.ok(rtt > 0 && rtt < 1000, `${r.transport} RTT ${r.rtt}`);
    assert.ok(Number.isFinite(parseFloat(r.jitter)), `${r.transport} jitter ${r.jitter}`);
  }
  const roomsRow = await admin.$$eval('#rooms tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
  assert.deepEqual(roomsRow, [[room, 'dots', '2']]);
  const nodes = await admin.$$eval('#nodes tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
  assert.equal(nodes.length, 1);
  assert.match(nodes[0][0], /this node/);
  assert.equal(nodes[0][3], '2', 'two sessions');

  // The charts grow with each poll, in place, and the sessions chart
  // shows one session on each of the two transports.
  const first = { sessions: await samples(admin, 'sessions'), messages: await samples(admin, 'messages'), ticks: await samples(admin, 'ticks') };
  await admin.waitForFunction((n) => {
    const latest = JSON.parse(document.getElementById('chart-sessions').dataset.latest || '{}');
    const grown = ['sessions', 'messages', 'ticks'].every((c) => Number(document.getElementById(`chart-${c}`).dataset.samples) > n[c]);
    return grown && latest.WebTransport === 1 && latest.WebSocket === 1 && latest['HTTP streaming'] === 0;
  }, first, { timeout: 15_000 });
  const messages = await admin.$eval('#chart-messages', (c) => JSON.parse(c.dataset.latest));
  assert.ok(messages.out > 0, `messages out per second ${JSON.stringify(messages)}`);
  const ticks = await admin.$eval('#chart-ticks', (c) => JSON.parse(c.dataset.latest));
  assert.ok(ticks.p50 > 0 && ticks.p99 >= ticks.p50, `tick ms ${JSON.stringify(ticks)}`);
  const legend = await admin.$$eval('#legend-sessions li', (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(legend.map((l) => l.replace(/ [\d.–]+$/, '')), ['WebTransport', 'WebSocket', 'HTTP streaming']);
  // Drawn: the canvas is not blank.
  const inked = await admin.$eval('#chart-sessions', (c) => {
    const ctx = c.getContext('2d');
    const data = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n;
  });
  assert.ok(inked > 100, `${inked} pixels drawn`);
  // No reload happened: the page's own state survived every update.
  assert.equal(await admin.evaluate(() => window.loadedOnce), true);
  assert.equal(await admin.evaluate(() => performance.getEntriesByType('navigation').length), 1);
});

test('a wrong token shows the 401 message; the right one typed in opens the page', { timeout: TEST_TIMEOUT }, async (t) => {
  const context = await newContext(t, browser, server);
  const page = await openAdmin(context, '#token=wrong-token', { allow: /status of 401/ });
  await page.waitForFunction(() => window.admin && window.admin.status === 'unauthorized', null, { timeout: 10_000 });
  assert.match(await page.textContent('#notice'), /401/);
  assert.equal(await page.isVisible('#notice'), true);
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.evaluate(() => window.admin.updates), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('rally-admin-token')), null, 'a refused token is not kept');

  await page.fill('#token', TOKEN);
  await page.click('#login button');
  await page.waitForFunction(() => window.admin.updates >= 1 && window.admin.status === 'ok', null, { timeout: 10_000 });
  assert.equal(await page.isVisible('#notice'), false);
  assert.equal(await page.isVisible('#login'), false);
});
