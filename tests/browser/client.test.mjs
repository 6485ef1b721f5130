// client/rally.js connection logic in plain Node, against scripted fake
// WebSocket, WebTransport and HTTP streaming (a fake fetch) servers: the
// three-tier transport race, fallback reasons,
// the remembered winner, input redundancy and limits, latest-only
// snapshots, application messages, reconnect, resume with the replay of
// reliable messages, and no-retry errors. Deterministic and fast; the real
// browser and server are exercised in browser.test.mjs.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  connect, encodeFrame, FrameDecoder, RallyError, planAuto, encodeHello, encodeInput, encodeApp, encodePing,
} from '../../client/rally.js';
import { HttpLink } from '../../client/link.js';
import {
  welcomeBytes, joinedBytes, leftBytes, snapshotBytes, pongBytes, errorBytes, appBytes, parseClient, RESUME_TOKEN,
} from './fixtures.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

const text = (s) => new Uint8Array(Buffer.from(s));
const str = (u8) => Buffer.from(u8).toString();

// ---------------------------------------------------------------------------
// What the fake server answers (shared by both fake transports)
// ---------------------------------------------------------------------------

const server = {
  /** Welcome fields (fixtures.welcomeBytes options). */
  welcome: {},
  /** Answer Resume with resume_failed. */
  refuseResume: false,
  /** Welcome.client_seq after a Resume: how many App messages "the game" has. */
  clientSeq: 0,
  /** Answer Hello/Resume at all. */
  answer: true,
};

/** The fake server's reply to a client message on the reliable channel, or []. */
function reply(msg) {
  if (!server.answer) return [];
  if (msg.type === 'hello') return [welcomeBytes(server.welcome), joinedBytes(7, 'me')];
  if (msg.type === 'resume') {
    if (server.refuseResume) return [errorBytes(16, 'unknown token')];
    return [welcomeBytes({ ...server.welcome, reliableSeq: msg.lastSeq, clientSeq: server.clientSeq })];
  }
  return [];
}

// ---------------------------------------------------------------------------
// Fake WebSocket: `script` decides how each new socket behaves.
// ---------------------------------------------------------------------------

class FakeWebSocket {
  static all = [];
  /** (ws) => void, run on construction; default: open at once. */
  static script = (ws) => setTimeout(() => ws.serverOpen(), 1);

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.binaryType = 'blob';
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.all.push(this);
    FakeWebSocket.script(this);
  }
  send(data) {
    const msg = parseClient(new Uint8Array(data));
    this.sent.push(msg);
    const out = reply(msg);
    if (out.length) setTimeout(() => out.forEach((m) => this.serverSend(m)), 1);
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? '' }), 0);
  }
  serverOpen() {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.onopen?.({});
  }
  serverSend(bytes) {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  serverClose(code, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  of(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

// ---------------------------------------------------------------------------
// Fake WebTransport: one bidi stream of frames, datagrams both ways.
// ---------------------------------------------------------------------------

class FakeWebTransport {
  static all = [];
  /** (wt) => void; default: ready at once. */
  static script = (wt) => wt.serverReady();

  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.frames = []; // client → server messages on the stream, parsed
    this.datagramsSent = []; // parsed
    this.closeCalled = null;
    this.decoder = new FrameDecoder();
    this.ready = new Promise((res, rej) => {
      this.markReady = res;
      this.failReady = rej;
    });
    this.closed = new Promise((res, rej) => {
      this.markClosed = res;
      this.failClosed = rej;
    });
    let dgCtl;
    const self = this;
    this.datagrams = {
      maxDatagramSize: 1200,
      readable: new ReadableStream({ start: (c) => (dgCtl = c) }),
      createWritable() {
        return new WritableStream({ write: (chunk) => self.datagramsSent.push(parseClient(new Uint8Array(chunk))) });
      },
    };
    this.dgCtl = dgCtl;
    FakeWebTransport.all.push(this);
    FakeWebTransport.script(this);
  }
  serverReady() {
    this.markReady();
  }
  serverFail(message) {
    const err = new Error(message);
    this.failReady(err);
    this.failClosed(err);
  }
  async createBidirectionalStream() {
    let ctl;
    const readable = new ReadableStream({ start: (c) => (ctl = c) });
    this.streamCtl = ctl;
    const writable = new WritableStream({
      write: (chunk) => {
        for (const bytes of this.decoder.push(chunk)) {
          const msg = parseClient(bytes);
          this.frames.push(msg);
          const out = reply(msg);
          if (out.length) setTimeout(() => out.forEach((m) => this.serverStream(m)), 1);
        }
      },
    });
    return { readable, writable };
  }
  /** Sends one message on the stream, optionally split into two reads. */
  serverStream(bytes, split = false) {
    const f = encodeFrame(bytes);
    if (split) {
      this.streamCtl.enqueue(f.slice(0, 1));
      this.streamCtl.enqueue(f.slice(1));
    } else {
      this.streamCtl.enqueue(f);
    }
  }
  serverDatagram(bytes) {
    this.dgCtl.enqueue(bytes);
  }
  close(info) {
    this.closeCalled = info || {};
    this.failReady(new Error('closed'));
    this.markClosed(info || {});
  }
  of(type) {
    return this.frames.filter((m) => m.type === type);
  }
}

// ---------------------------------------------------------------------------
// Fake HTTP streaming server (PROTOCOL.md §11) behind a fake fetch.
// ---------------------------------------------------------------------------

class FakeHttp {
  static sessions = [];
  /** (session) => void on each GET; default: nothing (200 with a stream). */
  static onOpen = () => {};
  /** GET status to answer instead of opening a session (e.g. 401), or 0. */
  static refuse = 0;
  /** Never answer the GET (a proxy that holds it). */
  static hang = false;
  /** ({ session, n, body, attempt }) => status | 'fail' | 'hang' | undefined (undefined: handle normally). */
  static onPost = () => undefined;

  constructor(url) {
    this.url = url;
    this.id = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
    this.posts = []; // every POST: { n, frames: parsed messages, status }
    this.taken = 0; // last POST number applied
    this.messages = []; // client messages applied, parsed, in order
    this.ended = false;
    this.stream = new ReadableStream({ start: (c) => (this.ctl = c) });
    FakeHttp.sessions.push(this);
  }
  /** Sends one server message on the stream, optionally split across two reads. */
  serverSend(bytes, split = false) {
    if (this.ended) return;
    const f = encodeFrame(bytes);
    if (split) {
      this.ctl.enqueue(f.slice(0, 1));
      this.ctl.enqueue(f.slice(1));
    } else {
      this.ctl.enqueue(f);
    }
  }
  /** Ends the stream (the session is over; POSTs get 404). */
  serverEnd() {
    if (this.ended) return;
    this.ended = true;
    this.ctl.close();
  }
  /** The stream fails, as when the TCP connection is reset. */
  serverReset() {
    if (this.ended) return;
    this.ended = true;
    this.ctl.error(new TypeError('network error'));
  }
  of(type) {
    return this.messages.filter((m) => m.type === type);
  }
  /** Handles POST number n with its body; returns the status. */
  take(n, body) {
    if (this.ended) return 404;
    if (n <= this.taken) return 204; // a retry of a POST already taken
    if (n !== this.taken + 1) return 409;
    this.taken = n;
    for (const bytes of new FrameDecoder().push(body)) {
      const msg = parseClient(bytes);
      this.messages.push(msg);
      const out = reply(msg);
      if (out.length) setTimeout(() => out.forEach((m) => this.serverSend(m)), 1);
      if (msg.type === 'leave') setTimeout(() => this.serverEnd(), 1);
    }
    return 204;
  }
}

/** fetch() for /rally/http and /rally/http/ID?seq=N; null for other URLs. */
async function fakeHttpFetch(url, init = {}) {
  const u = new URL(url);
  const signal = init.signal;
  const aborted = () => new DOMException('The operation was aborted.', 'AbortError');
  if (signal?.aborted) throw aborted();
  if (u.pathname === '/rally/http' && (init.method || 'GET') === 'GET') {
    if (FakeHttp.hang) {
      return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(aborted())));
    }
    if (FakeHttp.refuse) return new Response('no', { status: FakeHttp.refuse });
    const s = new FakeHttp(url);
    s.init = init;
    signal?.addEventListener('abort', () => {
      if (!s.ended) {
        s.ended = true;
        s.clientAborted = true;
        try {
          s.ctl.error(aborted());
        } catch {
          // already errored
        }
      }
    });
    FakeHttp.onOpen(s);
    return new Response(s.stream, { status: 200, headers: { 'rally-session': s.id, 'content-type': 'application/octet-stream' } });
  }
  const m = /^\/rally\/http\/([0-9a-f]{32})$/.exec(u.pathname);
  if (m && init.method === 'POST') {
    const s = FakeHttp.sessions.find((x) => x.id === m[1]);
    const n = Number(u.searchParams.get('seq'));
    const body = new Uint8Array(init.body);
    const post = { n, body, frames: new FrameDecoder().push(body).map((b) => parseClient(b)), headers: init.headers, keepalive: init.keepalive, status: 0 };
    if (!s) return new Response('no such session', { status: (post.status = 404) });
    post.attempt = s.posts.filter((p) => p.n === n).length + 1;
    s.posts.push(post);
    const scripted = await FakeHttp.onPost({ session: s, n, body, attempt: post.attempt });
    if (scripted === 'fail') throw new TypeError('Failed to fetch');
    if (scripted === 'hang') return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(aborted())));
    if (scripted === 'lost') {
      // Taken by the server, but the answer never arrives.
      s.take(n, body);
      throw new TypeError('Failed to fetch');
    }
    post.status = typeof scripted === 'number' ? scripted : s.take(n, body);
    return new Response(post.status === 204 ? null : 'x', { status: post.status });
  }
  return null;
}

