// @ts-check
// The relay page's own message format. The relay game (PROTOCOL.md §12,
// relay) forwards any bytes to the rest of the room with the sender's id
// in front and keeps no state; what the bytes mean is up to the pages:
//
//   cursor (AppUnreliable): 1:u8 x:u16 y:u16   pointer position
//   stamp  (App):           2:u8 x:u16 y:u16   a click, everyone keeps it
//
// x and y are fractions of the board, in units of 1/65535.

export const Kind = Object.freeze({ CURSOR: 1, STAMP: 2 });

/** @typedef {{ kind: number, x: number, y: number }} Mark */

/** @param {number} f a fraction of the board */
function toU16(f) {
  return Math.round(Math.min(1, Math.max(0, f)) * 0xffff);
}

/**
 * @param {number} kind Kind.CURSOR or Kind.STAMP
 * @param {number} x fraction of the board's width, 0-1
 * @param {number} y fraction of its height, 0-1
 * @returns {Uint8Array}
 */
export function encodeMark(kind, x, y) {
  const out = new Uint8Array(5);
  const v = new DataView(out.buffer);
  out[0] = kind;
  v.setUint16(1, toU16(x));
  v.setUint16(3, toU16(y));
  return out;
}

/**
 * A forwarded message: `from` u32, then a mark; null for anything else
 * (another page may speak its own format through the same relay).
 * @param {Uint8Array} payload
 * @returns {(Mark & { from: number }) | null}
 */
export function decodeRelayed(payload) {
  if (payload.length !== 9) return null;
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const kind = payload[4];
  if (kind !== Kind.CURSOR && kind !== Kind.STAMP) return null;
  return { from: v.getUint32(0), kind, x: v.getUint16(5) / 0xffff, y: v.getUint16(7) / 0xffff };
}
