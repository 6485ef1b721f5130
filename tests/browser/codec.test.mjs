// Pure parts of client/rally.js: the v2 codec and framing, checked against
// the independent encoders and parser in fixtures.mjs. No browser, no
// server: runs in plain Node.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeHello, encodeResume, encodeInput, inputMessageSize, encodePing, encodeLeave, encodeApp, encodeFrame,
  decodeServerMessage, isNumbered, FrameDecoder, DecodeError, RallyError,
  checkRoom, checkName, truncateUtf8, ErrorCode, NO_RETRY_CODES,
  MsgType, NUMBERED, ERROR_NAMES, PROTOCOL_VERSION, encodeInputAck, applyRallyDelta,
} from '../../client/rally.js';
import { States, KEPT_STATES } from '../../client/deltas.js';
import * as wire from '../../client/wire.js';
import {
  welcomeBytes, joinedBytes, leftBytes, snapshotBytes, pongBytes, errorBytes, appBytes, parseClient, RESUME_TOKEN,
} from './fixtures.mjs';

const hex = (u8) => Buffer.from(u8).toString('hex');
const bytes = (...xs) => Uint8Array.from(xs);

test('the type table, numbered events and error names are wire.js, re-exported as they are', () => {
  assert.equal(MsgType, wire.MsgType);
  assert.equal(NUMBERED, wire.NUMBERED);
  assert.equal(ERROR_NAMES, wire.ERROR_NAMES);
  assert.equal(PROTOCOL_VERSION, 2);
  // ErrorCode is ERROR_NAMES inverted, nothing more.
  assert.deepEqual(Object.entries(ErrorCode).map(([n, c]) => [String(c), n]).sort(), Object.entries(ERROR_NAMES).sort());
  assert.equal(ErrorCode.resume_failed, 16);
  assert.deepEqual([...NO_RETRY_CODES].sort((a, b) => a - b), [2, 6, 14, 17, 18]);
});

test('Hello v2: version, room, name, then the game bytes as rest (PROTOCOL.md §4)', () => {
  const m = encodeHello('lobby', 'ann', bytes(9, 8, 7));
  assert.deepEqual(parseClient(m), { type: 'hello', version: 2, room: 'lobby', name: 'ann', app: bytes(9, 8, 7) });
  assert.equal(m.length, 5 + 5 + 3 + 3);
  // No app: nothing after the name.
  assert.equal(hex(encodeHello('r', 'a')), '01' + '0002' + '01' + '72' + '01' + '61');
  // UTF-8 names count bytes, not characters.
  assert.equal(parseClient(encodeHello('r', 'é☃')).name, 'é☃');
  assert.equal(encodeHello('r', 'é☃')[5], 5);
  assert.equal(parseClient(encodeHello('r', 'a', undefined, 1)).version, 1);
});

test('Hello refuses names the server would refuse, and app bytes that are not a Uint8Array', () => {
  for (const [room, name] of [['', 'a'], ['bad room', 'a'], ['x'.repeat(33), 'a'], ['r', ''], ['r', 'x'.repeat(25)], ['r', 'tab\there'], ['r', 'c1\u0085'], ['r', '   ']]) {
    assert.throws(() => encodeHello(room, name), TypeError, `${JSON.stringify(room)} / ${JSON.stringify(name)}`);
  }
  assert.doesNotThrow(() => encodeHello('A-z_09'.padEnd(32, 'x'), 'a b'));
  assert.throws(() => encodeHello('r', 'a', [1, 2]), TypeError);
  assert.throws(() => encodeHello('r', 'a', new Uint8Array(65536)), RangeError);
  assert.equal(checkRoom('lobby'), null);
  assert.equal(checkName('☃'.repeat(8)), null); // 24 bytes
  assert.notEqual(checkName('☃'.repeat(9)), null); // 27 bytes
  assert.equal(truncateUtf8('☃'.repeat(9), 24), '☃'.repeat(8));
  assert.equal(truncateUtf8('ab☃', 4), 'ab');
});