const storage = new Map();
const fetches = [];
const CERT_HEX = 'ab'.repeat(32);

beforeEach(() => {
  FakeWebSocket.all = [];
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverOpen(), 1);
  FakeWebTransport.all = [];
  FakeWebTransport.script = (wt) => wt.serverReady();
  Object.assign(server, { welcome: {}, refuseResume: false, clientSeq: 0, answer: true });
  storage.clear();
  fetches.length = 0;
  globalThis.WebSocket = FakeWebSocket;
  globalThis.WebTransport = FakeWebTransport;
  globalThis.localStorage = {
    getItem: (k) => (storage.has(k) ? storage.get(k) : null),
    setItem: (k, v) => storage.set(k, String(v)),
  };
  FakeHttp.sessions = [];
  FakeHttp.onOpen = () => {};
  FakeHttp.refuse = 0;
  FakeHttp.hang = false;
  FakeHttp.onPost = () => undefined;
  globalThis.fetch = async (url, init) => {
    fetches.push(url);
    const http = await fakeHttpFetch(url, init);
    if (http) return http;
    return { ok: true, json: async () => ({ algorithm: 'sha-256', hex: CERT_HEX, not_after_unix: Date.now() / 1000 + 86400 }) };
  };
});

const FAST = {
  headStartMs: 30, webTransportTimeoutMs: 150, webSocketTimeoutMs: 500, httpHeadStartMs: 60, httpTimeoutMs: 500,
  reconnectBaseMs: 10, reconnectMaxMs: 40, pingIntervalMs: 10_000,
};
const URL_ = 'http://127.0.0.1:4433';
const WS = { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann' };

function collect() {
  const seen = { snapshots: [], events: [], statuses: [], messages: [], lost: [] };
  return {
    seen,
    handlers: {
      onSnapshot: (s, info) => seen.snapshots.push({ ...s, channel: info.channel }),
      onEvent: (e) => seen.events.push(e),
      onStatus: (s) => seen.statuses.push(s.state + (s.fallbackUpdated ? '*' : '')),
      onMessage: (payload, info) => seen.messages.push({ text: str(payload), ...info }),
      onLost: (n) => seen.lost.push(n),
    },
  };
}

test('websocket: Hello with the app bytes first; Welcome v2 fields; inputs carry the last 4 newest first; pings measure RTT', async () => {
  const { seen, handlers } = collect();
  server.welcome = { game: 'dots', app: Uint8Array.of(1, 2, 3), maxInput: 4 };
  const client = await connect(URL_, { ...WS, app: Uint8Array.of(9, 9), ...handlers });
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url, 'ws://127.0.0.1:4433/rally');
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.deepEqual(ws.sent[0], { type: 'hello', version: 2, room: 'lobby', name: 'ann', app: Uint8Array.of(9, 9) });
  assert.equal(client.transport, 'websocket');
  assert.equal(client.fallbackReason, 'WebSocket requested');
  assert.equal(client.playerId, 7);
  assert.equal(client.welcome.game, 'dots');
  assert.deepEqual(client.welcome.app, Uint8Array.of(1, 2, 3));
  assert.equal(client.resumed, false);
  await until(() => seen.events.length === 1, 'PlayerJoined');
  assert.deepEqual(seen.events[0], { type: 'player_joined', playerId: 7, name: 'me' });

  const seqs = [[1], [2, 2], [], [4], [5, 5, 5, 5], [6]].map((b) => client.sendInput(Uint8Array.from(b)));
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  const inputs = ws.of('input');
  assert.deepEqual(inputs[0], { type: 'input', ack: 0, newestSeq: 1, inputs: [[1]] });
  assert.deepEqual(inputs[2], { type: 'input', ack: 0, newestSeq: 3, inputs: [[], [2, 2], [1]] });
  assert.deepEqual(inputs[5], { type: 'input', ack: 0, newestSeq: 6, inputs: [[6], [5, 5, 5, 5], [4], []] });
  assert.deepEqual(client.unackedInputs(4).map((i) => [i.seq, [...i.bytes]]), [[5, [5, 5, 5, 5]], [6, [6]]]);
  assert.equal(client.inputSeq, 6);

  const ping = ws.of('ping')[0];
  assert.ok(ping, 'Ping sent on connect');
  await sleep(5);
  ws.serverSend(pongBytes(ping.clientTimeUs));
  assert.ok(client.rtt >= 4, `rtt ${client.rtt}`);
  await client.close();
});

