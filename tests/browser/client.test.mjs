// client/rally.js connection logic in plain Node, against scripted fake
// WebSocket and WebTransport globals: the transport race, fallback reasons,
// the remembered winner, redundancy of inputs, latest-only snapshots,
// reconnect and no-retry errors. Deterministic and fast; the real browser
// and server are exercised in browser.test.mjs.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, encodeFrame, FrameDecoder, RallyError } from '../../client/rally.js';

// ---------------------------------------------------------------------------
// Server-side encoders for the fakes
// ---------------------------------------------------------------------------

function welcomeBytes({ playerId = 7, tickHz = 60, snapshotEvery = 1, tick = 100, reliableSeq = 0 } = {}) {
  const b = Buffer.alloc(51);
  b[0] = 0x81;
  b.writeUInt16BE(1, 1);
  b.writeUInt32BE(playerId, 3);
  b.writeUInt16BE(tickHz, 7);
  b.writeUInt16BE(snapshotEvery, 9);
  b.writeFloatBE(960, 11);
  b.writeFloatBE(540, 15);
  b.writeFloatBE(240, 19);
  b.writeUInt32BE(tick, 23);
  for (let i = 0; i < 16; i++) b[27 + i] = 0xa0 + i; // resume token
  b.writeUInt32BE(10000, 43);
  b.writeUInt32BE(reliableSeq, 47);
  return new Uint8Array(b);
}

function joinedBytes(id, name) {
  const n = Buffer.from(name);
  const b = Buffer.alloc(6 + n.length);
  b[0] = 0x82;
  b.writeUInt32BE(id, 1);
  b[5] = n.length;
  n.copy(b, 6);
  return new Uint8Array(b);
}

function snapshotBytes(tick, ackSeq = 0, players = [{ id: 7, x: 10, y: 20 }]) {
  const b = Buffer.alloc(19 + 12 * players.length);
  b[0] = 0x84;
  b.writeUInt32BE(ackSeq, 1);
  b.writeUInt32BE(tick, 5);
  b.writeBigUInt64BE(1_700_000_000_000_000n + BigInt(tick), 9);
  b.writeUInt16BE(players.length, 17);
  players.forEach((p, i) => {
    b.writeUInt32BE(p.id, 19 + 12 * i);
    b.writeFloatBE(p.x, 23 + 12 * i);
    b.writeFloatBE(p.y, 27 + 12 * i);
  });
  return new Uint8Array(b);
}

function pongBytes(clientTimeUs) {
  const b = Buffer.alloc(17);
  b[0] = 0x85;
  b.writeBigUInt64BE(BigInt(clientTimeUs), 1);
  b.writeBigUInt64BE(5n, 9);
  return new Uint8Array(b);
}

