// Pure parts of client/rally.js: codec, framing and connection policies.
// No browser, no server: runs in plain Node.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeHello, encodeResume, encodeInput, encodePing, encodeLeave, encodeFrame,
  decodeServerMessage, FrameDecoder, DecodeError,
  checkRoom, checkName, truncateUtf8, hexToBytes, endpoints,
  planAuto, backoffDelay, mayRetry, codeFromClose, RttEstimator,
  MsgType, Buttons, NO_RETRY_CODES, certHashesFromJson, withToken,
} from '../../client/rally.js';

const hex = (u8) => Buffer.from(u8).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

function f32be(v) {
  const b = Buffer.alloc(4);
  b.writeFloatBE(v);
  return b.toString('hex');
}

test('Hello layout: type, u16 version, room str, name str (PROTOCOL.md §4)', () => {
  const m = encodeHello('lobby', 'ann');
  assert.equal(hex(m), '01' + '0001' + '05' + Buffer.from('lobby').toString('hex') + '03' + Buffer.from('ann').toString('hex'));
  assert.equal(m.length, 5 + 5 + 3);
  // UTF-8 names count bytes, not characters.
  const u = encodeHello('r', 'é☃');
  assert.equal(u[5], 5);
  assert.equal(u.length, 5 + 1 + 5);
});

test('Hello refuses names the server would refuse', () => {
  assert.throws(() => encodeHello('', 'a'), TypeError);
  assert.throws(() => encodeHello('bad room', 'a'), TypeError);
  assert.throws(() => encodeHello('x'.repeat(33), 'a'), TypeError);
  assert.doesNotThrow(() => encodeHello('A-z_09'.padEnd(32, 'x'), 'a'));
  assert.throws(() => encodeHello('r', ''), TypeError);
  assert.throws(() => encodeHello('r', 'x'.repeat(25)), TypeError);
  assert.throws(() => encodeHello('r', 'tab\there'), TypeError);
  assert.throws(() => encodeHello('r', 'c1\u0085'), TypeError);
  assert.equal(checkRoom('lobby'), null);
  assert.equal(checkName('☃'.repeat(8)), null); // 24 bytes
  assert.notEqual(checkName('☃'.repeat(9)), null); // 27 bytes
  assert.equal(truncateUtf8('☃'.repeat(9), 24), '☃'.repeat(8));
  assert.equal(truncateUtf8('ab☃', 4), 'ab');
});

test('Input layout: newest_seq u32, count u8, buttons newest first', () => {
  const m = encodeInput(7, [Buttons.RIGHT, Buttons.RIGHT | Buttons.UP, 0, Buttons.LEFT]);
  assert.equal(hex(m), '02' + '00000007' + '04' + '08' + '09' + '00' + '04');
  assert.equal(m.length, 6 + 4);
  assert.throws(() => encodeInput(2, [0, 0, 0]), RangeError); // newest_seq < count
  assert.throws(() => encodeInput(9, new Array(9).fill(0)), RangeError);
  assert.throws(() => encodeInput(1, []), RangeError);
  assert.throws(() => encodeInput(1, [16]), RangeError);
});

test('Ping and Leave layouts', () => {
  assert.equal(hex(encodePing(0x0102030405060708n)), '03' + '0102030405060708');
  assert.equal(hex(encodePing(1234567)), '03' + (1234567).toString(16).padStart(16, '0'));
  assert.equal(hex(encodeLeave()), '04');
  assert.equal(MsgType.LEAVE, 4);
});

const TOKEN = '000102030405060708090a0b0c0d0e0f';

test('Welcome decodes every field (51 bytes)', () => {
  const m = bytes('81' + '0001' + '0000002a' + '003c' + '0002' + f32be(960) + f32be(540) + f32be(240) + '00000064' +
    TOKEN + '00002710' + '00000003');
  assert.equal(m.length, 51);
  assert.deepEqual(decodeServerMessage(m), {
    type: 'welcome', version: 1, playerId: 42, tickHz: 60, snapshotEvery: 2,
    arenaW: 960, arenaH: 540, speed: 240, tick: 100,
    resumeToken: bytes(TOKEN), resumeWindowMs: 10000, reliableSeq: 3,
  });
});

test('Resume layout (PROTOCOL.md §7.1)', () => {
  assert.equal(hex(encodeResume(bytes(TOKEN), 9)), '05' + '0001' + TOKEN + '00000009');
  assert.throws(() => encodeResume(new Uint8Array(3), 1), RangeError);
});