test('input and message limits come from Welcome: RangeError beyond max_input / max_message; redundancy shrinks to fit', async () => {
  server.welcome = { maxMessage: 64, maxInput: 20 };
  const client = await connect(URL_, WS);
  const ws = FakeWebSocket.all[0];
  assert.throws(() => client.sendInput(new Uint8Array(21)), RangeError);
  assert.throws(() => client.sendInput([1]), TypeError);
  assert.equal(client.inputSeq, 0, 'a refused input takes no number');
  // 6 + 3 × (1 + 20) = 69 > 64: only two 20-byte inputs fit one message.
  for (let i = 0; i < 3; i++) client.sendInput(new Uint8Array(20).fill(i));
  assert.deepEqual(ws.of('input').map((m) => m.inputs.length), [1, 2, 2]);
  assert.equal(ws.of('input')[2].inputs[0][0], 2, 'newest first');
  // A message is 1 + payload bytes.
  assert.equal(client.send(new Uint8Array(63)), 1);
  assert.throws(() => client.send(new Uint8Array(64)), RangeError);
  assert.throws(() => client.send(new Uint8Array(64), { reliable: false }), RangeError);
  assert.equal(client.appSeq, 1, 'a refused message takes no number');
  await client.close();
});

test('snapshots are latest-only: stale ticks are dropped, gaps counted as lost; onSnapshot gets header and payload', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...WS, ...handlers });
  const ws = FakeWebSocket.all[0];
  for (const tick of [101, 103, 102, 103, 104, 108]) ws.serverSend(snapshotBytes(tick, { ackSeq: tick - 100 }));
  assert.deepEqual(seen.snapshots.map((s) => s.tick), [101, 103, 104, 108]);
  assert.deepEqual(seen.snapshots[0], { tick: 101, ackSeq: 1, serverTimeUs: 1_700_000_000_000_101, payload: Uint8Array.of(101), channel: 'websocket' });
  assert.equal(client.stats.snapshotsStale, 2);
  assert.equal(client.stats.snapshotsLost, 1 + 3);
  assert.equal(client.lastSnapshot.tick, 108);
  await client.close();
});

test('application messages: App and AppUnreliable both ways; an exception in a handler does not end the session', async () => {
  const { seen, handlers } = collect();
  let boom = true;
  const client = await connect(URL_, {
    ...WS,
    ...handlers,
    onMessage: (p, info) => {
      handlers.onMessage(p, info);
      if (boom) {
        boom = false;
        throw new Error('handler bug');
      }
    },
  });
  const ws = FakeWebSocket.all[0];
  const reported = [];
  globalThis.reportError = (e) => reported.push(e.message);
  try {
    ws.serverSend(appBytes(text('one')));
  } finally {
    delete globalThis.reportError;
  }
  assert.deepEqual(reported, ['handler bug'], 'the exception is reported (as browsers report uncaught ones), not swallowed');
  ws.serverSend(appBytes(text('two'), { reliable: false }));
  assert.deepEqual(seen.messages, [
    { text: 'one', reliable: true, channel: 'websocket' },
    { text: 'two', reliable: false, channel: 'websocket' },
  ]);
  assert.equal(client.state, 'connected');
  assert.equal(client.send(text('hi')), 1);
  assert.equal(client.send(text('yo')), 2);
  assert.equal(client.send(text('psst'), { reliable: false }), 0);
  assert.deepEqual(ws.sent.filter((m) => m.type.startsWith('app')).map((m) => [m.type, str(m.payload)]), [
    ['app', 'hi'], ['app', 'yo'], ['app_unreliable', 'psst'],
  ]);
  assert.deepEqual([client.stats.appSent, client.stats.appUnreliableSent, client.stats.appReceived, client.stats.appUnreliableReceived], [2, 1, 1, 1]);
  await client.close();
  assert.throws(() => client.send(text('late')), /closed/);
});

test('auto: WebTransport welcomed within the head start wins; channels: stream for reliable, datagrams for the rest', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', ...handlers });
  assert.equal(client.transport, 'webtransport');
  assert.equal(client.fallbackReason, null);
  assert.equal(client.certHashUsed, true);
  // Where the room lives first (PROTOCOL.md §13.2); this fake server does
  // not answer it, so the client stays and fetches the hash itself.
  assert.deepEqual(fetches, ['http://127.0.0.1:4433/rooms/lobby', 'http://127.0.0.1:4433/cert-hash']);
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.url, 'https://127.0.0.1:4433/rally');
  const hashes = wt.options.serverCertificateHashes;
  assert.equal(hashes[0].algorithm, 'sha-256');
  assert.deepEqual([...hashes[0].value], new Array(32).fill(0xab));
  assert.equal(wt.frames[0].type, 'hello', 'Hello is the first frame on the stream');
  await sleep(FAST.headStartMs * 2);
  assert.equal(FakeWebSocket.all.length, 0, 'no WebSocket when WebTransport wins in time');

  // Snapshots on both channels, frames split across reads.
  wt.serverDatagram(snapshotBytes(101));
  wt.serverStream(snapshotBytes(102), true);
  wt.serverDatagram(snapshotBytes(101));
  wt.serverDatagram(appBytes(text('cursor'), { reliable: false }));
  wt.serverStream(appBytes(text('chat')));
  await until(() => seen.snapshots.length === 2 && seen.messages.length === 2, 'two snapshots, two messages');
  assert.deepEqual(seen.snapshots.map((s) => [s.tick, s.channel]), [[101, 'datagram'], [102, 'stream']]);
  assert.deepEqual(seen.messages, [{ text: 'cursor', reliable: false, channel: 'datagram' }, { text: 'chat', reliable: true, channel: 'stream' }]);
  await until(() => client.stats.snapshotsStale === 1, 'stale datagram counted');

  client.sendInput(Uint8Array.of(8));
  client.send(text('stamp'));
  client.send(text('move'), { reliable: false });
  await until(() => wt.datagramsSent.some((d) => d.type === 'input'), 'Input datagram');
  assert.ok(wt.datagramsSent.some((d) => d.type === 'ping'), 'Ping datagram');
  assert.deepEqual(wt.datagramsSent.filter((d) => d.type === 'app_unreliable').map((d) => str(d.payload)), ['move']);
  await until(() => wt.of('app').length === 1, 'App on the stream');
  assert.ok(!wt.frames.some((m) => m.type === 'input'), 'no Input on the stream');
  assert.equal(JSON.parse(storage.values().next().value).winner, 'webtransport');

  await client.close();
  assert.equal(wt.frames.at(-1).type, 'leave', 'Leave on the stream');
  assert.ok(wt.closeCalled, 'session closed');
});

test('WebTransport: a message larger than the datagram limit goes on the stream', async () => {
  FakeWebTransport.script = (wt) => {
    wt.datagrams.maxDatagramSize = 10;
    wt.serverReady();
  };
  const client = await connect(URL_, { ...FAST, transport: 'webtransport', room: 'lobby', name: 'ann' });
  const wt = FakeWebTransport.all[0];
  client.send(new Uint8Array(9).fill(1), { reliable: false }); // 10 bytes: a datagram
  client.send(new Uint8Array(10).fill(2), { reliable: false }); // 11 bytes: the stream
  await until(() => wt.of('app_unreliable').length === 1, 'big one on the stream');
  assert.equal(wt.of('app_unreliable')[0].payload.length, 10);
  assert.deepEqual(wt.datagramsSent.filter((d) => d.type === 'app_unreliable').map((d) => d.payload.length), [9]);
  await client.close();
});

