// Driving the game pages in the browser tests: contexts, pages watched for
// console errors, the state each page mirrors on window.rally, and
// connection drops.

import { execFile } from 'node:child_process';
import { maybeServeClientFromDisk } from './harness.mjs';

/** Network errors a test provokes on purpose (server down, black hole) are not problems. */
const NET_ERROR = /net::ERR_|WebSocket connection to .* failed|Failed to load resource|WebTransport/i;

/**
 * Chromium itself logs a failed WebTransport handshake ("Failed to establish
 * a connection to URL: net::ERR_..."); page code cannot silence it. Tests
 * that aim WebTransport at a black hole on purpose accept exactly that line.
 */
export function blackHoleLine(port) {
  return new RegExp(`^Failed to establish a connection to https://127\\.0\\.0\\.1:${port}/rally: net::ERR_`);
}

/**
 * An init script (a function, for playwright's addInitScript and
 * puppeteer's evaluateOnNewDocument) that blocks WebSocket as a proxy that
 * strips `Upgrade` would: every socket fails at once, error then close
 * 1006, without a console error. `window.blockedWebSockets` counts them.
 */
export function BLOCK_WEBSOCKET() {
  window.blockedWebSockets = 0;
  class BlockedWebSocket extends EventTarget {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url) {
      super();
      window.blockedWebSockets++;
      this.url = String(url);
      this.readyState = 0;
      this.binaryType = 'blob';
      this.bufferedAmount = 0;
      this.protocol = '';
      this.extensions = '';
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      setTimeout(() => {
        this.readyState = 3;
        const error = new Event('error');
        this.onerror?.(error);
        this.dispatchEvent(error);
        const close = new CloseEvent('close', { code: 1006, reason: '', wasClean: false });
        this.onclose?.(close);
        this.dispatchEvent(close);
      }, 0);
    }
    send() {
      throw new DOMException('WebSocket is blocked', 'InvalidStateError');
    }
    close() {}
  }
  window.WebSocket = BlockedWebSocket;
}

/** Console errors and uncaught page errors of one test file, for its last test. */
export const problems = [];

/** A fresh browser context (own storage), closed when test `t` ends. */
export async function newContext(t, browser, server) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  t.after(() => context.close());
  server.contexts.add(context);
  await maybeServeClientFromDisk(context, server.origin, server.game);
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

/**
 * Opens `path` (e.g. '/dots') on `server` with `query`; resolves once the
 * page is connected (and, for games with snapshots, has one).
 */
export async function openPage(context, server, path, query, { label = `${path}?${query}`, allowNetworkErrors = false, allow = null, noWebTransport = false, blockWebSocket = false, snapshots = path !== '/relay', ready = true } = {}) {
  const page = await context.newPage();
  watchPage(page, label, { allowNetworkErrors, allow });
  if (noWebTransport) {
    await page.addInitScript(() => {
      delete window.WebTransport;
    });
  }
  if (blockWebSocket) await page.addInitScript(BLOCK_WEBSOCKET);
  const started = Date.now();
  await page.goto(`${server.origin}${path}?${query}`);
  if (ready) {
    await page.waitForFunction(
      (needSnapshot) => window.rally && window.rally.status === 'connected' && (!needSnapshot || window.rally.lastSnapshot !== null),
      snapshots,
      { timeout: 10_000 },
    );
  }
  return { page, elapsed: Date.now() - started };
}

/** The page's mirrored state, without the live objects. */
export function state(page) {
  return page.evaluate(() => {
    const { client, welcome, toPage, ...plain } = window.rally;
    return JSON.parse(JSON.stringify({
      ...plain,
      attempts: client ? client.attempts : [],
      welcome: welcome && { ...welcome, app: [...welcome.app], resumeToken: undefined },
    }));
  });
}

export const fmt = (s) => JSON.stringify({ transport: s.transport, fallbackReason: s.fallbackReason, attempts: s.attempts });

/**
 * Drops every established TCP connection from this machine to `port` with
 * a reset (ss -K: the kernel aborts the socket, the server sees a RST), as
 * a network failure would: WebSocket sessions end without a close frame
 * and the server keeps their players for resume (PROTOCOL.md §7).
 */
export function dropTcpTo(port) {
  return new Promise((resolve, reject) => {
    execFile('ss', ['-K', '-tn', 'state', 'established', `( dport = :${port} )`], (err, stdout, stderr) => {
      if (err) reject(new Error(`ss -K failed (needs root and CONFIG_INET_DIAG_DESTROY): ${err.message}\n${stderr}`));
      else resolve(stdout.split('\n').filter((l) => l.includes(`:${port}`)).length);
    });
  });
}