function errorBytes(code, reason) {
  const r = Buffer.from(reason);
  const b = Buffer.alloc(4 + r.length);
  b[0] = 0x86;
  b.writeUInt16BE(code, 1);
  b[3] = r.length;
  r.copy(b, 4);
  return new Uint8Array(b);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

// ---------------------------------------------------------------------------
// Fake WebSocket: `script` decides how each new socket behaves.
// ---------------------------------------------------------------------------

class FakeWebSocket {
  static all = [];
  /** (ws) => void, run on construction; default: open and welcome on Hello. */
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
    const bytes = new Uint8Array(data);
    this.sent.push(bytes);
    if (bytes[0] === 0x01 && this.autoWelcome !== false) {
      setTimeout(() => {
        this.serverSend(welcomeBytes(this.welcome || {}));
        this.serverSend(joinedBytes(7, 'me'));
      }, 1);
    }
    if (bytes[0] === 0x05 && this.autoWelcome !== false) {
      // Resume: refused when the test says so, else the player is back.
      const lastSeq = Buffer.from(bytes).readUInt32BE(19);
      setTimeout(() => {
        if (FakeWebSocket.refuseResume) this.serverSend(errorBytes(16, 'unknown token'));
        else this.serverSend(welcomeBytes({ ...(this.welcome || {}), reliableSeq: lastSeq }));
      }, 1);
    }
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
  types() {
    return this.sent.map((m) => m[0]);
  }
}

// ---------------------------------------------------------------------------
// Fake WebTransport: one bidi stream of frames, datagrams both ways.
// ---------------------------------------------------------------------------

class FakeWebTransport {
  static all = [];
  /** (wt) => void; default: ready at once, welcome on Hello. */
  static script = (wt) => wt.serverReady();

  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.frames = []; // client → server messages on the stream
    this.datagramsSent = [];
    this.closeCalled = null;
    this._frames = new FrameDecoder();
    this.ready = new Promise((res, rej) => {
      this._ready = res;
      this._readyFail = rej;
    });
    this.closed = new Promise((res, rej) => {
      this._closed = res;
      this._closedFail = rej;
    });
    let dgCtl;
    const self = this;
    this.datagrams = {
      readable: new ReadableStream({ start: (c) => (dgCtl = c) }),
      createWritable() {
        return new WritableStream({ write: (chunk) => self.datagramsSent.push(new Uint8Array(chunk)) });
      },
    };
    this._dgCtl = dgCtl;
    FakeWebTransport.all.push(this);
    FakeWebTransport.script(this);
  }
  serverReady() {
    this._ready();
  }
  serverFail(message) {
    const err = new Error(message);
    this._readyFail(err);
    this._closedFail(err);
  }
  async createBidirectionalStream() {
    let ctl;
    const readable = new ReadableStream({ start: (c) => (ctl = c) });
    this._streamCtl = ctl;
    const writable = new WritableStream({
      write: (chunk) => {
        for (const msg of this._frames.push(chunk)) {
          this.frames.push(msg);
          if (msg[0] === 0x01 && this.autoWelcome !== false) {
            setTimeout(() => {
              this.serverStream(welcomeBytes());
              this.serverStream(joinedBytes(7, 'me'));
            }, 1);
          }
        }
      },
    });
    return { readable, writable };
  }
  /** Sends one message on the stream, optionally split into two reads. */
  serverStream(bytes, split = false) {
    const f = encodeFrame(bytes);
    if (split) {
      this._streamCtl.enqueue(f.slice(0, 1));
      this._streamCtl.enqueue(f.slice(1));
    } else {
      this._streamCtl.enqueue(f);
    }
  }
  serverDatagram(bytes) {
    this._dgCtl.enqueue(bytes);
  }
  close(info) {
    this.closeCalled = info || {};
    this._readyFail(new Error('closed'));
    this._closed(info || {});
  }
}

const storage = new Map();
const fetches = [];
const CERT_HEX = 'ab'.repeat(32);

beforeEach(() => {
  FakeWebSocket.all = [];
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverOpen(), 1);
  FakeWebTransport.all = [];
  FakeWebTransport.script = (wt) => wt.serverReady();
  storage.clear();
  fetches.length = 0;
  globalThis.WebSocket = FakeWebSocket;
  globalThis.WebTransport = FakeWebTransport;
  globalThis.localStorage = {
    getItem: (k) => (storage.has(k) ? storage.get(k) : null),
    setItem: (k, v) => storage.set(k, String(v)),
  };
  globalThis.fetch = async (url) => {
    fetches.push(url);
    return { ok: true, json: async () => ({ algorithm: 'sha-256', hex: CERT_HEX, not_after_unix: Date.now() / 1000 + 86400 }) };
  };
});

const FAST = { headStartMs: 30, webTransportTimeoutMs: 150, webSocketTimeoutMs: 500, reconnectBaseMs: 10, reconnectMaxMs: 40, pingIntervalMs: 10_000 };
const URL_ = 'http://127.0.0.1:4433';

function collect() {
  const seen = { snapshots: [], events: [], statuses: [] };
  return {
    seen,
    handlers: {
      onSnapshot: (s, info) => seen.snapshots.push({ tick: s.tick, channel: info.channel }),
      onEvent: (e) => seen.events.push(e),
      onStatus: (s) => seen.statuses.push(s.state + (s.fallbackUpdated ? '*' : '')),
    },
  };
}

test('websocket: Hello first, Welcome resolves, inputs carry the last 4 newest first, pings measure RTT', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann', ...handlers });
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url, 'ws://127.0.0.1:4433/rally');
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.equal(ws.sent[0][0], 0x01, 'Hello is the first message');
  assert.equal(client.transport, 'websocket');
  assert.equal(client.fallbackReason, 'WebSocket requested');
  assert.equal(client.welcome.playerId, 7);
  assert.equal(client.welcome.tickHz, 60);
  await until(() => seen.events.length === 1, 'PlayerJoined');
  assert.deepEqual(seen.events[0], { type: 'player_joined', playerId: 7, name: 'me' });

  const seqs = [1, 2, 4, 8, 0, 9].map((b) => client.sendInput(b));
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  const inputs = ws.sent.filter((m) => m[0] === 0x02);
  assert.deepEqual([...inputs[0]], [0x02, 0, 0, 0, 1, 1, 1]);
  assert.deepEqual([...inputs[2]], [0x02, 0, 0, 0, 3, 3, 4, 2, 1]);
  assert.deepEqual([...inputs[5]], [0x02, 0, 0, 0, 6, 4, 9, 0, 8, 4]);
  assert.deepEqual(client.unackedInputs(4).map((i) => i.seq), [5, 6]);

  // A Ping went out on connect; answer it.
  const ping = ws.sent.find((m) => m[0] === 0x03);
  assert.ok(ping, 'Ping sent');
  const clientTime = Buffer.from(ping).readBigUInt64BE(1);
  await sleep(5);
  ws.serverSend(pongBytes(clientTime));
  assert.ok(client.rtt >= 4, `rtt ${client.rtt}`);
  await client.close();
});