// The fake's datagrams have Safari 26.x's shape (createWritable() only);
// these give it Chromium's (the `writable` attribute only) and neither.
test('WebTransport datagrams: the `writable` attribute where createWritable() is missing (Chromium)', async () => {
  FakeWebTransport.script = (wt) => {
    const create = wt.datagrams.createWritable;
    delete wt.datagrams.createWritable;
    wt.datagrams.writable = create();
    wt.serverReady();
  };
  const client = await connect(URL_, { ...FAST, transport: 'webtransport', room: 'lobby', name: 'ann' });
  const wt = FakeWebTransport.all[0];
  client.send(text('move'), { reliable: false });
  await until(() => wt.datagramsSent.some((d) => d.type === 'app_unreliable'), 'a datagram via .writable');
  assert.equal(wt.of('app_unreliable').length, 0, 'not on the stream');
  await client.close();
});

test('WebTransport datagrams: with no way to write them (createWritable() throws, no `writable`), unreliable messages take the stream', async () => {
  FakeWebTransport.script = (wt) => {
    wt.datagrams.createWritable = () => {
      throw new TypeError('not supported');
    };
    wt.serverReady();
  };
  const client = await connect(URL_, { ...FAST, transport: 'webtransport', room: 'lobby', name: 'ann' });
  assert.equal(client.transport, 'webtransport');
  const wt = FakeWebTransport.all[0];
  client.send(text('move'), { reliable: false });
  client.sendInput(Uint8Array.of(8));
  await until(() => wt.of('app_unreliable').length === 1 && wt.of('input').length >= 1, 'unreliable messages on the stream');
  assert.equal(wt.datagramsSent.length, 0);
  await client.close();
});

test('auto: WebTransport that never gets ready loses to WebSocket after the head start, then reports timeout', async () => {
  FakeWebTransport.script = () => {}; // never ready
  const { seen, handlers } = collect();
  const t0 = Date.now();
  const client = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', ...handlers });
  const took = Date.now() - t0;
  assert.equal(client.transport, 'websocket');
  assert.ok(took >= FAST.headStartMs - 5, `WebSocket waited for the head start (${took} ms)`);
  assert.match(client.fallbackReason, /WebSocket connected first/);
  // Reported to the server for its metrics (PROTOCOL.md §1.1).
  assert.equal(FakeWebSocket.all[0].url, 'ws://127.0.0.1:4433/rally?fallback=wt_timeout');
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.frames.length, 0, 'no Hello on WebTransport');
  await until(() => client.fallbackReason === 'timeout', 'timeout reason', 1000);
  assert.ok(seen.statuses.includes('connected*'), 'onStatus told about the new reason');
  assert.ok(wt.closeCalled, 'the probe was closed');
  const mem = JSON.parse([...storage.values()][0]);
  assert.deepEqual([mem.winner, mem.reason], ['websocket', 'timeout']);
  await client.close();
});

test('auto: a WebSocket opened while WebTransport awaits Welcome holds its Hello, so the room never sees two joins', async () => {
  server.answer = false;
  const pending = connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  await until(() => FakeWebSocket.all.length === 1 && FakeWebSocket.all[0].readyState === 1, 'WebSocket open');
  await sleep(20);
  assert.equal(FakeWebSocket.all[0].sent.length, 0, 'WebSocket Hello held back');
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.frames[0].type, 'hello');
  wt.serverStream(welcomeBytes());
  const client = await pending;
  assert.equal(client.transport, 'webtransport');
  await sleep(20);
  assert.equal(FakeWebSocket.all[0].sent.length, 0, 'the losing WebSocket never joined');
  assert.ok(FakeWebSocket.all[0].closedWith, 'and was closed');
  await client.close();
});

test('auto: a failed WebTransport handshake starts WebSocket at once, with the error as reason', async () => {
  FakeWebTransport.script = (wt) => setTimeout(() => wt.serverFail('Opening handshake failed.'), 1);
  const t0 = Date.now();
  const client = await connect(URL_, { ...FAST, headStartMs: 5000, room: 'lobby', name: 'ann' });
  assert.ok(Date.now() - t0 < 1000, 'did not wait for the head start');
  assert.equal(client.transport, 'websocket');
  assert.equal(client.fallbackReason, 'Opening handshake failed.');
  assert.equal(FakeWebSocket.all[0].url, 'ws://127.0.0.1:4433/rally?fallback=wt_failed');
  await client.close();
});

test('auto: a server refusal over WebTransport (room_full) ends the race; WebSocket is not tried', async () => {
  FakeWebTransport.script = (wt) => {
    wt.serverReady();
    wt.createBidirectionalStream = (orig => async () => {
      const s = await orig();
      setTimeout(() => {
        wt.serverStream(errorBytes(7, 'room is full'));
        wt.close({ closeCode: 4007, reason: 'room_full' });
      }, 1);
      return s;
    })(wt.createBidirectionalStream.bind(wt));
  };
  server.answer = false;
  await assert.rejects(connect(URL_, { ...FAST, headStartMs: 5000, room: 'lobby', name: 'ann' }), (e) => e instanceof RallyError && e.codeName === 'room_full');
  await sleep(50);
  assert.equal(FakeWebSocket.all.length, 0);
});

test('auto: no WebTransport API → WebSocket at once; a remembered WebSocket win skips WebTransport', async () => {
  delete globalThis.WebTransport;
  const a = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(a.transport, 'websocket');
  assert.equal(a.fallbackReason, 'WebTransport API unavailable');
  assert.equal(FakeWebSocket.all.at(-1).url, 'ws://127.0.0.1:4433/rally?fallback=wt_unavailable');
  await a.close();

  globalThis.WebTransport = FakeWebTransport;
  FakeWebTransport.script = (wt) => setTimeout(() => wt.serverFail('net::ERR_QUIC_PROTOCOL_ERROR'), 1);
  const b = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(b.transport, 'websocket');
  await b.close();
  const wtCount = FakeWebTransport.all.length;
  const c = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(c.transport, 'websocket');
  assert.equal(c.fallbackReason, 'remembered: net::ERR_QUIC_PROTOCOL_ERROR');
  assert.ok(FakeWebSocket.all.at(-1).url.endsWith('/rally?fallback=remembered'));
  assert.equal(FakeWebTransport.all.length, wtCount, 'no WebTransport attempt');
  await c.close();
  // After the re-probe interval WebTransport is tried again.
  const d = await connect(URL_, { ...FAST, reprobeAfterMs: 0, room: 'lobby', name: 'ann' });
  assert.equal(FakeWebTransport.all.length, wtCount + 1);
  await d.close();
});