test('Input: newest_seq, count, then (len, bytes) newest first; size 6 + count + Σlen', () => {
  const inputs = [bytes(3, 4, 5), bytes(), bytes(0xff)];
  const m = encodeInput(9, inputs);
  assert.deepEqual(parseClient(m), { type: 'input', newestSeq: 9, inputs: [[3, 4, 5], [], [0xff]] });
  assert.equal(m.length, inputMessageSize(inputs));
  assert.equal(m.length, 6 + 3 + 4);
  assert.equal(hex(encodeInput(1, [bytes(8)])), '02' + '00000001' + '01' + '01' + '08');
  assert.throws(() => encodeInput(2, [bytes(), bytes(), bytes()]), RangeError); // newest_seq < count
  assert.throws(() => encodeInput(9, new Array(9).fill(bytes())), RangeError); // at most 8
  assert.throws(() => encodeInput(1, []), RangeError);
  assert.throws(() => encodeInput(1, [new Uint8Array(256)]), RangeError); // len is a u8
  assert.throws(() => encodeInput(2 ** 32, [bytes()]), RangeError);
  assert.throws(() => encodeInput(1, [[1]]), TypeError);
});

test('Ping, Leave, App and AppUnreliable layouts', () => {
  assert.equal(hex(encodePing(0x0102030405060708n)), '03' + '0102030405060708');
  assert.equal(parseClient(encodePing(1234567)).clientTimeUs, 1234567n);
  assert.equal(hex(encodeLeave()), '04');
  assert.equal(hex(encodeApp(bytes(1, 2))), '06' + '0102');
  assert.equal(hex(encodeApp(bytes(1, 2), false)), '07' + '0102');
  assert.equal(hex(encodeApp(bytes())), '06');
  assert.throws(() => encodeApp(new Uint8Array(65535)), RangeError); // 65536 bytes in all
});

test('Resume v2: version 2, token, last_seq; 23 bytes (PROTOCOL.md §4)', () => {
  const m = encodeResume(RESUME_TOKEN, 9);
  assert.equal(m.length, 23);
  assert.deepEqual(parseClient(m), { type: 'resume', version: 2, token: RESUME_TOKEN, lastSeq: 9 });
  assert.throws(() => encodeResume(new Uint8Array(3), 1), RangeError);
});

test('Welcome v2 decodes every field, game str and app rest', () => {
  const app = bytes(0x44, 0x70, 0, 0);
  const m = welcomeBytes({ playerId: 42, tickHz: 30, snapshotEvery: 2, tick: 100, reliableSeq: 3, clientSeq: 5, maxMessage: 1000, maxInput: 7, game: 'shooter', app });
  assert.equal(m.length, 47 + 'shooter'.length + app.length);
  assert.deepEqual(decodeServerMessage(m), {
    type: 'welcome', version: 2, playerId: 42, tickHz: 30, snapshotEvery: 2, tick: 100,
    resumeToken: RESUME_TOKEN, resumeWindowMs: 10_000, reliableSeq: 3, clientSeq: 5,
    maxMessage: 1000, maxInput: 7, game: 'shooter', app,
  });
  // An empty app is an empty rest.
  assert.equal(decodeServerMessage(welcomeBytes({ game: 'relay' })).app.length, 0);
  // A Welcome of another version cannot be read with this layout.
  assert.throws(() => decodeServerMessage(welcomeBytes({ version: 1 })), /protocol version 1/);
});

