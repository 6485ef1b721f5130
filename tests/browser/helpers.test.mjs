// The generic helpers games use (client/interpolation.js, prediction.js,
// outbox.js), driven with a fake clock. Pure: no browser, no server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SnapshotBuffer, lerp, lerpAngle, predict, AppOutbox, APP_REPLAY_KEEP } from '../../client/rally.js';

/** Deterministic PRNG (mulberry32) so jitter runs are reproducible. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HZ = 50;
const MS = 1000 / HZ;
const EVERY = 2;
const INTERVAL = EVERY * MS;

/** Where a sample renders, in ticks: from.tick + t × (to.tick − from.tick). */
const shown = (s) => s.from.tick + s.t * (s.to.tick - s.from.tick);

/**
 * Feeds `count` snapshots (every EVERY ticks from `tick0`) whose transit
 * is `base + noise()` ms, then held by `hold` (a stalled connection), in
 * arrival order (a late one that is overtaken arrives stale, as datagrams
 * do), and samples at 60 frames per second in between.
 */
function run(buffers, { tick0 = 0, count, start = 0, base = 40, noise = () => 0, hold = (at) => at }) {
  const arrivals = [];
  for (let i = 0; i < count; i++) {
    const tick = tick0 + i * EVERY;
    arrivals.push({ at: hold(start + i * INTERVAL + base + noise()), tick: (tick >>> 0) });
  }
  arrivals.sort((a, b) => a.at - b.at);
  const end = start + count * INTERVAL + base;
  const frames = [];
  let next = 0;
  for (let now = arrivals[0].at; now < end; now += 1000 / 60) {
    while (next < arrivals.length && arrivals[next].at <= now) {
      for (const b of buffers) b.push({ tick: arrivals[next].tick }, arrivals[next].at);
      next++;
    }
    frames.push(buffers.map((b) => b.sample(now)));
  }
  return { frames, end };
}

test('steady arrivals: delay is one snapshot interval, samples interpolate between neighbours', () => {
  const b = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  assert.equal(b.sample(0), null, 'nothing to show before the first snapshot');
  // Tick t arrives at 100 + t × MS.
  for (let tick = 0; tick <= 20; tick += EVERY) assert.equal(b.push({ tick }, 100 + tick * MS), true);
  assert.equal(b.jitterMs, 0);
  assert.ok(Math.abs(b.delayMs - INTERVAL) < 1e-9, `delay ${b.delayMs}`);
  // Rendered tick = (now − 100 − delay) / MS: 10.5 lies between 10 and 12.
  const s = b.sample(100 + INTERVAL + 10.5 * MS);
  assert.equal(s.from.tick, 10);
  assert.equal(s.to.tick, 12);
  assert.ok(Math.abs(s.t - 0.25) < 1e-9, `t ${s.t}`);
  assert.equal(s.tick, 11);
  assert.ok(b.size <= 6, 'snapshots before `from` are forgotten');
  // Past the newest snapshot: hold it, and count the underrun.
  const late = b.sample(100 + INTERVAL + 25 * MS);
  assert.deepEqual([late.from.tick, late.to.tick, late.t], [20, 20, 0]);
  assert.equal(b.stats.underruns, 1);
});

test('stale and duplicate ticks are ignored and do not move the estimates', () => {
  const b = new SnapshotBuffer({ tickHz: HZ });
  assert.equal(b.push({ tick: 10 }, 0), true);
  assert.equal(b.push({ tick: 11 }, MS), true);
  const delay = b.delayMs;
  assert.equal(b.push({ tick: 11 }, 500), false);
  assert.equal(b.push({ tick: 9 }, 900), false);
  assert.equal(b.stats.stale, 2);
  assert.equal(b.stats.accepted, 2);
  assert.equal(b.delayMs, delay);
  assert.equal(b.size, 2);
});

test('under jitter the delay adapts: far fewer underruns than a fixed one-interval delay', (t) => {
  const random = rng(7);
  // Transit 40 ms plus up to 60 ms of noise: late by up to 1.5 intervals.
  const noise = () => 60 * random();
  const adaptive = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const fixed = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY, jitterFactor: 0 });
  const calm = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const { frames } = run([adaptive, fixed], { count: 600, noise });
  run([calm], { count: 600 });
  t.diagnostic(`underruns in ${frames.length} frames: adaptive ${adaptive.stats.underruns} (delay ${adaptive.delayMs.toFixed(1)} ms), fixed ${fixed.stats.underruns}`);
  assert.ok(adaptive.jitterMs > 5, `jitter estimate ${adaptive.jitterMs}`);
  assert.ok(adaptive.delayMs > calm.delayMs + adaptive.jitterMs, `delay ${adaptive.delayMs} vs calm ${calm.delayMs}`);
  assert.ok(adaptive.stats.underruns * 5 < fixed.stats.underruns, `underruns: adaptive ${adaptive.stats.underruns}, fixed ${fixed.stats.underruns}`);
  for (const [s] of frames) assert.ok(!s || (s.t >= 0 && s.t <= 1));
});