test('a dropped session resumes its player: Resume counts PlayerJoined, PlayerLeft and App, nothing else; inputs keep counting', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...WS, ...handlers });
  const ws = FakeWebSocket.all[0];
  // Numbered: the roster's PlayerJoined (sent on Hello), these three. Not: the rest.
  ws.serverSend(joinedBytes(8, 'bob'));
  ws.serverSend(appBytes(text('chat')));
  ws.serverSend(leftBytes(8));
  ws.serverSend(appBytes(text('cursor'), { reliable: false }));
  ws.serverSend(snapshotBytes(105));
  ws.serverSend(pongBytes(1));
  ws.serverSend(errorBytes(13, 'slow down'));
  await until(() => seen.events.length === 4, 'events');
  client.sendInput(Uint8Array.of(8));
  client.sendInput(Uint8Array.of(8));
  ws.serverClose(1006);
  await until(() => client.sessions === 2 && client.state === 'connected', 'reconnect');
  assert.deepEqual(seen.statuses.filter((s) => s !== 'connecting'), ['connected', 'reconnecting', 'connected']);
  const resume = FakeWebSocket.all[1].sent[0];
  assert.equal(resume.type, 'resume', 'Resume is the first message');
  assert.equal(resume.version, 2);
  assert.deepEqual(resume.token, RESUME_TOKEN);
  assert.equal(resume.lastSeq, 4, 'four numbered events were received');
  assert.equal(client.resumed, true);
  assert.equal(client.sendInput(Uint8Array.of(4)), 3, 'a resumed player keeps its input numbering');
  assert.deepEqual(FakeWebSocket.all[1].of('input')[0].inputs, [[4], [8], [8]], 'redundancy carries on across the resume');
  await client.close();
});

test('reliable messages across a resume: those the game did not get are sent again, in order, before new ones; numbering continues', async () => {
  const client = await connect(URL_, WS);
  for (const s of ['a', 'b', 'c']) client.send(text(s));
  FakeWebSocket.all[0].serverClose(1006);
  // Sent while reconnecting: kept, and sent after the replay.
  assert.equal(client.send(text('d')), 4);
  server.clientSeq = 1; // the game got 'a'
  await until(() => client.sessions === 2 && client.state === 'connected', 'resume');
  assert.equal(client.send(text('e')), 5);
  const after = FakeWebSocket.all[1].sent.map((m) => (m.type === 'app' ? str(m.payload) : m.type)).filter((t) => t !== 'ping');
  assert.deepEqual(after, ['resume', 'b', 'c', 'd', 'e']);
  assert.equal(client.stats.appResent, 3);
  assert.equal(client.appSeq, 5);

  // A second drop: the game now has everything up to 'd'.
  FakeWebSocket.all[1].serverClose(1006);
  server.clientSeq = 4;
  await until(() => client.sessions === 3 && client.state === 'connected', 'second resume');
  assert.deepEqual(FakeWebSocket.all[2].of('app').map((m) => str(m.payload)), ['e']);
  await client.close();
});

test('more unconfirmed reliable messages than the client keeps (256): onLost reports the rest', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...WS, ...handlers });
  FakeWebSocket.all[0].serverClose(1006);
  for (let i = 1; i <= 300; i++) client.send(text(`m${i}`));
  server.clientSeq = 0;
  await until(() => client.sessions === 2 && client.state === 'connected', 'resume');
  const replayed = FakeWebSocket.all[1].of('app').map((m) => str(m.payload));
  assert.equal(replayed.length, 256);
  assert.equal(replayed[0], 'm45');
  assert.equal(replayed.at(-1), 'm300');
  assert.deepEqual(seen.lost, [44]);
  assert.equal(client.stats.appLost, 44);
  await client.close();
});

test('a refused Resume falls back to Hello on the same session: numbering restarts; messages sent while away are lost', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...WS, ...handlers });
  client.sendInput(Uint8Array.of(8));
  client.send(text('before'));
  server.refuseResume = true;
  FakeWebSocket.all[0].serverClose(1006);
  client.send(text('while away'));
  await until(() => client.sessions === 2 && client.state === 'connected', 'reconnect');
  const sent = FakeWebSocket.all[1].sent.map((m) => m.type);
  assert.deepEqual(sent.slice(0, 2), ['resume', 'hello'], 'Resume, then Hello after resume_failed');
  assert.equal(client.resumed, false);
  assert.equal(FakeWebSocket.all[1].of('app').length, 0, 'nothing replayed to a new player');
  assert.deepEqual(seen.lost, [1], "the message sent while away never reached anyone; 'before' may have");
  assert.equal(client.sendInput(Uint8Array.of(4)), 1, 'a fresh player numbers inputs from 1');
  assert.equal(client.send(text('again')), 1, 'and messages from 1');
  await client.close();
});

test('reconnect backs off while the server is away', async () => {
  const client = await connect(URL_, WS);
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverClose(1006), 1); // refused
  FakeWebSocket.all[0].serverClose(1006);
  await until(() => FakeWebSocket.all.length >= 4, 'several attempts', 3000);
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverOpen(), 1);
  await until(() => client.state === 'connected' && client.sessions === 2, 'back', 3000);
  await client.close();
});

test('no reconnect after invalid_name, unsupported_version or join_refused, nor after close()', async () => {
  const client = await connect(URL_, WS);
  const ws = FakeWebSocket.all[0];
  ws.serverSend(errorBytes(6, 'name taken'));
  ws.serverClose(4006, 'invalid_name');
  await sleep(100);
  assert.equal(client.state, 'closed');
  assert.equal(FakeWebSocket.all.length, 1, 'no new connection');
  assert.equal(client.lastError.codeName, 'invalid_name');

  // Refused at Hello: connect() rejects with the server's error.
  for (const [code, name] of [[2, 'unsupported_version'], [18, 'join_refused']]) {
    server.answer = false;
    FakeWebSocket.script = (ws2) => {
      setTimeout(() => ws2.serverOpen(), 1);
      const send = ws2.send.bind(ws2);
      ws2.send = (d) => {
        send(d);
        ws2.serverSend(errorBytes(code, 'no'));
        ws2.serverClose(4000 + code, name);
      };
    };
    await assert.rejects(connect(URL_, WS), (e) => e instanceof RallyError && e.codeName === name);
  }

  server.answer = true;
  FakeWebSocket.script = (ws3) => setTimeout(() => ws3.serverOpen(), 1);
  const c = await connect(URL_, WS);
  const before = FakeWebSocket.all.length;
  await c.close();
  assert.equal(FakeWebSocket.all.at(-1).sent.at(-1).type, 'leave', 'Leave sent');
  await sleep(100);
  assert.equal(FakeWebSocket.all.length, before, 'no reconnect after close()');
  assert.equal(c.state, 'closed');
});

test('bad names are refused before connecting', async () => {
  await assert.rejects(connect(URL_, { room: 'no spaces', name: 'a' }), TypeError);
  await assert.rejects(connect(URL_, { room: 'ok', name: '' }), TypeError);
  await assert.rejects(connect(URL_, { room: 'ok', name: 'a', app: 'text' }), TypeError);
  assert.equal(FakeWebSocket.all.length + FakeWebTransport.all.length, 0);
});