test('Snapshot, PlayerJoined, PlayerLeft, Pong and Error decode', () => {
  const snap = bytes(
    '84' + '00000005' + '0000000a' + '0005f0e1d2c3b4a5' + '0002' +
      '00000001' + f32be(1.5) + f32be(2.5) +
      '00000003' + f32be(100) + f32be(200),
  );
  assert.equal(snap.length, 19 + 24);
  const s = decodeServerMessage(snap);
  assert.equal(s.type, 'snapshot');
  assert.equal(s.ackSeq, 5);
  assert.equal(s.tick, 10);
  assert.equal(s.serverTimeUs, 0x0005f0e1d2c3b4a5);
  assert.deepEqual(s.players, [{ id: 1, x: 1.5, y: 2.5 }, { id: 3, x: 100, y: 200 }]);

  assert.deepEqual(decodeServerMessage(bytes('82' + '00000007' + '03' + Buffer.from('bob').toString('hex'))), {
    type: 'player_joined', playerId: 7, name: 'bob',
  });
  assert.deepEqual(decodeServerMessage(bytes('83' + '00000007')), { type: 'player_left', playerId: 7 });
  assert.deepEqual(decodeServerMessage(bytes('85' + '0000000000000010' + '0000000000000020')), {
    type: 'pong', clientTimeUs: 16, serverTimeUs: 32,
  });
  assert.deepEqual(decodeServerMessage(bytes('86' + '0006' + '02' + Buffer.from('no').toString('hex'))), {
    type: 'error', code: 6, codeName: 'invalid_name', reason: 'no',
  });
});

test('decoder rejects truncation, trailing bytes, unknown types, bad UTF-8', () => {
  const welcome = '81' + '0001' + '0000002a' + '003c' + '0001' + f32be(960) + f32be(540) + f32be(240) + '00000064' +
    TOKEN + '00002710' + '00000000';
  assert.throws(() => decodeServerMessage(bytes(welcome.slice(0, -2))), DecodeError);
  assert.throws(() => decodeServerMessage(bytes(welcome + '00')), /trailing/);
  assert.throws(() => decodeServerMessage(bytes('01')), /unknown message type 0x01/);
  assert.throws(() => decodeServerMessage(bytes('ff')), /unknown/);
  assert.throws(() => decodeServerMessage(new Uint8Array(0)), /empty/);
  assert.throws(() => decodeServerMessage(bytes('82' + '00000001' + '02' + 'c328')), /UTF-8/);
  // Snapshot whose count promises more players than it carries.
  assert.throws(() => decodeServerMessage(bytes('84' + '00000000' + '00000001' + '0000000000000000' + '0001')), /truncated/);
  // Every prefix of a valid message is truncated, never a crash.
  const full = bytes(welcome);
  for (let n = 1; n < full.length; n++) assert.throws(() => decodeServerMessage(full.subarray(0, n)), DecodeError);
});

test('frames: u16 big-endian length, split and coalesced reads (PROTOCOL.md §2)', () => {
  const a = encodeHello('room', 'a');
  const b = encodeLeave();
  const fa = encodeFrame(a);
  assert.deepEqual([...fa.subarray(0, 2)], [0, a.length]);
  const stream = new Uint8Array([...fa, ...encodeFrame(b)]);
  // Byte at a time.
  const d1 = new FrameDecoder();
  const got = [];
  for (const byte of stream) got.push(...d1.push(Uint8Array.of(byte)));
  assert.deepEqual(got.map(hex), [hex(a), hex(b)]);
  assert.equal(d1.pending, 0);
  // All at once.
  assert.deepEqual(new FrameDecoder().push(stream).map(hex), [hex(a), hex(b)]);
  // Split inside the length prefix.
  const d2 = new FrameDecoder();
  assert.deepEqual(d2.push(stream.subarray(0, 1)), []);
  assert.deepEqual(d2.push(stream.subarray(1, 5)), []);
  assert.equal(d2.push(stream.subarray(5)).length, 2);
  // Large frame (a big snapshot on the stream).
  const big = new Uint8Array(40000).fill(7);
  const d3 = new FrameDecoder();
  const fb = encodeFrame(big);
  assert.deepEqual([...fb.subarray(0, 2)], [40000 >> 8, 40000 & 0xff]);
  assert.equal(d3.push(fb.subarray(0, 1000)).length, 0);
  assert.equal(d3.push(fb.subarray(1000))[0].length, 40000);
  assert.throws(() => new FrameDecoder().push(bytes('0000')), /zero-length/);
});

test('cert hash hex → 32 bytes', () => {
  const h = 'ab'.repeat(32);
  assert.deepEqual([...hexToBytes(h)], new Array(32).fill(0xab));
  assert.equal(hexToBytes('ab'), null);
  assert.equal(hexToBytes('zz'.repeat(32)), null);
});