test('PlayerJoined, PlayerLeft, Snapshot, Pong, Error, App and AppUnreliable decode', () => {
  assert.deepEqual(decodeServerMessage(joinedBytes(7, 'bob')), { type: 'player_joined', playerId: 7, name: 'bob' });
  assert.deepEqual(decodeServerMessage(leftBytes(7)), { type: 'player_left', playerId: 7 });
  const snap = decodeServerMessage(snapshotBytes(10, { ackSeq: 5, payload: bytes(1, 2, 3), serverTimeUs: 0x0005f0e1d2c3b4a5n }));
  assert.deepEqual(snap, { type: 'snapshot', ackSeq: 5, tick: 10, serverTimeUs: 0x0005f0e1d2c3b4a5, payload: bytes(1, 2, 3) });
  assert.equal(decodeServerMessage(snapshotBytes(10, { payload: bytes() })).payload.length, 0);
  assert.deepEqual(decodeServerMessage(pongBytes(16, 32)), { type: 'pong', clientTimeUs: 16, serverTimeUs: 32 });
  assert.deepEqual(decodeServerMessage(errorBytes(18, 'full game')), { type: 'error', code: 18, codeName: 'join_refused', reason: 'full game' });
  assert.equal(decodeServerMessage(errorBytes(99, '')).codeName, 'error_99');
  assert.deepEqual(decodeServerMessage(appBytes(bytes(0, 0, 0, 3, 104, 105))), { type: 'app', payload: bytes(0, 0, 0, 3, 104, 105) });
  assert.deepEqual(decodeServerMessage(appBytes(bytes(1), { reliable: false })), { type: 'app_unreliable', payload: bytes(1) });
  // An ArrayBuffer (WebSocket) and a view into a larger buffer decode alike.
  const inside = new Uint8Array([0xee, ...leftBytes(3), 0xee]);
  assert.deepEqual(decodeServerMessage(inside.subarray(1, 6)), { type: 'player_left', playerId: 3 });
  assert.deepEqual(decodeServerMessage(leftBytes(3).slice().buffer), { type: 'player_left', playerId: 3 });
});

test('numbered events are exactly the NUMBERED types of wire.js', () => {
  const samples = [welcomeBytes(), joinedBytes(1, 'a'), leftBytes(1), snapshotBytes(1), pongBytes(1), errorBytes(1, ''), appBytes(bytes()), appBytes(bytes(), { reliable: false })];
  for (const m of samples) {
    assert.equal(isNumbered(decodeServerMessage(m)), NUMBERED.includes(m[0]), `type 0x${m[0].toString(16)}`);
  }
  assert.equal(samples.filter((m) => isNumbered(decodeServerMessage(m))).length, NUMBERED.length);
});

test('decoder rejects truncation, trailing bytes, unknown types, bad UTF-8', () => {
  const full = welcomeBytes({ game: 'dots' });
  // Welcome's app takes the rest, so a trailing byte there is app; elsewhere it is an error.
  assert.throws(() => decodeServerMessage(new Uint8Array([...leftBytes(1), 0])), /trailing/);
  assert.throws(() => decodeServerMessage(new Uint8Array([...pongBytes(1), 0])), /trailing/);
  assert.throws(() => decodeServerMessage(new Uint8Array([...joinedBytes(1, 'a'), 0])), /trailing/);
  assert.throws(() => decodeServerMessage(new Uint8Array([...errorBytes(1, 'a'), 0])), /trailing/);
  assert.throws(() => decodeServerMessage(bytes(0x01)), /unknown message type 0x01/);
  assert.throws(() => decodeServerMessage(bytes(0x8b)), /unknown message type 0x8b/);
  assert.throws(() => decodeServerMessage(bytes(0x89)), /truncated/);
  assert.throws(() => decodeServerMessage(new Uint8Array(0)), /empty/);
  assert.throws(() => decodeServerMessage(bytes(0x82, 0, 0, 0, 1, 2, 0xc3, 0x28)), /UTF-8/);
  const badGame = welcomeBytes({ game: 'ab' });
  badGame[47] = 0xff;
  assert.throws(() => decodeServerMessage(badGame), /UTF-8/);
  // Every prefix of a message with fixed fields is truncated, never a crash.
  for (const m of [full.subarray(0, 47 + 4), snapshotBytes(3).subarray(0, 17), pongBytes(1), errorBytes(1, 'ab'), joinedBytes(1, 'abc'), leftBytes(1)]) {
    for (let n = 1; n < m.length; n++) assert.throws(() => decodeServerMessage(m.subarray(0, n)), DecodeError, `${hex(m)} cut at ${n}`);
  }
  // A string whose length runs past the end.
  assert.throws(() => decodeServerMessage(bytes(0x82, 0, 0, 0, 1, 5, 0x61)), /truncated/);
});