test('cluster: the room located on another node is joined there, with that node\'s hashes and no /cert-hash fetch', async () => {
  const other = 'ef'.repeat(32);
  globalThis.fetch = async (url) => {
    fetches.push(url);
    if (String(url).includes('/rooms/')) {
      return {
        ok: true, status: 200,
        json: async () => ({ room: 'lobby', node: 'n2', here: false, url: 'http://127.0.0.1:5555', wt_url: 'https://127.0.0.1:5555/rally', cert_hashes: [other], nodes: ['http://127.0.0.1:4433', 'http://127.0.0.1:5555'] }),
      };
    }
    throw new Error(`unexpected fetch ${url}`);
  };
  const client = await connect(URL_, { ...FAST, transport: 'webtransport', room: 'lobby', name: 'ann' });
  assert.deepEqual(fetches, ['http://127.0.0.1:4433/rooms/lobby']);
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.url, 'https://127.0.0.1:5555/rally');
  assert.deepEqual(wt.options.serverCertificateHashes.map((h) => Buffer.from(h.value).toString('hex')), [other]);
  assert.equal(client.nodeUrl, 'http://127.0.0.1:5555');
  await client.close();
});

test('cluster: a 503 unavailable from /rooms fails the connect with the documented code', async () => {
  globalThis.fetch = async () => ({ ok: false, status: 503, json: async () => ({ error: 'unavailable', reason: 'the cluster directory (Redis) is unreachable' }) });
  await assert.rejects(connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann', reconnect: false }), (e) => e.codeName === 'unavailable' && /unreachable/.test(e.reason));
  assert.equal(FakeWebSocket.all.length, 0);
});

test('renewal: every hash /cert-hash lists is passed to WebTransport', async () => {
  const next = 'cd'.repeat(32);
  globalThis.fetch = async () => ({
    ok: true,
    json: async () => ({
      algorithm: 'sha-256', hex: CERT_HEX,
      hashes: [{ algorithm: 'sha-256', hex: CERT_HEX }, { algorithm: 'sha-256', hex: next }],
    }),
  });
  const client = await connect(URL_, { ...FAST, transport: 'webtransport', room: 'lobby', name: 'ann' });
  const pinned = FakeWebTransport.all[0].options.serverCertificateHashes.map((h) => Buffer.from(h.value).toString('hex'));
  assert.deepEqual(pinned, [CERT_HEX, next]);
  await client.close();
});

test('join token: on both session URLs; a function is asked each attempt; token_expired ends a fixed-token client', async () => {
  const a = await connect(URL_, { ...WS, token: 'c1.s1' });
  assert.equal(FakeWebSocket.all[0].url, 'ws://127.0.0.1:4433/rally?token=c1.s1');
  const ws = FakeWebSocket.all[0];
  ws.serverSend(errorBytes(15, 'token expired'));
  ws.serverClose(4015, 'token_expired');
  await sleep(100);
  assert.equal(a.state, 'closed');
  assert.equal(FakeWebSocket.all.length, 1, 'no retry with the same expired token');

  let minted = 0;
  const b = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', token: () => `t${++minted}` });
  assert.equal(FakeWebTransport.all[0].url, 'https://127.0.0.1:4433/rally?token=t1');
  const wt = FakeWebTransport.all[0];
  wt.serverStream(errorBytes(15, 'token expired'));
  wt.close({ closeCode: 4015, reason: 'token_expired' });
  await until(() => b.sessions === 2 && b.state === 'connected', 'reconnect with a fresh token');
  assert.ok(FakeWebTransport.all.at(-1).url.endsWith(`token=t${minted}`) || FakeWebSocket.all.at(-1).url.endsWith(`token=t${minted}`));
  assert.ok(minted >= 2);
  await b.close();
});

// ---------------------------------------------------------------------------
// HTTP streaming (PROTOCOL.md §11): HttpLink alone, then in the race
// ---------------------------------------------------------------------------

const HTTP_URL = 'http://127.0.0.1:4433/rally/http';

/** Concatenates byte arrays. */
function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** An HttpLink opened on the fake server, with what it received and how it closed. */
async function openHttpLink(options = {}, url = HTTP_URL) {
  const link = new HttpLink(url, options);
  const got = [];
  const closes = [];
  link.onMessage = (m, channel) => got.push({ ...m, channel });
  link.onClose = (info) => closes.push(info);
  await link.open();
  return { link, got, closes, s: FakeHttp.sessions.at(-1) };
}

test('HttpLink: GET opens the session (no-store, Rally-Session); frames split across reads or packed into one arrive whole; keep-alive Pongs are dropped', async () => {
  const { link, got, s } = await openHttpLink({}, `${HTTP_URL}?token=t1`);
  assert.equal(s.url, `${HTTP_URL}?token=t1`);
  assert.equal(s.init.cache, 'no-store');
  assert.equal(link.session, s.id);
  s.serverSend(welcomeBytes(), true);
  s.serverSend(pongBytes(0)); // keep-alive (§11.4): client_time_us 0
  s.ctl.enqueue(cat(encodeFrame(snapshotBytes(5)), encodeFrame(pongBytes(1234)), encodeFrame(appBytes(text('hi')))));
  await until(() => got.length === 4, 'four messages');
  assert.deepEqual(got.map((m) => [m.type, m.channel]), [['welcome', 'http'], ['snapshot', 'http'], ['pong', 'http'], ['app', 'http']]);
  assert.equal(got[2].clientTimeUs, 1234);
  link.close();
  assert.ok(s.clientAborted, 'close() aborts the stream');
});

test('HttpLink: one POST at a time, numbered from 1; what is written meanwhile goes in the next POST, in order; bodies stay within maxPostBytes', async () => {
  let release;
  const held = new Promise((r) => (release = r));
  FakeHttp.onPost = async ({ n }) => {
    if (n === 1) await held;
  };
  const { link, s } = await openHttpLink({ maxPostBytes: 30 });
  link.sendReliable(encodeHello('lobby', 'ann'));
  link.sendUnreliable(encodeInput(1, [Uint8Array.of(8)]));
  link.sendReliable(encodeApp(text('a')));
  link.sendUnreliable(encodePing(5));
  await sleep(10);
  assert.equal(s.posts.length, 1, 'the next POST waits for the answer to the first');
  for (let i = 0; i < 4; i++) link.sendReliable(encodeApp(text(`message ${i}`))); // 12-byte frames
  release();
  await until(() => s.taken === 4, 'four POSTs taken');
  assert.deepEqual(s.posts.map((p) => [p.n, p.frames.map((f) => (f.type === 'app' ? str(f.payload) : f.type))]), [
    [1, ['hello']],
    [2, ['input', 'a', 'ping']],
    [3, ['message 0', 'message 1']],
    [4, ['message 2', 'message 3']],
  ]);
  assert.ok(s.posts.every((p) => p.body.length <= 30), s.posts.map((p) => p.body.length).join());
  assert.deepEqual(s.posts[0].headers, { 'content-type': 'application/octet-stream' });
  assert.equal(link.seq, 4);
  link.close();
});

test('HttpLink: a POST that failed, or whose answer was lost, is sent again with the same number; the server takes it once', async () => {
  FakeHttp.onPost = ({ n, attempt }) => {
    if (n === 1 && attempt === 1) return 'lost'; // taken, answer lost
    if (n === 2 && attempt === 1) return 'fail'; // never reached the server
    if (n === 2 && attempt === 2) return 503;
    return undefined;
  };
  const { link, s, closes } = await openHttpLink({ postRetryMs: 5 });
  link.sendReliable(encodeApp(text('one')));
  await until(() => s.posts.length === 2 && link.seq === 1, 'POST 1 retried');
  link.sendReliable(encodeApp(text('two')));
  await until(() => link.seq === 2, 'POST 2 taken');
  assert.deepEqual(s.posts.map((p) => [p.n, p.attempt]), [[1, 1], [1, 2], [2, 1], [2, 2], [2, 3]]);
  assert.deepEqual(s.posts.map((p) => str(p.frames[0].payload)), ['one', 'one', 'two', 'two', 'two'], 'a retry carries the same body');
  assert.deepEqual(s.of('app').map((m) => str(m.payload)), ['one', 'two'], 'each message taken once');
  assert.deepEqual(closes, []);
  link.close();

  // Bounded: after postRetries retries the link gives up.
  FakeHttp.onPost = () => 'fail';
  const b = await openHttpLink({ postRetries: 2, postRetryMs: 1 });
  b.link.sendReliable(encodeApp(text('lost')));
  await until(() => b.closes.length === 1, 'gave up');
  assert.equal(b.s.posts.length, 3);
  assert.match(b.closes[0].reason, /POST 1 failed 3 times \(Failed to fetch\)/);
  assert.ok(b.s.clientAborted, 'and dropped the stream');
});

test('HttpLink: a POST answered 404 is the session\'s end; a stream that ends after Error closes with its code', async () => {
  const a = await openHttpLink();
  a.s.ended = true; // the server forgot the session; the stream stays open
  a.link.sendReliable(encodeApp(text('late')));
  await until(() => a.closes.length === 1, 'closed on 404', 3000);
  assert.match(a.closes[0].reason, /session has ended \(POST 1: HTTP 404\)/);
  assert.equal(a.closes[0].code, null);

  const b = await openHttpLink();
  b.s.serverSend(errorBytes(16, 'unknown token')); // resume_failed is not fatal
  b.s.serverSend(errorBytes(17, 'another session resumed this player'));
  b.s.serverEnd();
  await until(() => b.closes.length === 1, 'closed');
  assert.deepEqual(b.closes[0], { code: 4017, reason: 'replaced' });

  const c = await openHttpLink();
  c.s.serverSend(snapshotBytes(1));
  c.s.ctl.enqueue(Uint8Array.of(0, 9, 0x84)); // a frame cut short
  c.s.serverEnd();
  await until(() => c.closes.length === 1, 'closed');
  assert.equal(c.closes[0].reason, 'HTTP stream ended inside a frame');
});

test('HttpLink: 413 sends the batch again in smaller POSTs under the same number; one message over the limit ends the link', async () => {
  FakeHttp.onPost = ({ body }) => (body.length > 30 ? 413 : undefined);
  let release;
  const held = new Promise((r) => (release = r));
  const first = FakeHttp.onPost;
  FakeHttp.onPost = async (p) => {
    if (p.n === 1 && p.attempt === 1) await held;
    return first(p);
  };
  const { link, s, closes } = await openHttpLink();
  link.sendReliable(encodeApp(text('x')));
  for (let i = 0; i < 4; i++) link.sendReliable(encodeApp(text(`message ${i}`))); // 12-byte frames
  release();
  await until(() => s.of('app').length === 5, 'all taken');
  assert.deepEqual(s.of('app').map((m) => str(m.payload)), ['x', 'message 0', 'message 1', 'message 2', 'message 3']);
  assert.deepEqual(s.posts.filter((p) => p.status === 413).map((p) => p.n), [2], 'one 413, then smaller POSTs');
  assert.deepEqual(closes, []);
  link.sendReliable(encodeApp(new Uint8Array(40)));
  await until(() => closes.length === 1, 'closed');
  assert.match(closes[0].reason, /larger than the server's POST limit/);
});

test('HttpLink: leave() posts Leave and ends when the server ends the stream; nothing is sent after it', async () => {
  const { link, s, closes } = await openHttpLink();
  const t0 = Date.now();
  await link.leave(2000);
  assert.ok(Date.now() - t0 < 500, 'did not wait for the timeout');
  assert.deepEqual(s.messages.map((m) => m.type), ['leave']);
  assert.deepEqual(closes, [{ code: 1000, reason: 'bye' }]);
  link.sendReliable(encodeApp(text('after')));
  await sleep(10);
  assert.equal(s.posts.length, 1);
});

test('planAuto: a remembered HTTP streaming win skips both faster tiers; a remembered WebSocket win skips WebTransport; both expire', () => {
  const now = 1_000_000;
  const args = { hasWebTransport: true, now, reprobeAfterMs: 600_000 };
  assert.deepEqual(planAuto({ ...args, memory: null }), { webTransport: true, webSocket: true, reason: null });
  assert.deepEqual(planAuto({ ...args, memory: { winner: 'http', at: now - 1000, reason: 'WebSocket: timeout' } }), { webTransport: false, webSocket: false, reason: 'remembered: WebSocket: timeout' });
  assert.deepEqual(planAuto({ ...args, memory: { winner: 'websocket', at: now - 1000, reason: 'timeout' } }), { webTransport: false, webSocket: true, reason: 'remembered: timeout' });
  assert.deepEqual(planAuto({ ...args, memory: { winner: 'http', at: now - 600_000 } }), { webTransport: true, webSocket: true, reason: null });
  assert.deepEqual(planAuto({ ...args, hasWebTransport: false, memory: null }), { webTransport: false, webSocket: true, reason: 'WebTransport API unavailable' });
  assert.deepEqual(planAuto({ ...args, hasWebTransport: false, memory: { winner: 'http', at: now } }).webSocket, false);
});

test('auto: no WebTransport API and WebSocket refused → HTTP streaming at once; it plays; the win is remembered and skips WebSocket next time', async () => {
  delete globalThis.WebTransport;
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverClose(1006), 1);
  const { seen, handlers } = collect();
  const t0 = Date.now();
  const client = await connect(URL_, { ...FAST, httpHeadStartMs: 5000, room: 'lobby', name: 'ann', ...handlers });
  assert.ok(Date.now() - t0 < 1000, 'did not wait for the head start');
  assert.equal(client.transport, 'http');
  assert.equal(client.fallbackReason, 'WebTransport: WebTransport API unavailable; WebSocket: WebSocket failed to connect (close code 1006)');
  assert.deepEqual(client.attempts.map((a) => a.transport), ['websocket', 'http']);
  const s = FakeHttp.sessions[0];
  assert.equal(s.url, 'http://127.0.0.1:4433/rally/http?fallback=ws_failed', 'the fallback reason for the metrics (PROTOCOL.md §1.1)');
  assert.deepEqual(s.posts[0].frames.map((m) => m.type), ['hello'], 'Hello alone in POST 1');
  // Play: snapshots and messages down the stream, inputs and messages up in POSTs.
  s.serverSend(snapshotBytes(101));
  s.serverSend(pongBytes(0));
  s.serverSend(snapshotBytes(102), true);
  s.serverSend(appBytes(text('chat')));
  await until(() => seen.snapshots.length === 2 && seen.messages.length === 1, 'snapshots and chat');
  assert.deepEqual(seen.snapshots.map((x) => [x.tick, x.channel]), [[101, 'http'], [102, 'http']]);
  assert.deepEqual(seen.messages, [{ text: 'chat', reliable: true, channel: 'http' }]);
  assert.equal(client.stats.httpSnapshots, 2);
  assert.equal(client.stats.pongs, 0, 'the keep-alive Pong is not an RTT sample');
  client.sendInput(Uint8Array.of(8));
  client.send(text('stamp'));
  client.send(text('cursor'), { reliable: false });
  await until(() => s.of('app_unreliable').length === 1, 'everything posted');
  assert.deepEqual(s.messages.map((m) => m.type).filter((t) => t !== 'ping'), ['hello', 'input', 'app', 'app_unreliable']);
  const mem = JSON.parse([...storage.values()][0]);
  assert.equal(mem.winner, 'http');
  await client.close();
  assert.equal(s.messages.at(-1).type, 'leave');

  const wsBefore = FakeWebSocket.all.length;
  const again = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(again.transport, 'http');
  assert.equal(again.fallbackReason, `remembered: ${mem.reason}`);
  assert.equal(FakeWebSocket.all.length, wsBefore, 'no WebSocket attempt on the remembered visit');
  assert.equal(FakeHttp.sessions.at(-1).url, 'http://127.0.0.1:4433/rally/http?fallback=remembered');
  await again.close();
  // After the re-probe interval the faster tiers are tried again.
  const later = await connect(URL_, { ...FAST, reprobeAfterMs: 0, room: 'lobby', name: 'ann' });
  assert.equal(FakeWebSocket.all.length, wsBefore + 1);
  assert.equal(later.transport, 'http');
  await later.close();
});

test('auto: WebTransport failing and WebSocket hanging → HTTP streaming httpHeadStartMs after WebSocket started; the WebSocket probe\'s timeout is reported later', async () => {
  FakeWebTransport.script = (wt) => setTimeout(() => wt.serverFail('Opening handshake failed.'), 1);
  FakeWebSocket.script = () => {}; // never opens
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', ...handlers });
  assert.equal(client.transport, 'http');
  const [wt, ws, http] = client.attempts;
  assert.deepEqual([wt.transport, ws.transport, http.transport], ['webtransport', 'websocket', 'http']);
  assert.match(client.fallbackReason, /^WebTransport: Opening handshake failed\.; WebSocket: HTTP streaming connected first \(WebSocket not ready \d+ ms after it started\)$/);
  await until(() => /WebSocket: timeout$/.test(client.fallbackReason), 'the late verdict', 2000);
  assert.ok(seen.statuses.includes('connected*'), 'onStatus told about the new reason');
  assert.ok(FakeWebSocket.all[0].closedWith || FakeWebSocket.all[0].readyState !== 1, 'the probe never joined');
  assert.equal(JSON.parse([...storage.values()][0]).reason, 'WebTransport: Opening handshake failed.; WebSocket: timeout');
  await client.close();
});

test('auto: WebTransport or WebSocket welcomed in time → HTTP streaming never starts', async () => {
  const a = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(a.transport, 'webtransport');
  FakeWebTransport.script = () => {}; // never ready
  const b = await connect(URL_, { ...FAST, reprobeAfterMs: 0, room: 'lobby', name: 'ann' });
  assert.equal(b.transport, 'websocket');
  await sleep(FAST.headStartMs + FAST.httpHeadStartMs * 2);
  assert.equal(FakeHttp.sessions.length, 0);
  await a.close();
  await b.close();
});

test('auto: a HTTP streaming session opened while WebSocket awaits Welcome holds its Hello; the WebSocket wins, the HTTP probe never joins', async () => {
  delete globalThis.WebTransport;
  server.answer = false;
  const pending = connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  await until(() => FakeHttp.sessions.length === 1, 'HTTP started after its head start');
  await sleep(20);
  const s = FakeHttp.sessions[0];
  assert.equal(s.posts.length, 0, 'HTTP Hello held back');
  FakeWebSocket.all[0].serverSend(welcomeBytes());
  const client = await pending;
  assert.equal(client.transport, 'websocket');
  await sleep(20);
  assert.equal(s.posts.length, 0, 'the losing HTTP session never joined');
  assert.ok(s.clientAborted, 'and was dropped');
  await client.close();
});

test('auto: all three tiers fail → the error names each', async () => {
  FakeWebTransport.script = (wt) => setTimeout(() => wt.serverFail('Opening handshake failed.'), 1);
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverClose(1006), 1);
  FakeHttp.refuse = 403;
  await assert.rejects(
    connect(URL_, { ...FAST, room: 'lobby', name: 'ann' }),
    /^Error: WebTransport: Opening handshake failed\.; WebSocket: WebSocket failed to connect \(close code 1006\); HTTP streaming: HTTP streaming refused: HTTP 403$/,
  );
});

