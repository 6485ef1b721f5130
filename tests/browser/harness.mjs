// Helpers for the browser tests: the real Rally server as a child process,
// headless Debian Chromium driven by playwright-core, and headless Debian
// Firefox ESR driven by puppeteer-core over WebDriver BiDi.

import { spawn, execFile } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync, mkdtempSync, createWriteStream, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname, extname, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import dgram from 'node:dgram';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '../..');
export const artifactsDir = join(here, 'artifacts');
export const clientDir = join(repoRoot, 'client');
export const rallyBin = process.env.RALLY_BIN || join(repoRoot, 'target/release/rally');
export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
/** The README's example game (`cargo test` builds it beside the server). */
export const raceBin = process.env.RACE_BIN || join(dirname(rallyBin), 'examples', 'race');

mkdirSync(artifactsDir, { recursive: true });

/** Throws (so tests fail, never skip) when something the tests need is missing. */
export function checkPrerequisites() {
  const missing = [];
  if (!existsSync(rallyBin)) missing.push(`server binary ${rallyBin} (build it: cargo build --release, or set RALLY_BIN)`);
  if (!existsSync(raceBin)) missing.push(`example ${raceBin} (build it: cargo build --release --example race, or set RACE_BIN)`);
  if (!existsSync(chromiumPath)) missing.push(`${chromiumPath} (apt-get install -y chromium; run.sh does this)`);
  if (missing.length) throw new Error(`missing prerequisites:\n  ${missing.join('\n  ')}`);
}

let serverCount = 0;

/**
 * Starts `rally serve --game GAME` on ephemeral ports (or the given one)
 * and resolves once it printed its `listening` line.
 */
export function startServer({ game = 'dots', port = 0, certDir = null, extraArgs = [], bin = null } = {}) {
  const dir = certDir || mkdtempSync(join(tmpdir(), 'rally-certs-'));
  const n = ++serverCount;
  const listen = ['--listen', `127.0.0.1:${port}`, '--tcp-listen', `127.0.0.1:${port}`, '--cert-dir', dir];
  // `bin`: a game's own server (the serve options only, no subcommand).
  const args = bin ? [...listen, ...extraArgs] : ['serve', ...listen, '--game', game, ...extraArgs];
  const program = bin || rallyBin;
  const proc = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env } });
  const log = createWriteStream(join(artifactsDir, `server-${process.pid}-${n}-${game}.log`));
  log.write(`$ ${program} ${args.join(' ')}\n`);
  proc.stderr.pipe(log, { end: false });
  let stderrTail = '';
  proc.stderr.on('data', (d) => {
    stderrTail = (stderrTail + d.toString()).slice(-4000);
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server printed no listening line within 20 s; stderr:\n${stderrTail}`));
    }, 20000);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}); stderr:\n${stderrTail}`));
    });
    const lines = createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      log.write(`[stdout] ${line}\n`);
      let ev;
      try {
        ev = JSON.parse(line);
      } catch {
        return;
      }
      if (ev.event !== 'listening') return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      const udpPort = Number(String(ev.udp).split(':').pop());
      const tcpPort = Number(String(ev.tcp).split(':').pop());
      const server = {
        proc,
        game,
        certDir: dir,
        udp: ev.udp,
        tcp: ev.tcp,
        udpPort,
        tcpPort,
        certSha256: ev.cert_sha256,
        origin: `http://127.0.0.1:${tcpPort}`,
        exited: new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal }))),
        /** Browser contexts with pages on this server (pages.mjs newContext). */
        contexts: new Set(),
        /**
         * Stops the server, first closing the pages on it (unless
         * `keepPages`): a page left open would log the server's going away
         * (reconnect attempts refused) as console errors.
         */
        async stop(signal = 'SIGTERM', { keepPages = false } = {}) {
          if (!keepPages) {
            for (const c of server.contexts) await c.close().catch(() => {});
            server.contexts.clear();
          }
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          proc.kill(signal);
          const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
          await server.exited;
          clearTimeout(t);
        },
      };
      resolvePromise(server);
    });
  });
}

