// @ts-check
// Snapshot interpolation: render the world a little behind the server so
// that there is always a snapshot on each side of the rendered moment.
// Pure: arrival times and `now` are passed in (any monotonic ms clock), so
// tests drive it with a fake clock.
//
// How far behind is adaptive. Each arrival gives a transit sample, arrival
// time minus the tick's nominal time (tick × ms per tick), which is the
// one-way delay plus an unknown constant clock offset:
// - the tick↔clock mapping is the smoothed mean transit (gain 1/16);
// - jitter is RTP's interarrival jitter (RFC 3550 §6.4.1), the smoothed
//   absolute difference between consecutive transits, but with a fast
//   attack (gain 1/4 when it grows) and a slow decay (1/32): a burst of
//   late arrivals raises the delay at once, and it relaxes over a second or
//   so (RTP's symmetric 1/16 let a late snapshot in ten underrun 6% of
//   frames in tests/browser/helpers.test.mjs's kind of simulation; this
//   none, for 15% more delay);
// - the render delay is one snapshot interval (so that a next snapshot is
//   due) plus `jitterFactor` × jitter (so that a late one has arrived),
//   clamped.
// The rendered clock follows changes of that target at most `maxRateChange`
// faster or slower than real time, so rendered time never runs backwards
// and motion stays smooth while the delay adapts.

/**
 * @typedef {object} SnapshotBufferOptions
 * @property {number} tickHz server ticks per second (Welcome.tickHz)
 * @property {number} [snapshotEvery] ticks between snapshots (Welcome.snapshotEvery, default 1)
 * @property {number} [intervals] snapshot intervals in the delay before jitter (default 1)
 * @property {number} [jitterFactor] multiple of the jitter estimate added to the delay (default 2)
 * @property {number} [minDelayMs] lower clamp of the delay (default 0)
 * @property {number} [maxDelayMs] upper clamp of the delay (default 500)
 * @property {number} [maxRateChange] most the rendered clock may run faster or slower than real time while adapting, as a fraction (default 0.1)
 * @property {number} [resyncMs] a transit this far from the estimate (a suspended tab, a stalled server) resets the mapping instead of being averaged in (default 1000)
 * @property {number} [capacity] snapshots kept at most (default 64)
 */

/**
 * @template S
 * @typedef {object} Sample
 * @property {S} from the snapshot at or before the rendered moment
 * @property {S} to the snapshot after it (`from` itself when there is none)
 * @property {number} t how far from `from` to `to`, in [0, 1]
 * @property {number} tick the server tick being shown, rounded (u32): e.g. a shooter's view_tick
 */

/** Gain of the mean transit (the tick↔clock mapping). */
const OFFSET_GAIN = 1 / 16;
/** Gains of the jitter estimate when a sample is above it, and when below. */
const JITTER_ATTACK = 1 / 4;
const JITTER_DECAY = 1 / 32;

/** @template {{ tick: number }} S */
export class SnapshotBuffer {
  /** @internal @type {{ tick: number, snapshot: S }[]} oldest first; `tick` unwrapped */
  entries = [];
  /** @internal @type {number | null} newest tick as received (u32) */
  lastRaw = null;
  /** @internal */
  lastUnwrapped = 0;
  /** @internal @type {number | null} mean transit estimate (ms) */
  offset = null;
  /** @internal @type {number | null} */
  prevTransit = null;
  /** @internal */
  jitter = 0;
  /** @internal @type {number | null} local time minus rendered time (ms), as rendered */
  lag = null;
  /** @internal @type {number | null} */
  lastSampleAt = null;
  /** @internal @type {number} */
  msPerTick;
  /** @internal @type {number} */
  intervalMs;
  /** @internal @type {Required<Omit<SnapshotBufferOptions, 'tickHz' | 'snapshotEvery'>>} */
  opts;
  /** Counters: accepted snapshots, stale (not newer than one accepted), underruns (samples past the newest snapshot), resyncs. */
  stats = { accepted: 0, stale: 0, underruns: 0, resyncs: 0 };

  /** @param {SnapshotBufferOptions} options */
  constructor({
    tickHz,
    snapshotEvery = 1,
    intervals = 1,
    jitterFactor = 2,
    minDelayMs = 0,
    maxDelayMs = 500,
    maxRateChange = 0.1,
    resyncMs = 1000,
    capacity = 64,
  }) {
    if (!(tickHz > 0)) throw new RangeError('tickHz must be > 0');
    if (!(snapshotEvery >= 1)) throw new RangeError('snapshotEvery must be >= 1');
    if (!(capacity >= 2)) throw new RangeError('capacity must be >= 2');
    this.msPerTick = 1000 / tickHz;
    this.intervalMs = snapshotEvery * this.msPerTick;
    this.opts = { intervals, jitterFactor, minDelayMs, maxDelayMs, maxRateChange, resyncMs, capacity };
  }