test('forced HTTP streaming: a dropped stream resumes the player on HTTP streaming; reliable messages are replayed exactly once', async () => {
  const client = await connect(URL_, { ...FAST, transport: 'http', room: 'lobby', name: 'ann' });
  assert.equal(client.transport, 'http');
  assert.equal(client.fallbackReason, 'HTTP streaming requested');
  const s1 = FakeHttp.sessions[0];
  s1.serverSend(joinedBytes(8, 'bob'));
  for (const x of ['a', 'b', 'c']) client.send(text(x));
  await until(() => s1.of('app').length === 3, 'three taken');
  server.clientSeq = 2; // the game got 'a' and 'b'
  s1.serverReset();
  client.send(text('d')); // while away
  await until(() => client.sessions === 2 && client.state === 'connected', 'resumed');
  const s2 = FakeHttp.sessions[1];
  assert.equal(FakeWebSocket.all.length + FakeWebTransport.all.length, 0, 'no other transport tried');
  assert.equal(s2.messages[0].type, 'resume');
  assert.equal(s2.messages[0].lastSeq, 2, 'the roster PlayerJoined and bob');
  assert.equal(client.resumed, true);
  await until(() => s2.of('app').length === 2, 'replayed');
  assert.deepEqual(s2.of('app').map((m) => str(m.payload)), ['c', 'd']);
  await client.close();
});

test('auto: a player on HTTP streaming resumes on HTTP streaming and keeps the reason it got there', async () => {
  delete globalThis.WebTransport;
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverClose(1006), 1);
  const client = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  const reason = client.fallbackReason;
  assert.equal(client.transport, 'http');
  const ws = FakeWebSocket.all.length;
  FakeHttp.sessions[0].serverReset();
  await until(() => client.sessions === 2 && client.state === 'connected', 'resumed');
  assert.equal(client.transport, 'http');
  assert.equal(client.resumed, true);
  assert.equal(client.fallbackReason, reason);
  assert.equal(FakeWebSocket.all.length, ws, 'the resume went straight to the transport it had');
  await client.close();
});
