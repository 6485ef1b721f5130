// @ts-check
// The dots game's bytes and rules as the client needs them (PROTOCOL.md
// §12, dots). Pure, so tests can hold them against the appendix.

/** Input button bits. */
export const Buttons = Object.freeze({ UP: 1, DOWN: 2, LEFT: 4, RIGHT: 8 });
/** A chat message is 1-200 bytes of UTF-8. */
export const MAX_CHAT_BYTES = 200;

/** @typedef {{ arenaW: number, arenaH: number, speed: number }} DotsWorld */
/** @typedef {{ id: number, x: number, y: number }} Dot */

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** @param {Uint8Array} b */
function view(b) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Welcome.app: arena_w f32, arena_h f32, speed f32.
 * @param {Uint8Array} app
 * @returns {DotsWorld}
 */
export function decodeWelcome(app) {
  if (app.length !== 12) throw new RangeError(`dots Welcome.app is 12 bytes, got ${app.length}`);
  const v = view(app);
  return { arenaW: v.getFloat32(0), arenaH: v.getFloat32(4), speed: v.getFloat32(8) };
}

/**
 * Snapshot.payload: count u16, then count × (id u32, x f32, y f32), by id.
 * @param {Uint8Array} payload
 * @returns {Dot[]}
 */
export function decodeSnapshot(payload) {
  if (payload.length < 2) throw new RangeError('dots snapshot truncated');
  const v = view(payload);
  const count = v.getUint16(0);
  if (payload.length !== 2 + 12 * count) throw new RangeError(`dots snapshot of ${count} players is ${2 + 12 * count} bytes, got ${payload.length}`);
  const dots = new Array(count);
  for (let i = 0, o = 2; i < count; i++, o += 12) dots[i] = { id: v.getUint32(o), x: v.getFloat32(o + 4), y: v.getFloat32(o + 8) };
  return dots;
}

/**
 * One input: 1 byte of buttons.
 * @param {number} buttons
 */
export function encodeInput(buttons) {
  return Uint8Array.of(buttons & 15);
}

/**
 * Where one input moves a dot, as the server does: speed / tickHz along
 * the held direction, opposite buttons cancelling, diagonals not
 * normalised, clamped to the arena.
 * @param {{ x: number, y: number }} at
 * @param {Uint8Array} input
 * @param {DotsWorld & { tickHz: number }} world
 */
export function step(at, input, world) {
  const b = input[0] ?? 0;
  const d = world.speed / world.tickHz;
  const dx = (b & Buttons.RIGHT ? 1 : 0) - (b & Buttons.LEFT ? 1 : 0);
  const dy = (b & Buttons.DOWN ? 1 : 0) - (b & Buttons.UP ? 1 : 0);
  return {
    x: Math.min(world.arenaW, Math.max(0, at.x + dx * d)),
    y: Math.min(world.arenaH, Math.max(0, at.y + dy * d)),
  };
}

/**
 * A chat line as the client sends it (App): its UTF-8, cut to 200 bytes
 * on a character boundary; null when there is nothing to send.
 * @param {string} text
 * @returns {Uint8Array | null}
 */
export function encodeChat(text) {
  let bytes = utf8.encode(text.trim());
  if (bytes.length > MAX_CHAT_BYTES) {
    let end = MAX_CHAT_BYTES;
    while ((bytes[end] & 0xc0) === 0x80) end--; // back to the start of a character
    bytes = bytes.slice(0, end);
  }
  return bytes.length ? bytes : null;
}

/**
 * A chat line as the server sends it (App): the sender's id u32, then the text.
 * @param {Uint8Array} payload
 * @returns {{ from: number, text: string }}
 */
export function decodeChat(payload) {
  if (payload.length < 4) throw new RangeError('dots chat message truncated');
  return { from: view(payload).getUint32(0), text: utf8Strict.decode(payload.subarray(4)) };
}