test('snapshots are latest-only: stale ticks are dropped, gaps counted as lost', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann', ...handlers });
  const ws = FakeWebSocket.all[0];
  for (const tick of [101, 103, 102, 103, 104, 108]) ws.serverSend(snapshotBytes(tick));
  assert.deepEqual(seen.snapshots.map((s) => s.tick), [101, 103, 104, 108]);
  assert.equal(client.stats.snapshotsStale, 2);
  assert.equal(client.stats.snapshotsLost, 1 + 3);
  assert.equal(client.lastSnapshot.tick, 108);
  await client.close();
});

test('auto: WebTransport welcomed within the head start wins; WebSocket is never opened', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', ...handlers });
  assert.equal(client.transport, 'webtransport');
  assert.equal(client.fallbackReason, null);
  assert.equal(client.certHashUsed, true);
  assert.deepEqual(fetches, ['http://127.0.0.1:4433/cert-hash']);
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.url, 'https://127.0.0.1:4433/rally');
  const hashes = wt.options.serverCertificateHashes;
  assert.equal(hashes[0].algorithm, 'sha-256');
  assert.deepEqual([...hashes[0].value], new Array(32).fill(0xab));
  assert.equal(wt.frames[0][0], 0x01, 'Hello is the first frame on the stream');
  await sleep(FAST.headStartMs * 2);
  assert.equal(FakeWebSocket.all.length, 0, 'no WebSocket when WebTransport wins in time');

  // Snapshots on both channels, frames split across reads.
  wt.serverDatagram(snapshotBytes(101));
  wt.serverStream(snapshotBytes(102), true);
  wt.serverDatagram(snapshotBytes(101));
  await until(() => seen.snapshots.length === 2, 'two snapshots');
  assert.deepEqual(seen.snapshots, [{ tick: 101, channel: 'datagram' }, { tick: 102, channel: 'stream' }]);
  await until(() => client.stats.snapshotsStale === 1, 'stale datagram counted');

  // Input and Ping travel as datagrams.
  client.sendInput(8);
  await until(() => wt.datagramsSent.some((d) => d[0] === 0x02), 'Input datagram');
  assert.ok(wt.datagramsSent.some((d) => d[0] === 0x03), 'Ping datagram');
  assert.ok(!wt.frames.some((m) => m[0] === 0x02), 'no Input on the stream');
  assert.equal(JSON.parse(storage.values().next().value).winner, 'webtransport');

  await client.close();
  assert.equal(wt.frames.at(-1)[0], 0x04, 'Leave on the stream');
  assert.ok(wt.closeCalled, 'session closed');
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
  FakeWebTransport.script = (wt) => {
    wt.autoWelcome = false;
    wt.serverReady();
  };
  const pending = connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  await until(() => FakeWebSocket.all.length === 1 && FakeWebSocket.all[0].readyState === 1, 'WebSocket open');
  await sleep(20);
  assert.equal(FakeWebSocket.all[0].sent.length, 0, 'WebSocket Hello held back');
  const wt = FakeWebTransport.all[0];
  assert.equal(wt.frames[0][0], 0x01);
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
  await client.close();
});

test('auto: no WebTransport API → WebSocket at once; a remembered WebSocket win skips WebTransport', async () => {
  delete globalThis.WebTransport;
  const a = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann' });
  assert.equal(a.transport, 'websocket');
  assert.equal(a.fallbackReason, 'WebTransport API unavailable');
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
  assert.equal(FakeWebTransport.all.length, wtCount, 'no WebTransport attempt');
  await c.close();
  // After the re-probe interval WebTransport is tried again.
  const d = await connect(URL_, { ...FAST, reprobeAfterMs: 0, room: 'lobby', name: 'ann' });
  assert.equal(FakeWebTransport.all.length, wtCount + 1);
  await d.close();
});