/** Mints a join token with `rally token` (PROTOCOL.md §9). */
export function mintToken(secret, { room = null, ttl = '1h' } = {}) {
  const args = ['token', '--secret', secret, '--ttl', ttl, ...(room ? ['--room', room] : [])];
  return new Promise((resolvePromise, reject) => {
    execFile(rallyBin, args, (err, stdout, stderr) => {
      if (err) reject(new Error(`rally token failed: ${err.message}\n${stderr}`));
      else resolvePromise(stdout.trim());
    });
  });
}

/** A UDP socket that swallows everything: an unreachable WebTransport endpoint. */
export async function udpBlackHole() {
  const sock = dgram.createSocket('udp4');
  let packets = 0;
  sock.on('message', () => packets++);
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  return {
    port: sock.address().port,
    get packets() {
      return packets;
    },
    close: () => new Promise((r) => sock.close(r)),
  };
}

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Debian Chromium, never a downloaded browser. playwright-core's launch()
 * gives it a fresh temporary --user-data-dir each time.
 */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  const args = [...CHROMIUM_ARGS];
  // Responses fulfilled by the test (RALLY_CLIENT_FROM_DISK) carry no
  // address space, so Local Network Access would block the page's own
  // loopback connections; only that development mode turns the check off.
  if (process.env.RALLY_CLIENT_FROM_DISK === '1') args.push('--disable-features=LocalNetworkAccessChecks');
  return chromium.launch({ executablePath: chromiumPath, args, headless: true });
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
const PAGES = new Set(['dots', 'relay', 'shooter']);

/**
 * Development aid (RALLY_CLIENT_FROM_DISK=1): serve the game pages and
 * /client/* from the working tree instead of the copy embedded in the
 * server binary, so client edits can be tested without rebuilding: `/` and
 * `/GAME` are client/games/GAME.html, as the server routes them. Off by
 * default: the tests check what the binary really serves.
 */
export async function maybeServeClientFromDisk(context, origin, running) {
  if (!clientFromDisk) return;
  await context.route(`${origin}/**`, (route) => {
    const file = clientFileFor(route.request().url(), running);
    if (!file) return route.continue();
    return route.fulfill({ status: 200, contentType: file.contentType, body: file.body });
  });
}

export const clientFromDisk = process.env.RALLY_CLIENT_FROM_DISK === '1';

/** The working tree's file for a page or /client/ URL (RALLY_CLIENT_FROM_DISK), or null. */
export function clientFileFor(url, running) {
  const path = new URL(url).pathname;
  let file = null;
  if (path === '/') file = join(clientDir, 'games', `${running}.html`);
  else if (PAGES.has(path.slice(1))) file = join(clientDir, 'games', `${path.slice(1)}.html`);
  else if (path.startsWith('/client/')) file = normalize(join(clientDir, path.slice('/client/'.length)));
  if (!file || !file.startsWith(clientDir + sep) || !existsSync(file)) return null;
  return { contentType: TYPES[extname(file)] || 'application/octet-stream', body: readFileSync(file) };
}

export const firefoxPath = process.env.FIREFOX || '/usr/bin/firefox-esr';

/**
 * Debian Firefox ESR (never a downloaded browser), headless, driven by
 * puppeteer-core over WebDriver BiDi (no geckodriver).
 */
export async function launchFirefox() {
  if (!existsSync(firefoxPath)) throw new Error(`missing prerequisite: ${firefoxPath} (apt-get install -y firefox-esr; run.sh does this)`);
  const { default: puppeteer } = await import('puppeteer-core');
  return puppeteer.launch({ browser: 'firefox', executablePath: firefoxPath, headless: true });
}

export function removeDir(dir) {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort
  }
}