test('endpoints derive from the server origin', () => {
  assert.deepEqual(endpoints('http://127.0.0.1:4433'), {
    origin: 'http://127.0.0.1:4433',
    webTransportUrl: 'https://127.0.0.1:4433/rally',
    webSocketUrl: 'ws://127.0.0.1:4433/rally',
    certHashUrl: 'http://127.0.0.1:4433/cert-hash',
    useCertHash: true,
  });
  const e = endpoints('https://game.example/', 'https://wt.example:9000/rally');
  assert.equal(e.webSocketUrl, 'wss://game.example/rally');
  assert.equal(e.webTransportUrl, 'https://wt.example:9000/rally');
  assert.equal(e.useCertHash, false);
});

test('auto plan: no API → WebSocket; remembered WebSocket win → WebSocket until re-probe', () => {
  const now = 1_000_000_000;
  assert.deepEqual(planAuto({ hasWebTransport: false, memory: null, now }), { webTransport: false, reason: 'WebTransport API unavailable' });
  assert.equal(planAuto({ hasWebTransport: true, memory: null, now }).webTransport, true);
  const mem = { winner: 'websocket', at: now - 60_000, reason: 'timeout' };
  const p = planAuto({ hasWebTransport: true, memory: mem, now });
  assert.equal(p.webTransport, false);
  assert.match(p.reason, /remembered: timeout/);
  assert.equal(planAuto({ hasWebTransport: true, memory: { ...mem, at: now - 11 * 60_000 }, now }).webTransport, true);
  assert.equal(planAuto({ hasWebTransport: true, memory: { winner: 'webtransport', at: now }, now }).webTransport, true);
});

test('reconnect backoff grows, is capped and jittered; no retry after unsupported_version / invalid_name', () => {
  const lo = (a) => backoffDelay(a, { random: () => 0 });
  const hi = (a) => backoffDelay(a, { random: () => 1 });
  assert.deepEqual([0, 1, 2, 3].map(hi), [500, 1000, 2000, 4000]);
  assert.deepEqual([0, 1, 2].map(lo), [250, 500, 1000]);
  assert.equal(hi(20), 10000);
  assert.equal(hi(1000), 10000);
  assert.deepEqual(NO_RETRY_CODES, [2, 6, 14, 17]);
  assert.equal(mayRetry(2), false);
  assert.equal(mayRetry(6), false);
  assert.equal(mayRetry(10), true);
  assert.equal(codeFromClose(4006), 6);
  assert.equal(codeFromClose(1000), null);
  assert.equal(codeFromClose(4000), null);
});

test('RTT smoothing and jitter', () => {
  const r = new RttEstimator();
  assert.equal(r.rtt, null);
  r.sample(10);
  assert.equal(r.rtt, 10);
  assert.equal(r.jitter, 0);
  r.sample(18);
  assert.equal(r.rtt, 11);
  assert.equal(r.jitter, 0.5);
  r.sample(-1); // ignored
  assert.equal(r.samples, 2);
});

test('/cert-hash: every sha-256 entry of `hashes` is pinned, else the top-level digest (PROTOCOL.md §10)', () => {
  const a = 'ab'.repeat(32);
  const b = 'cd'.repeat(32);
  assert.deepEqual(certHashesFromJson({ algorithm: 'sha-256', hex: a, not_after_unix: 5 }).map((h) => [hex(h.bytes), h.notAfterUnix]), [[a, 5]]);
  const renewing = {
    algorithm: 'sha-256', hex: a, not_after_unix: 5,
    hashes: [
      { algorithm: 'sha-256', hex: a, not_after_unix: 5 },
      { algorithm: 'sha-256', hex: b, not_after_unix: 9 },
      { algorithm: 'sha-1', hex: 'ee'.repeat(32) },
      { algorithm: 'sha-256', hex: 'short' },
      { algorithm: 'sha-256', hex: a.toUpperCase() },
    ],
  };
  assert.deepEqual(certHashesFromJson(renewing).map((h) => hex(h.bytes)), [a, b]);
  assert.deepEqual(certHashesFromJson(null), []);
  assert.deepEqual(certHashesFromJson({ algorithm: 'sha-1', hex: a }), []);
});

test('join token goes in the session URL query (PROTOCOL.md §9)', () => {
  assert.equal(withToken('https://127.0.0.1:4433/rally', null), 'https://127.0.0.1:4433/rally');
  assert.equal(withToken('ws://h:1/rally', 'abc.def'), 'ws://h:1/rally?token=abc.def');
  assert.equal(withToken('ws://h:1/rally', 'a+b/c='), 'ws://h:1/rally?token=a%2Bb%2Fc%3D');
});
