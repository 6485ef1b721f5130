// Dead servers in headless Chromium (PROTOCOL.md §7.3), against the real
// server binary: a server frozen with SIGSTOP sends no close, so only the
// client's silence watchdog (watchdogMs, 2 s) can notice it; a server
// killed with SIGKILL and restarted on the same port 2 s later must be
// played on again. Each case runs on WebTransport and on WebSocket, on a
// server of its own.
//
// The figures printed are BENCHMARKS.md's "Dead server detection".

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkPrerequisites, startServer, launchChromium, removeDir } from './harness.mjs';
import { problems, newContext, openPage, state } from './pages.mjs';

const TEST_TIMEOUT = 60_000;
const WATCHDOG_MS = 2000;

let browser = null;

before(async () => {
  checkPrerequisites();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  assert.deepEqual(problems, []);
});

async function ownServer(t) {
  const own = await startServer({ game: 'dots' });
  t.after(async () => {
    own.proc.kill('SIGCONT');
    await own.stop('SIGKILL');
    removeDir(own.certDir);
  });
  return own;
}

/** Resolves with the ms from `since` until the page's client leaves 'connected'. */
async function noticed(page, since) {
  await page.waitForFunction(() => window.rally.status !== 'connected', null, { timeout: 15_000, polling: 20 });
  return Date.now() - since;
}

/** Resolves once the page plays on session `n`: connected, a snapshot showing its own dot. */
async function playing(page, n, timeout = 20_000) {
  await page.waitForFunction(
    (sessions) => window.rally.status === 'connected' && window.rally.sessions === sessions && window.rally.lastSnapshot !== null && window.rally.players[window.rally.playerId],
    n,
    { timeout, polling: 20 },
  );
}

for (const [label, transport] of [['WebTransport', 'webtransport'], ['WebSocket', 'ws']]) {
  test(`${label}: a frozen server (SIGSTOP, no close) is noticed by the watchdog; thawed, it resumes the player`, { timeout: TEST_TIMEOUT }, async (t) => {
    const own = await ownServer(t);
    const context = await newContext(t, browser, own);
    const { page } = await openPage(context, own, '/dots', `transport=${transport}&room=stop&name=frozen`, { label: `stop-${transport}`, allowNetworkErrors: true });
    const before = await state(page);
    assert.equal(before.transport, transport === 'ws' ? 'websocket' : 'webtransport');
    own.proc.kill('SIGSTOP');
    const stopped = Date.now();
    const ms = await noticed(page, stopped);
    console.log(`# Chromium ${label} SIGSTOP: noticed after ${(ms / 1000).toFixed(2)} s`);
    // Not before the window (no false alarm), not long after it.
    assert.ok(ms >= WATCHDOG_MS - 100 && ms <= WATCHDOG_MS + 1500, `noticed after ${ms} ms`);
    own.proc.kill('SIGCONT');
    await playing(page, 2);
    const s = await state(page);
    assert.equal(s.resumed, true, 'the thawed server still kept the player');
    assert.equal(s.playerId, before.playerId);
  });

  test(`${label}: a killed server restarted on the same port 2 s later is played on again`, { timeout: TEST_TIMEOUT }, async (t) => {
    const own = await ownServer(t);
    const context = await newContext(t, browser, own);
    const { page } = await openPage(context, own, '/dots', `transport=${transport}&room=kill&name=killed`, { label: `kill-${transport}`, allowNetworkErrors: true });
    own.proc.kill('SIGKILL');
    const killed = Date.now();
    const restarted = new Promise((resolve) => setTimeout(resolve, 2000)).then(() =>
      startServer({ game: 'dots', port: own.tcpPort, certDir: own.certDir }),
    );
    t.after(async () => (await restarted).stop('SIGKILL'));
    const ms = await noticed(page, killed);
    await restarted;
    await playing(page, 2);
    const again = Date.now() - killed;
    console.log(`# Chromium ${label} SIGKILL + restart 2 s later: noticed after ${(ms / 1000).toFixed(2)} s, playing again after ${(again / 1000).toFixed(2)} s`);
    assert.ok(ms <= WATCHDOG_MS + 1500, `noticed after ${ms} ms`);
    assert.ok(again < 12_000, `playing again after ${again} ms`);
    assert.equal((await state(page)).resumed, false, 'the restarted server had no player to resume');
  });
}
