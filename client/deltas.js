// @ts-check
// Snapshot deltas, the client's side (PROTOCOL.md §5.1, §5.2): Rally's
// delta codec and the recent whole states a delta is applied to. Pure: no
// I/O, no clocks, no DOM.

import { DecodeError } from './codec.js';

/** States kept by tick: twice what the server keeps to start deltas from. */
export const KEPT_STATES = 64;
/** Codec byte of Rally's delta (§5.2). */
export const CODEC_RALLY = 0;
/** Codec byte of a game's own delta (`Game::delta`). */
export const CODEC_GAME = 1;

/**
 * Applies a Rally delta (codec 0) to the baseline's payload.
 * @param {Uint8Array} base
 * @param {Uint8Array} delta
 * @returns {Uint8Array} the new payload
 * @throws {DecodeError} when the delta is not one for this baseline
 */
export function applyRallyDelta(base, delta) {
  let o = 0;
  const varint = () => {
    let v = 0;
    for (let i = 0; i < 5; i++) {
      if (o >= delta.length) throw new DecodeError('delta truncated');
      const b = delta[o++];
      v += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) {
        if (v > 0xffffffff) throw new DecodeError('a varint is longer than 32 bits');
        return v;
      }
    }
    throw new DecodeError('a varint is longer than 32 bits');
  };
  const len = varint();
  if (len > base.length + delta.length) throw new DecodeError("a run reaches past the payload's length");
  const out = new Uint8Array(len);
  let at = 0;
  while (at < len) {
    const copy = varint();
    const lit = varint();
    if (copy === 0 && lit === 0) throw new DecodeError('an operation makes no progress');
    if (at + copy + lit > len) throw new DecodeError("a run reaches past the payload's length");
    if (at + copy > base.length) throw new DecodeError('a copy reaches past the baseline');
    out.set(base.subarray(at, at + copy), at);
    at += copy;
    if (o + lit > delta.length) throw new DecodeError('delta truncated');
    out.set(delta.subarray(o, o + lit), at);
    o += lit;
    at += lit;
  }
  if (o !== delta.length) throw new DecodeError(`${delta.length - o} trailing bytes after the delta`);
  return out;
}

/**
 * A game's own delta decoder (codec 1): the payload from the baseline's
 * payload and the delta, or null when it cannot.
 * @typedef {(base: Uint8Array, delta: Uint8Array) => Uint8Array | null} ApplyDelta
 */

/** The recent whole states of one session, by tick (§5.1). */
export class States {
  /** @param {ApplyDelta | undefined} [applyGame] */
  constructor(applyGame) {
    /** @type {Map<number, Uint8Array>} */
    this._kept = new Map();
    /** Newest tick made whole (0: none): what InputAck acknowledges. */
    this.newest = 0;
    this._applyGame = applyGame;
  }

  /** After Welcome: every state is forgotten. */
  clear() {
    this._kept.clear();
    this.newest = 0;
  }

  /**
   * Keeps a whole snapshot's payload (a copy: the transport may reuse its buffer).
   * @param {number} tick
   * @param {Uint8Array} payload
   */
  keep(tick, payload) {
    if (this._kept.has(tick)) return;
    this._kept.set(tick, payload.slice());
    if (this._kept.size > KEPT_STATES) {
      let oldest = tick;
      for (const t of this._kept.keys()) if (((t - oldest) | 0) < 0) oldest = t;
      this._kept.delete(oldest);
    }
    if (this.newest === 0 || ((tick - this.newest) | 0) > 0) this.newest = tick;
  }

  /**
   * The payload a SnapshotDelta makes, kept; null when the client must
   * ignore it (no baseline, an unknown codec, a delta that does not decode).
   * @param {{ tick: number, baseTick: number, codec: number, delta: Uint8Array }} d
   * @returns {Uint8Array | null}
   */
  apply(d) {
    const base = this._kept.get(d.baseTick);
    if (base === undefined) return null;
    /** @type {Uint8Array | null} */
    let payload = null;
    if (d.codec === CODEC_RALLY) {
      try {
        payload = applyRallyDelta(base, d.delta);
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
      }
    } else if (d.codec === CODEC_GAME && this._applyGame) {
      payload = this._applyGame(base, d.delta);
    }
    if (payload === null) return null;
    this.keep(d.tick, payload);
    return payload;
  }
}