test('RallyError names its code', () => {
  const e = new RallyError(7, 'room is full');
  assert.equal(e.codeName, 'room_full');
  assert.equal(e.message, 'room_full: room is full');
  assert.equal(new RallyError(77).message, 'error_77');
});

test('frames: u16 big-endian length, split and coalesced reads (PROTOCOL.md §2)', () => {
  const a = encodeHello('room', 'a');
  const b = encodeLeave();
  const fa = encodeFrame(a);
  assert.deepEqual([...fa.subarray(0, 2)], [0, a.length]);
  const stream = new Uint8Array([...fa, ...encodeFrame(b)]);
  const d1 = new FrameDecoder();
  const got = [];
  for (const byte of stream) got.push(...d1.push(Uint8Array.of(byte)));
  assert.deepEqual(got.map(hex), [hex(a), hex(b)]);
  assert.equal(d1.pending, 0);
  assert.deepEqual(new FrameDecoder().push(stream).map(hex), [hex(a), hex(b)]);
  const d2 = new FrameDecoder();
  assert.deepEqual(d2.push(stream.subarray(0, 1)), []);
  assert.deepEqual(d2.push(stream.subarray(1, 5)), []);
  assert.equal(d2.pending, 5);
  assert.equal(d2.push(stream.subarray(5)).length, 2);
  const big = new Uint8Array(40000).fill(7);
  const d3 = new FrameDecoder();
  const fb = encodeFrame(big);
  assert.deepEqual([...fb.subarray(0, 2)], [40000 >> 8, 40000 & 0xff]);
  assert.equal(d3.push(fb.subarray(0, 1000)).length, 0);
  assert.equal(d3.push(fb.subarray(1000))[0].length, 40000);
  assert.throws(() => new FrameDecoder().push(bytes(0, 0)), /zero-length/);
  assert.throws(() => encodeFrame(new Uint8Array(0)), RangeError);
  assert.throws(() => encodeFrame(new Uint8Array(65536)), RangeError);
});

test('Redirect decodes with its node, URLs and certificate hashes (PROTOCOL.md §5)', () => {
  const enc = new TextEncoder();
  const str = (/** @type {string} */ t) => [enc.encode(t).length, ...enc.encode(t)];
  const h1 = new Uint8Array(32).fill(7);
  const h2 = new Uint8Array(32).fill(9);
  const m = new Uint8Array([0x89, ...str('lobby'), ...str('n-2'), ...str('http://127.0.0.1:5'), ...str('https://127.0.0.1:5/rally'), 2, ...h1, ...h2]);
  const r = decodeServerMessage(m);
  assert.deepEqual(r, { type: 'redirect', room: 'lobby', node: 'n-2', url: 'http://127.0.0.1:5', wtUrl: 'https://127.0.0.1:5/rally', certHashes: [h1, h2] });
  assert.equal(isNumbered(r), false);
  // A hash cut short is truncation, never a shorter hash.
  assert.throws(() => decodeServerMessage(m.subarray(0, m.length - 1)), /truncated/);
  assert.throws(() => decodeServerMessage(new Uint8Array([...m, 0])), /trailing/);
});