test('rendered time never runs backwards, even when the delay jumps', () => {
  const random = rng(3);
  // A calm path turns noisy (up to 100 ms): the target delay rises faster
  // than real time; the rendered clock slows down instead of stepping back.
  const b = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const { frames } = run([b], { count: 1500, noise: () => (random() < 0.5 ? 2 : 100) * random() });
  let last = -Infinity;
  for (const [s] of frames) {
    if (!s) continue;
    assert.ok(shown(s) >= last - 1e-9, `rendered tick went back from ${last} to ${shown(s)}`);
    last = shown(s);
  }
  assert.ok(last > 2900, `rendering kept up (at tick ${last} of 3000)`);
});

test('when jitter stops the delay shrinks back', () => {
  const random = rng(11);
  const b = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const first = run([b], { count: 300, noise: () => 60 * random() });
  const jittery = b.delayMs;
  run([b], { tick0: 600, start: first.end, count: 300 });
  assert.ok(b.delayMs < jittery / 2, `delay ${jittery} → ${b.delayMs}`);
});

test('a tick counter that wraps past 2^32 stays ordered and interpolates across the wrap', () => {
  const b = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const ticks = [0xfffffffa, 0xfffffffc, 0xfffffffe, 0, 2, 4];
  ticks.forEach((tick, i) => assert.equal(b.push({ tick }, i * INTERVAL), true));
  assert.equal(b.push({ tick: 0xfffffffe }, 6 * INTERVAL), false, 'pre-wrap tick is stale after the wrap');
  // Rendered tick at now = 3 × INTERVAL + delay: the 4th snapshot (0), one interval in.
  const s = b.sample(3.5 * INTERVAL + b.delayMs);
  assert.deepEqual([s.from.tick, s.to.tick], [0, 2]);
  assert.ok(Math.abs(s.t - 0.5) < 1e-9);
  const before = b.sample(3.5 * INTERVAL + b.delayMs + 1); // rate-limited clock: moves 1 ms
  assert.ok(before.from.tick === 0 && before.t > s.t);
});

test('a long pause (suspended tab, stalled server) resynchronises instead of crawling back', () => {
  const b = new SnapshotBuffer({ tickHz: HZ, snapshotEvery: EVERY });
  const first = run([b], { count: 60 });
  // The next snapshots arrive 5 s later than their ticks say.
  const later = run([b], { tick0: 120, start: first.end + 5000, count: 60 });
  assert.equal(b.stats.resyncs, 1);
  const s = b.sample(later.end);
  assert.ok(s.from.tick >= 230, `showing tick ${s.from.tick}, long after the pause`);
});

test('lerp and lerpAngle (the shorter way round)', () => {
  assert.equal(lerp(10, 20, 0.25), 12.5);
  assert.ok(Math.abs(lerpAngle(Math.PI - 0.1, -Math.PI + 0.1, 0.5) - Math.PI) < 1e-9);
  assert.ok(Math.abs(lerpAngle(0.1, -0.1, 0.5)) < 1e-9);
});

test('predict replays the inputs above ackSeq, oldest first, on a copy', () => {
  const sent = [1, 2, 3, 4].map((seq) => ({ seq, bytes: Uint8Array.of(seq * 10) }));
  const client = { unackedInputs: (ack) => sent.filter((i) => i.seq > ack) };
  const authoritative = { x: 5, trail: [] };
  const apply = (s, input) => ({ x: s.x + input[0], trail: [...s.trail, input[0]] });
  assert.deepEqual(predict(authoritative, 2, client, apply), { x: 5 + 30 + 40, trail: [30, 40] });
  assert.deepEqual(authoritative, { x: 5, trail: [] }, 'the snapshot state is not changed');
  assert.equal(predict(authoritative, 4, client, apply), authoritative, 'everything acknowledged: the server state as is');
});

test('AppOutbox numbers for life, replays what the server did not get, reports what it no longer has', () => {
  const o = new AppOutbox(4);
  const p = (n) => Uint8Array.of(n);
  for (let n = 1; n <= 10; n++) {
    assert.equal(o.push(p(n)), n);
    o.markWritten(n);
  }
  assert.equal(o.seq, 10);
  // The game got 1..3; 4..6 were pushed out of the last four kept.
  const r = o.resume(3);
  assert.deepEqual(r.resend.map((m) => [m.seq, m.payload[0]]), [[7, 7], [8, 8], [9, 9], [10, 10]]);
  assert.equal(r.lost, 3);
  // Numbering carries on across the resume; a second resume replays only above the new client_seq.
  assert.equal(o.push(p(11)), 11);
  assert.deepEqual(o.resume(9), { resend: [{ seq: 10, payload: p(10) }, { seq: 11, payload: p(11) }], lost: 0 });
  assert.deepEqual(o.resume(11), { resend: [], lost: 0 });
  // A fresh join: numbering restarts; what was never written is lost for sure.
  o.push(p(12));
  o.markWritten(12);
  o.push(p(13));
  o.push(p(14));
  assert.equal(o.restart(), 2);
  assert.equal(o.seq, 0);
  assert.equal(o.push(p(1)), 1);
  assert.equal(new AppOutbox().push(p(0)), 1);
  assert.equal(APP_REPLAY_KEEP, 256);
  assert.throws(() => new AppOutbox(-1), RangeError);
});