test('a dropped session resumes its player: Resume carries the token and last event number, inputs keep counting', async () => {
  const { seen, handlers } = collect();
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann', ...handlers });
  await until(() => seen.events.length >= 1, 'roster event');
  client.sendInput(8);
  client.sendInput(8);
  FakeWebSocket.all[0].serverClose(1006);
  await until(() => client.sessions === 2 && client.state === 'connected', 'reconnect');
  assert.deepEqual(seen.statuses.filter((s) => s !== 'connecting'), ['connected', 'reconnecting', 'connected']);
  const resume = FakeWebSocket.all[1].sent[0];
  assert.equal(resume[0], 0x05, 'Resume is the first message');
  assert.deepEqual([...resume.subarray(3, 19)], Array.from({ length: 16 }, (_, i) => 0xa0 + i));
  assert.equal(Buffer.from(resume).readUInt32BE(19), 1, 'one reliable event was received');
  assert.equal(client.resumed, true);
  assert.equal(client.sendInput(4), 3, 'a resumed player keeps its input numbering');
  await client.close();
});

test('a refused Resume falls back to Hello on the same session; numbering restarts', async () => {
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann' });
  client.sendInput(8);
  FakeWebSocket.refuseResume = true;
  try {
    FakeWebSocket.all[0].serverClose(1006);
    await until(() => client.sessions === 2 && client.state === 'connected', 'reconnect');
    const sent = FakeWebSocket.all[1].sent.map((m) => m[0]);
    assert.deepEqual(sent.slice(0, 2), [0x05, 0x01], 'Resume, then Hello after resume_failed');
    assert.equal(client.resumed, false);
    assert.equal(client.sendInput(4), 1, 'a fresh player numbers inputs from 1');
  } finally {
    FakeWebSocket.refuseResume = false;
  }
  await client.close();
});

test('reconnect backs off while the server is away', async () => {
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann' });
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverClose(1006), 1); // refused
  FakeWebSocket.all[0].serverClose(1006);
  await until(() => FakeWebSocket.all.length >= 4, 'several attempts', 3000);
  FakeWebSocket.script = (ws) => setTimeout(() => ws.serverOpen(), 1);
  await until(() => client.state === 'connected' && client.sessions === 2, 'back', 3000);
  await client.close();
});

test('no reconnect after invalid_name or unsupported_version, nor after close()', async () => {
  const statuses = [];
  const client = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann', onStatus: (s) => statuses.push(s.state) });
  const ws = FakeWebSocket.all[0];
  ws.serverSend(errorBytes(6, 'name taken'));
  ws.serverClose(4006, 'invalid_name');
  await sleep(100);
  assert.equal(client.state, 'closed');
  assert.equal(FakeWebSocket.all.length, 1, 'no new connection');
  assert.equal(client.lastError.codeName, 'invalid_name');

  // Refused at Hello: connect() rejects with the server's error.
  FakeWebSocket.script = (ws2) => {
    ws2.autoWelcome = false;
    setTimeout(() => ws2.serverOpen(), 1);
    const send = ws2.send.bind(ws2);
    ws2.send = (d) => {
      send(d);
      ws2.serverSend(errorBytes(2, 'version 1 only'));
      ws2.serverClose(4002, 'unsupported_version');
    };
  };
  await assert.rejects(connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann' }), (e) => e instanceof RallyError && e.code === 2);

  FakeWebSocket.script = (ws3) => setTimeout(() => ws3.serverOpen(), 1);
  const c = await connect(URL_, { ...FAST, transport: 'websocket', room: 'lobby', name: 'ann' });
  const before = FakeWebSocket.all.length;
  await c.close();
  assert.equal(FakeWebSocket.all.at(-1).sent.at(-1)[0], 0x04, 'Leave sent');
  await sleep(100);
  assert.equal(FakeWebSocket.all.length, before, 'no reconnect after close()');
  assert.equal(c.state, 'closed');
});

test('bad names are refused before connecting', async () => {
  await assert.rejects(connect(URL_, { room: 'no spaces', name: 'a' }), TypeError);
  await assert.rejects(connect(URL_, { room: 'ok', name: '' }), TypeError);
  assert.equal(FakeWebSocket.all.length + FakeWebTransport.all.length, 0);
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
  const a = await connect(URL_, { ...FAST, room: 'lobby', name: 'ann', token: 'c1.s1', transport: 'websocket' });
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