test('InputAck: snapshot_tick, newest_seq, count 0-8, inputs; size 10 + count + Σlen (PROTOCOL.md §4)', () => {
  const m = encodeInputAck(0x01020304, 9, [new Uint8Array([7]), new Uint8Array([])]);
  assert.deepEqual([...m], [0x08, 1, 2, 3, 4, 0, 0, 0, 9, 2, 1, 7, 0]);
  assert.deepEqual([...encodeInputAck(5, 0, [])], [0x08, 0, 0, 0, 5, 0, 0, 0, 0, 0]);
  assert.throws(() => encodeInputAck(1, 1, [new Uint8Array(1), new Uint8Array(1)]), RangeError);
});

test('SnapshotDelta decodes; Rally delta (codec 0) applies as PROTOCOL.md §5.2 says', () => {
  const d = decodeServerMessage(new Uint8Array([0x8a, 0, 0, 0, 3, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 97, 0, 5, 5, 0]));
  assert.deepEqual({ ...d, delta: [...d.delta] }, { type: 'snapshot_delta', ackSeq: 3, tick: 100, serverTimeUs: 7, baseTick: 97, codec: 0, delta: [5, 5, 0] });
  // The example the Rust codec tests too: 1 010 bytes, two changed.
  const base = Uint8Array.from({ length: 1010 }, (_, i) => i & 0xff);
  const cur = base.slice();
  cur[500] ^= 1;
  cur[502] ^= 1;
  const delta = new Uint8Array([0xf2, 0x07, 0xf4, 0x03, 3, cur[500], cur[501], cur[502], 0xfb, 0x03, 0]);
  assert.deepEqual(applyRallyDelta(base, delta), cur);
  assert.deepEqual(applyRallyDelta(base, new Uint8Array([0xf2, 0x07, 0xf2, 0x07, 0])), base);
  for (const bad of [[], [4, 4, 0], [2, 0, 0], [1, 0, 2, 1, 2], [1, 0, 1], [1, 1, 0, 9], [0xff, 0xff, 0xff, 0xff, 0x7f]]) {
    assert.throws(() => applyRallyDelta(new Uint8Array([1, 2]), new Uint8Array(bad)), DecodeError, JSON.stringify(bad));
  }
});

test('States: a delta is applied only to the state it names; without it, ignored; Welcome forgets', () => {
  const s = new States();
  s.keep(10, new Uint8Array([1, 2, 3]));
  // [len 3, copy 2, lit 1, 9]
  const d = { tick: 12, baseTick: 10, codec: 0, delta: new Uint8Array([3, 2, 1, 9]) };
  assert.deepEqual([...s.apply(d)], [1, 2, 9]);
  assert.equal(s.newest, 12);
  assert.equal(s.apply({ ...d, tick: 13, baseTick: 11 }), null, 'no state of tick 11: ignored');
  assert.equal(s.apply({ ...d, tick: 13, codec: 1 }), null, 'no game decoder: ignored');
  assert.equal(s.apply({ ...d, tick: 13, delta: new Uint8Array([3, 4, 0]) }), null, 'undecodable: ignored');
  assert.equal(s.newest, 12);
  // An older delta still fills in its state (a later one may name it).
  assert.deepEqual([...s.apply({ ...d, tick: 11 })], [1, 2, 9]);
  assert.equal(s.newest, 12);
  s.clear();
  assert.equal(s.apply(d), null);
  assert.equal(s.newest, 0);
  const g = new States((base, delta) => Uint8Array.from([...base, ...delta]));
  g.keep(1, new Uint8Array([5]));
  assert.deepEqual([...g.apply({ tick: 2, baseTick: 1, codec: 1, delta: new Uint8Array([6]) })], [5, 6]);
  for (let t = 3; t < 3 + KEPT_STATES; t++) g.keep(t, new Uint8Array([t]));
  assert.equal(g.apply({ tick: 200, baseTick: 1, codec: 1, delta: new Uint8Array([0]) }), null, 'only the last 64 states are kept');
});