  /** Estimated arrival jitter in ms (RFC 3550 §6.4.1, fast attack, slow decay). */
  get jitterMs() {
    return this.jitter;
  }

  /** The render delay the buffer aims for now, in ms. */
  get delayMs() {
    const o = this.opts;
    const want = this.intervalMs * o.intervals + o.jitterFactor * this.jitter;
    return Math.min(o.maxDelayMs, Math.max(o.minDelayMs, want));
  }

  /** Snapshots held. */
  get size() {
    return this.entries.length;
  }

  /**
   * Adds a snapshot that arrived at `now`. Returns false (and ignores it)
   * when it is not newer than one already accepted: snapshots are
   * latest-only and datagrams reorder (PROTOCOL.md §5).
   * @param {S} snapshot
   * @param {number} now
   * @returns {boolean}
   */
  push(snapshot, now) {
    const raw = snapshot.tick >>> 0;
    let tick = raw;
    if (this.lastRaw !== null) {
      // Serial arithmetic modulo 2^32: a tick counter that wraps stays ordered.
      const ahead = (raw - this.lastRaw) | 0;
      if (ahead <= 0) {
        this.stats.stale++;
        return false;
      }
      tick = this.lastUnwrapped + ahead;
    }
    this.lastRaw = raw;
    this.lastUnwrapped = tick;
    this.stats.accepted++;

    const transit = now - tick * this.msPerTick;
    if (this.offset === null || this.prevTransit === null || Math.abs(transit - this.offset) > this.opts.resyncMs) {
      if (this.offset !== null) this.stats.resyncs++;
      this.offset = transit;
    } else {
      const d = Math.abs(transit - this.prevTransit);
      this.jitter += (d - this.jitter) * (d > this.jitter ? JITTER_ATTACK : JITTER_DECAY);
      this.offset += (transit - this.offset) * OFFSET_GAIN;
    }
    this.prevTransit = transit;

    this.entries.push({ tick, snapshot });
    if (this.entries.length > this.opts.capacity) this.entries.shift();
    return true;
  }

  /**
   * What to draw at `now`: the two snapshots around the rendered moment and
   * how far between them, or null before the first snapshot. Forgets the
   * snapshots that rendering has passed.
   * @param {number} now
   * @returns {Sample<S> | null}
   */
  sample(now) {
    if (this.entries.length === 0 || this.offset === null) return null;
    const target = this.offset + this.delayMs;
    if (this.lag === null || this.lastSampleAt === null || Math.abs(target - this.lag) > this.opts.resyncMs) {
      this.lag = target;
    } else {
      const step = Math.max(0, now - this.lastSampleAt) * this.opts.maxRateChange;
      this.lag += Math.min(step, Math.max(-step, target - this.lag));
    }
    this.lastSampleAt = now;
    const renderTick = (now - this.lag) / this.msPerTick;

    const e = this.entries;
    let i = e.length - 1;
    while (i > 0 && e[i].tick > renderTick) i--;
    if (i > 0) e.splice(0, i); // nothing before `from` is needed again
    const from = e[0];
    const to = e.length > 1 ? e[1] : null;
    if (to === null) {
      if (renderTick > from.tick) this.stats.underruns++;
      return { from: from.snapshot, to: from.snapshot, t: 0, tick: shownTick(Math.min(renderTick, from.tick)) };
    }
    if (renderTick <= from.tick) {
      return { from: from.snapshot, to: from.snapshot, t: 0, tick: shownTick(from.tick) };
    }
    const t = (renderTick - from.tick) / (to.tick - from.tick);
    return { from: from.snapshot, to: to.snapshot, t, tick: shownTick(renderTick) };
  }

  /** Forgets everything: for a new session whose ticks are unrelated. */
  reset() {
    this.entries = [];
    this.lastRaw = null;
    this.lastUnwrapped = 0;
    this.offset = null;
    this.prevTransit = null;
    this.jitter = 0;
    this.lag = null;
    this.lastSampleAt = null;
  }
}

/**
 * An unwrapped, fractional tick as the u32 tick the server would name.
 * @param {number} tick
 */
function shownTick(tick) {
  return Math.round(tick) >>> 0;
}

/**
 * Linear interpolation from `a` to `b` by `t`.
 * @param {number} a
 * @param {number} b
 * @param {number} t
 */
export function lerp(a, b, t) {
  return a + (b - a) * t;
}

/**
 * Interpolates angles along the shorter way round (radians).
 * @param {number} a
 * @param {number} b
 * @param {number} t
 */
export function lerpAngle(a, b, t) {
  let d = (b - a) % (2 * Math.PI);
  if (d > Math.PI) d -= 2 * Math.PI;
  else if (d < -Math.PI) d += 2 * Math.PI;
  return a + d * t;
}
