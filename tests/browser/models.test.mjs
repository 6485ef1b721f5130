// The game pages' pure parts (client/games/*-model.js) against PROTOCOL.md
// §12, with the server's side written again here with Buffer. No browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as dots from '../../client/games/dots-model.js';
import * as shooter from '../../client/games/shooter-model.js';
import * as relay from '../../client/games/relay-model.js';

const u8 = (b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
const f32s = (...xs) => {
  const b = Buffer.alloc(4 * xs.length);
  xs.forEach((x, i) => b.writeFloatBE(x, 4 * i));
  return b;
};

test('dots: Welcome.app, snapshot payload, 1-byte input', () => {
  assert.deepEqual(dots.decodeWelcome(u8(f32s(960, 540, 240))), { arenaW: 960, arenaH: 540, speed: 240 });
  assert.throws(() => dots.decodeWelcome(new Uint8Array(11)), RangeError);
  const p = Buffer.alloc(2 + 24);
  p.writeUInt16BE(2, 0);
  p.writeUInt32BE(3, 2);
  f32s(1.5, 2.5).copy(p, 6);
  p.writeUInt32BE(9, 14);
  f32s(100, 200).copy(p, 18);
  assert.deepEqual(dots.decodeSnapshot(u8(p)), [{ id: 3, x: 1.5, y: 2.5 }, { id: 9, x: 100, y: 200 }]);
  assert.deepEqual(dots.decodeSnapshot(Uint8Array.of(0, 0)), []);
  assert.throws(() => dots.decodeSnapshot(u8(p.subarray(0, 25))), RangeError);
  assert.throws(() => dots.decodeSnapshot(u8(Buffer.concat([p, Buffer.from([0])]))), RangeError);
  assert.deepEqual([...dots.encodeInput(dots.Buttons.UP | dots.Buttons.RIGHT)], [9]);
});

test('dots: one input moves speed / tick_hz, opposite buttons cancel, diagonals are not normalised, the arena clamps', () => {
  const world = { arenaW: 100, arenaH: 50, speed: 60, tickHz: 60 };
  const B = dots.Buttons;
  assert.deepEqual(dots.step({ x: 10, y: 10 }, Uint8Array.of(B.RIGHT | B.DOWN), world), { x: 11, y: 11 });
  assert.deepEqual(dots.step({ x: 10, y: 10 }, Uint8Array.of(B.LEFT | B.RIGHT | B.UP), world), { x: 10, y: 9 });
  assert.deepEqual(dots.step({ x: 99.5, y: 0.5 }, Uint8Array.of(B.RIGHT | B.UP), world), { x: 100, y: 0 });
  assert.deepEqual(dots.step({ x: 5, y: 5 }, Uint8Array.of(0), world), { x: 5, y: 5 });
});

test('dots: chat is 1-200 bytes of UTF-8 up, sender id + text down', () => {
  assert.equal(dots.encodeChat('   '), null);
  assert.deepEqual([...dots.encodeChat(' hi ')], [104, 105]);
  const long = dots.encodeChat('é'.repeat(150)); // 300 bytes: cut at a character boundary
  assert.equal(long.length, 200);
  assert.equal(new TextDecoder('utf-8', { fatal: true }).decode(long), 'é'.repeat(100));
  const odd = dots.encodeChat(`x${'é'.repeat(150)}`); // the 200th byte would split an é
  assert.equal(odd.length, 199);
  assert.deepEqual(dots.decodeChat(u8(Buffer.concat([Buffer.from([0, 0, 1, 2]), Buffer.from('salut ☃')]))), { from: 258, text: 'salut ☃' });
  assert.throws(() => dots.decodeChat(Uint8Array.of(0, 0, 0)), RangeError);
  assert.throws(() => dots.decodeChat(Uint8Array.of(0, 0, 0, 1, 0xff)), TypeError);
});

test('shooter: Welcome.app is six f32 and max_health (25 bytes)', () => {
  const app = u8(Buffer.concat([f32s(1600, 900, 220, 16, 500, 700), Buffer.from([100])]));
  assert.deepEqual(shooter.decodeWelcome(app), { arenaW: 1600, arenaH: 900, speed: 220, playerRadius: 16, viewRadius: 500, projectileSpeed: 700, maxHealth: 100 });
  assert.throws(() => shooter.decodeWelcome(app.subarray(0, 24)), RangeError);
});

test('shooter: input is buttons, aim i16 in π/32768, view_tick (7 bytes)', () => {
  const m = Buffer.from(shooter.encodeInput(shooter.Buttons.FIRE | shooter.Buttons.LEFT, Math.PI / 2, 0x01020304));
  assert.equal(m.length, 7);
  assert.equal(m[0], 20);
  assert.equal(m.readInt16BE(1), 16384);
  assert.equal(m.readUInt32BE(3), 0x01020304);
  assert.equal(shooter.aimToWire(0), 0);
  assert.equal(shooter.aimToWire(-Math.PI / 2), -16384);
  assert.equal(shooter.aimToWire(Math.PI), -32768, 'π and -π are one direction: the i16 range ends below +π');
  assert.equal(shooter.aimToWire(3 * Math.PI / 2), -16384);
  assert.ok(Math.abs(shooter.aimFromWire(shooter.aimToWire(1)) - 1) < Math.PI / 32768);
});

test('shooter: per-player snapshot with fighters in view and projectiles', () => {
  const head = Buffer.alloc(9);
  head.writeUInt32BE(5, 0); // you
  head[4] = 80; // health
  head.writeUInt16BE(3, 5); // score
  head[7] = 0; // respawn_in
  head[8] = 2; // count
  const fighter = (id, x, y, aim, health) => {
    const b = Buffer.alloc(15);
    b.writeUInt32BE(id, 0);
    f32s(x, y).copy(b, 4);
    b.writeInt16BE(aim, 12);
    b[14] = health;
    return b;
  };
  const payload = u8(Buffer.concat([head, fighter(5, 10, 20, 0, 80), fighter(6, 30, 40, -16384, 100), Buffer.from([1]), f32s(50, 60)]));
  const v = shooter.decodeSnapshot(payload);
  assert.deepEqual({ ...v, players: v.players.map((p) => p.id) }, { you: 5, health: 80, score: 3, respawnIn: 0, players: [5, 6], shots: [{ x: 50, y: 60 }] });
  assert.equal(v.players[1].aim, -Math.PI / 2);
  assert.equal(v.players[1].health, 100);
  for (let n = 0; n < payload.length; n++) assert.throws(() => shooter.decodeSnapshot(payload.subarray(0, n)), RangeError, `cut at ${n}`);
  assert.throws(() => shooter.decodeSnapshot(u8(Buffer.concat([Buffer.from(payload), Buffer.from([0])]))), /trailing/);
});

test('shooter: movement is normalised and kept inside the arena by the radius; the kill feed', () => {
  const world = { arenaW: 100, arenaH: 100, speed: 60, tickHz: 60, playerRadius: 10 };
  const B = shooter.Buttons;
  const d = shooter.step({ x: 50, y: 50 }, Uint8Array.of(B.RIGHT | B.DOWN | B.FIRE), world);
  assert.ok(Math.abs(Math.hypot(d.x - 50, d.y - 50) - 1) < 1e-12, 'a diagonal moves one step, not √2');
  assert.deepEqual(shooter.step({ x: 10.5, y: 50 }, Uint8Array.of(B.LEFT), world), { x: 10, y: 50 });
  assert.deepEqual(shooter.step({ x: 50, y: 89.8 }, Uint8Array.of(B.DOWN), world), { x: 50, y: 90 });
  const still = { x: 1, y: 2 };
  assert.equal(shooter.step(still, Uint8Array.of(B.FIRE), world), still);
  assert.deepEqual(shooter.decodeFeed(Uint8Array.of(1, 0, 0, 0, 7, 0, 0, 0, 9)), { killer: 7, victim: 9 });
  assert.equal(shooter.decodeFeed(Uint8Array.of(2, 0, 0, 0, 7, 0, 0, 0, 9)), null);
});

test('relay: cursor and stamp marks, forwarded with the sender id in front', () => {
  const m = relay.encodeMark(relay.Kind.STAMP, 0.5, 1.2);
  assert.deepEqual([...m], [2, 0x80, 0x00, 0xff, 0xff]);
  const forwarded = Uint8Array.of(0, 0, 0, 4, ...relay.encodeMark(relay.Kind.CURSOR, 0.25, 0));
  const d = relay.decodeRelayed(forwarded);
  assert.equal(d.from, 4);
  assert.equal(d.kind, relay.Kind.CURSOR);
  assert.ok(Math.abs(d.x - 0.25) < 1 / 65535);
  assert.equal(d.y, 0);
  assert.equal(relay.decodeRelayed(Uint8Array.of(0, 0, 0, 4, 9, 0, 0, 0, 0)), null, 'another page\'s format is ignored');
  assert.equal(relay.decodeRelayed(Uint8Array.of(0, 0, 0, 4)), null);
});
