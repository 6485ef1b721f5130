// @ts-check
// Rally wire codec (PROTOCOL.md v2): message layouts, strict decoding and
// stream framing. Pure: bytes in, values out; no I/O, no clocks, no DOM, so
// it runs unchanged in browsers and in Node.
//
// The type bytes, the numbered events and the error names come from
// wire.js, generated from the server's table: this file never restates them.

import { PROTOCOL_VERSION, MsgType, NUMBERED, ERROR_NAMES } from './wire.js';

/** @typedef {(typeof ERROR_NAMES)[keyof typeof ERROR_NAMES]} ErrorName */

/**
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {number} version
 * @property {number} playerId
 * @property {number} tickHz
 * @property {number} snapshotEvery
 * @property {number} tick
 * @property {Uint8Array} resumeToken
 * @property {number} resumeWindowMs
 * @property {number} reliableSeq
 * @property {number} clientSeq
 * @property {number} maxMessage
 * @property {number} maxInput
 * @property {string} game
 * @property {Uint8Array} app
 */
/** @typedef {{ type: 'player_joined', playerId: number, name: string }} PlayerJoined */
/** @typedef {{ type: 'player_left', playerId: number }} PlayerLeft */
/** @typedef {{ type: 'snapshot', ackSeq: number, tick: number, serverTimeUs: number, payload: Uint8Array }} SnapshotMsg */
/** @typedef {{ type: 'snapshot_delta', ackSeq: number, tick: number, serverTimeUs: number, baseTick: number, codec: number, delta: Uint8Array }} SnapshotDeltaMsg */
/** @typedef {{ type: 'pong', clientTimeUs: number, serverTimeUs: number }} Pong */
/** @typedef {{ type: 'error', code: number, codeName: string, reason: string }} ErrorMsg */
/** @typedef {{ type: 'app', payload: Uint8Array }} AppMsg */
/** @typedef {{ type: 'app_unreliable', payload: Uint8Array }} AppUnreliableMsg */
/** @typedef {{ type: 'redirect', room: string, node: string, url: string, wtUrl: string, certHashes: Uint8Array[] }} RedirectMsg */
/** @typedef {Welcome | PlayerJoined | PlayerLeft | SnapshotMsg | SnapshotDeltaMsg | Pong | ErrorMsg | AppMsg | AppUnreliableMsg | RedirectMsg} ServerMessage */

/** Error code by name, inverted from ERROR_NAMES (PROTOCOL.md §6). */
export const ErrorCode = /** @type {Readonly<Record<ErrorName, number>>} */ (
  Object.freeze(Object.fromEntries(Object.entries(ERROR_NAMES).map(([code, name]) => [name, Number(code)])))
);

/**
 * Errors after which reconnecting cannot help: the same Hello would be
 * refused again, or another session now owns the player.
 */
export const NO_RETRY_CODES = Object.freeze(
  /** @type {ErrorName[]} */ (['unsupported_version', 'invalid_name', 'unauthorized', 'replaced', 'join_refused']).map((n) => ErrorCode[n]),
);

/** Inputs carried per Input message: the newest plus 3 repeats (PROTOCOL.md §4). */
export const INPUT_REDUNDANCY = 4;
/** Most inputs one Input message may carry (PROTOCOL.md §4). */
export const MAX_INPUTS_PER_MESSAGE = 8;
export const MAX_ROOM_BYTES = 32;
export const MAX_NAME_BYTES = 24;
/** A frame's length is a u16 (PROTOCOL.md §2): no message can be longer. */
const MAX_FRAME = 0xffff;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const EMPTY = new Uint8Array(0);

/** A server message failed to decode. */
export class DecodeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

/** The server reported an Error message (or closed with a Rally close code). */
export class RallyError extends Error {
  /**
   * @param {number} code
   * @param {string} [reason]
   */
  constructor(code, reason = '') {
    const name = errorName(code);
    super(reason ? `${name}: ${reason}` : name);
    this.name = 'RallyError';
    this.code = code;
    this.codeName = name;
    this.reason = reason;
  }
}

/**
 * Cluster mode: the room lives on another node (a `Redirect` answered
 * Hello, PROTOCOL.md §13). connect() follows it.
 */
export class RedirectError extends RallyError {
  /** @param {RedirectMsg} redirect */
  constructor(redirect) {
    super(ErrorCode.moved, `room ${redirect.room} is on node ${redirect.node}`);
    this.name = 'RedirectError';
    this.redirect = redirect;
  }
}

/**
 * The name of error `code`, or `error_N` for a code this client does not know.
 * @param {number} code
 * @returns {string}
 */
function errorName(code) {
  return /** @type {Record<number, string>} */ (ERROR_NAMES)[code] ?? `error_${code}`;
}

const ROOM_RE = /^[A-Za-z0-9_-]+$/;
// Unicode category Cc, as Rust's char::is_control.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Returns null when `room` is a valid room name, else why not.
 * @param {unknown} room
 * @returns {string | null}
 */
export function checkRoom(room) {
  if (typeof room !== 'string') return 'room must be a string';
  const n = utf8.encode(room).length;
  if (n < 1 || n > MAX_ROOM_BYTES) return `room must be 1-${MAX_ROOM_BYTES} bytes`;
  if (!ROOM_RE.test(room)) return 'room may only contain A-Z a-z 0-9 _ -';
  return null;
}

/**
 * Returns null when `name` is a valid player name, else why not.
 * @param {unknown} name
 * @returns {string | null}
 */
export function checkName(name) {
  if (typeof name !== 'string') return 'name must be a string';
  const n = utf8.encode(name).length;
  if (n < 1 || n > MAX_NAME_BYTES) return `name must be 1-${MAX_NAME_BYTES} bytes of UTF-8`;
  if (CONTROL_RE.test(name)) return 'name must not contain control characters';
  if (name.trim() === '') return 'name must not be only whitespace';
  return null;
}

/**
 * Cuts `s` to at most `maxBytes` of UTF-8 without splitting a character.
 * @param {string} s
 * @param {number} maxBytes
 * @returns {string}
 */
export function truncateUtf8(s, maxBytes) {
  let out = '';
  let n = 0;
  for (const ch of s) {
    const len = utf8.encode(ch).length;
    if (n + len > maxBytes) break;
    out += ch;
    n += len;
  }
  return out;
}

/**
 * @param {unknown} bytes
 * @param {string} what
 * @returns {Uint8Array}
 */
function requireBytes(bytes, what) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  return bytes;
}

/** @param {number | bigint} v */
function toU64(v) {
  const b = typeof v === 'bigint' ? v : BigInt(Math.max(0, Math.floor(v)));
  return BigInt.asUintN(64, b);
}

/**
 * One message of `size` bytes starting with `type`.
 * @param {number} type
 * @param {number} size
 */
function message(type, size) {
  if (size > MAX_FRAME) throw new RangeError(`a message is at most ${MAX_FRAME} bytes (got ${size})`);
  const out = new Uint8Array(size);
  out[0] = type;
  return { out, dv: new DataView(out.buffer) };
}

/**
 * Hello (0x01): version u16, room str, name str, app rest (PROTOCOL.md §4).
 * Throws TypeError on names the server would refuse.
 * @param {string} room
 * @param {string} name
 * @param {Uint8Array} [app] the game's join bytes
 * @param {number} [version] only tests send another version than PROTOCOL_VERSION
 * @returns {Uint8Array}
 */
export function encodeHello(room, name, app = EMPTY, version = PROTOCOL_VERSION) {
  const bad = checkRoom(room) || checkName(name);
  if (bad) throw new TypeError(bad);
  requireBytes(app, 'Hello app');
  const r = utf8.encode(room);
  const n = utf8.encode(name);
  const { out, dv } = message(MsgType.HELLO, 5 + r.length + n.length + app.length);
  dv.setUint16(1, version);
  out[3] = r.length;
  out.set(r, 4);
  out[4 + r.length] = n.length;
  out.set(n, 5 + r.length);
  out.set(app, 5 + r.length + n.length);
  return out;
}

/**
 * The size of an Input message carrying `inputs` (PROTOCOL.md §4).
 * @param {readonly Uint8Array[]} inputs
 * @returns {number}
 */
export function inputMessageSize(inputs) {
  let size = 6 + inputs.length;
  for (const b of inputs) size += b.length;
  return size;
}

/**
 * Input (0x02): newest_seq u32, count u8, count × (len u8, bytes), newest first.
 * @param {number} newestSeq
 * @param {readonly Uint8Array[]} inputsNewestFirst
 * @returns {Uint8Array}
 */
export function encodeInput(newestSeq, inputsNewestFirst) {
  if (inputsNewestFirst.length < 1) throw new RangeError(`an Input carries 1-${MAX_INPUTS_PER_MESSAGE} inputs`);
  return encodeInputs(MsgType.INPUT, [], newestSeq, inputsNewestFirst);
}

/**
 * Input and InputAck: the type, then `before` (u32s), newest_seq u32, count
 * u8, count × (len u8, bytes), newest first.
 * @param {number} type
 * @param {readonly number[]} before
 * @param {number} newestSeq
 * @param {readonly Uint8Array[]} inputsNewestFirst
 * @returns {Uint8Array}
 */
function encodeInputs(type, before, newestSeq, inputsNewestFirst) {
  const count = inputsNewestFirst.length;
  if (count > MAX_INPUTS_PER_MESSAGE) throw new RangeError(`a message carries at most ${MAX_INPUTS_PER_MESSAGE} inputs`);
  if (!Number.isInteger(newestSeq) || newestSeq < count || newestSeq > 0xffffffff) {
    throw new RangeError('newest_seq must be a u32 >= count');
  }
  for (const b of inputsNewestFirst) {
    if (requireBytes(b, 'an input').length > 0xff) throw new RangeError('an input is at most 255 bytes');
  }
  const { out, dv } = message(type, inputMessageSize(inputsNewestFirst) + 4 * before.length);
  let o = 1;
  for (const v of before) {
    dv.setUint32(o, v);
    o += 4;
  }
  dv.setUint32(o, newestSeq);
  out[o + 4] = count;
  o += 5;
  for (const b of inputsNewestFirst) {
    out[o++] = b.length;
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/**
 * InputAck (0x08): snapshot_tick u32, newest_seq u32, count u8 (0-8),
 * count × (len u8, bytes), newest first (PROTOCOL.md §4).
 * @param {number} snapshotTick the newest snapshot tick the client has whole (0: none)
 * @param {number} newestSeq
 * @param {readonly Uint8Array[]} inputsNewestFirst
 * @returns {Uint8Array}
 */
export function encodeInputAck(snapshotTick, newestSeq, inputsNewestFirst) {
  if (!Number.isInteger(snapshotTick) || snapshotTick < 0 || snapshotTick > 0xffffffff) throw new RangeError('snapshot_tick must be a u32');
  return encodeInputs(MsgType.INPUT_ACK, [snapshotTick], newestSeq, inputsNewestFirst);
}

/**
 * Ping (0x03): client_time_us u64 (number or bigint).
 * @param {number | bigint} clientTimeUs
 * @returns {Uint8Array}
 */
export function encodePing(clientTimeUs) {
  const { out, dv } = message(MsgType.PING, 9);
  dv.setBigUint64(1, toU64(clientTimeUs));
  return out;
}

/**
 * Leave (0x04): the type byte only.
 * @returns {Uint8Array}
 */
export function encodeLeave() {
  return Uint8Array.of(MsgType.LEAVE);
}

/**
 * Resume (0x05): version u16, token 16 bytes, last_seq u32 (PROTOCOL.md §4, §7.1).
 * @param {Uint8Array} token
 * @param {number} lastSeq
 * @returns {Uint8Array}
 */
export function encodeResume(token, lastSeq) {
  if (requireBytes(token, 'a resume token').length !== 16) throw new RangeError('a resume token is 16 bytes');
  const { out, dv } = message(MsgType.RESUME, 23);
  dv.setUint16(1, PROTOCOL_VERSION);
  out.set(token, 3);
  dv.setUint32(19, lastSeq >>> 0);
  return out;
}

/**
 * App (0x06) or AppUnreliable (0x07): the game's bytes after the type byte.
 * @param {Uint8Array} payload
 * @param {boolean} [reliable]
 * @returns {Uint8Array}
 */
export function encodeApp(payload, reliable = true) {
  requireBytes(payload, 'an App payload');
  const { out } = message(reliable ? MsgType.APP : MsgType.APP_UNRELIABLE, 1 + payload.length);
  out.set(payload, 1);
  return out;
}

/**
 * Prefixes one message with its u16 big-endian length (PROTOCOL.md §2).
 * @param {Uint8Array} msg
 * @returns {Uint8Array}
 */
export function encodeFrame(msg) {
  if (msg.length < 1 || msg.length > MAX_FRAME) throw new RangeError(`frame length must be 1..=${MAX_FRAME}`);
  const out = new Uint8Array(2 + msg.length);
  out[0] = msg.length >> 8;
  out[1] = msg.length & 0xff;
  out.set(msg, 2);
  return out;
}

/** A bounds-checked big-endian reader over one message. */
class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.o = 0;
  }
  /** @param {number} n */
  need(n) {
    if (this.o + n > this.b.length) throw new DecodeError('message truncated');
  }
  u8() { this.need(1); return this.b[this.o++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.o); this.o += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.o); this.o += 4; return v; }
  // Microsecond clocks fit a double exactly until the year 2255.
  u64() { this.need(8); const v = this.dv.getBigUint64(this.o); this.o += 8; return Number(v); }
  /** @param {number} n */
  bytes(n) { this.need(n); const v = this.b.slice(this.o, this.o + n); this.o += n; return v; }
  /** Every remaining byte (PROTOCOL.md §3 `rest`): a view, not a copy. */
  rest() { const v = this.b.subarray(this.o); this.o = this.b.length; return v; }
  str() {
    const n = this.u8();
    this.need(n);
    const raw = this.b.subarray(this.o, this.o + n);
    this.o += n;
    try {
      return utf8Strict.decode(raw);
    } catch {
      throw new DecodeError('string is not valid UTF-8');
    }
  }
  finish() {
    const left = this.b.length - this.o;
    if (left !== 0) throw new DecodeError(`${left} trailing bytes after message`);
  }
}

/**
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {Uint8Array}
 */
function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected bytes');
}

/**
 * @param {Reader} r
 * @returns {Welcome}
 */
function decodeWelcome(r) {
  const version = r.u16();
  // The rest of the layout is version 2's: another version cannot be read.
  if (version !== PROTOCOL_VERSION) throw new DecodeError(`Welcome of protocol version ${version}; this client speaks ${PROTOCOL_VERSION}`);
  return {
    type: 'welcome',
    version,
    playerId: r.u32(),
    tickHz: r.u16(),
    snapshotEvery: r.u16(),
    tick: r.u32(),
    resumeToken: r.bytes(16),
    resumeWindowMs: r.u32(),
    reliableSeq: r.u32(),
    clientSeq: r.u32(),
    maxMessage: r.u16(),
    maxInput: r.u8(),
    game: r.str(),
    app: r.rest(),
  };
}

/**
 * Decodes one server→client message. Throws DecodeError on anything
 * PROTOCOL.md does not allow (unknown type, truncation, trailing bytes,
 * invalid UTF-8). `rest` fields (payload, app) are views into `data`.
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {ServerMessage}
 */
export function decodeServerMessage(data) {
  const bytes = asBytes(data);
  if (bytes.length === 0) throw new DecodeError('empty message');
  const r = new Reader(bytes);
  const type = r.u8();
  /** @type {ServerMessage} */
  let msg;
  switch (type) {
    case MsgType.WELCOME:
      msg = decodeWelcome(r);
      break;
    case MsgType.PLAYER_JOINED:
      msg = { type: 'player_joined', playerId: r.u32(), name: r.str() };
      break;
    case MsgType.PLAYER_LEFT:
      msg = { type: 'player_left', playerId: r.u32() };
      break;
    case MsgType.SNAPSHOT:
      msg = { type: 'snapshot', ackSeq: r.u32(), tick: r.u32(), serverTimeUs: r.u64(), payload: r.rest() };
      break;
    case MsgType.SNAPSHOT_DELTA:
      msg = {
        type: 'snapshot_delta',
        ackSeq: r.u32(),
        tick: r.u32(),
        serverTimeUs: r.u64(),
        baseTick: r.u32(),
        codec: r.u8(),
        delta: r.rest(),
      };
      break;
    case MsgType.PONG:
      msg = { type: 'pong', clientTimeUs: r.u64(), serverTimeUs: r.u64() };
      break;
    case MsgType.ERROR: {
      const code = r.u16();
      msg = { type: 'error', code, codeName: errorName(code), reason: r.str() };
      break;
    }
    case MsgType.SERVER_APP:
      msg = { type: 'app', payload: r.rest() };
      break;
    case MsgType.SERVER_APP_UNRELIABLE:
      msg = { type: 'app_unreliable', payload: r.rest() };
      break;
    case MsgType.REDIRECT: {
      const room = r.str();
      const node = r.str();
      const url = r.str();
      const wtUrl = r.str();
      const n = r.u8();
      /** @type {Uint8Array[]} */
      const certHashes = [];
      for (let i = 0; i < n; i++) certHashes.push(r.bytes(32));
      msg = { type: 'redirect', room, node, url, wtUrl, certHashes };
      break;
    }
    default:
      throw new DecodeError(`unknown message type 0x${type.toString(16).padStart(2, '0')}`);
  }
  r.finish();
  return msg;
}

/** Decoded `type` → its type byte, to look messages up in NUMBERED. */
const TYPE_BYTE = Object.freeze({
  welcome: MsgType.WELCOME,
  player_joined: MsgType.PLAYER_JOINED,
  player_left: MsgType.PLAYER_LEFT,
  snapshot: MsgType.SNAPSHOT,
  snapshot_delta: MsgType.SNAPSHOT_DELTA,
  pong: MsgType.PONG,
  error: MsgType.ERROR,
  app: MsgType.SERVER_APP,
  app_unreliable: MsgType.SERVER_APP_UNRELIABLE,
  redirect: MsgType.REDIRECT,
});

/**
 * Whether `msg` is a numbered event, counted for Resume.last_seq (PROTOCOL.md §7.1).
 * @param {ServerMessage} msg
 * @returns {boolean}
 */
export function isNumbered(msg) {
  return NUMBERED.includes(TYPE_BYTE[msg.type]);
}

/**
 * Reassembles length-prefixed frames from a byte stream: a frame may arrive
 * split across reads and one read may hold several frames (PROTOCOL.md §2).
 */
export class FrameDecoder {
  /** @internal */
  buf = EMPTY;

  /**
   * Adds bytes; returns the payloads of every frame now complete.
   * @param {ArrayBuffer | ArrayBufferView} chunk
   * @returns {Uint8Array[]}
   */
  push(chunk) {
    const bytes = asBytes(chunk);
    if (this.buf.length === 0) {
      this.buf = bytes.slice();
    } else {
      const joined = new Uint8Array(this.buf.length + bytes.length);
      joined.set(this.buf);
      joined.set(bytes, this.buf.length);
      this.buf = joined;
    }
    const out = [];
    let o = 0;
    while (this.buf.length - o >= 2) {
      const len = (this.buf[o] << 8) | this.buf[o + 1];
      if (len === 0) throw new DecodeError('zero-length frame');
      if (this.buf.length - o - 2 < len) break;
      out.push(this.buf.slice(o + 2, o + 2 + len));
      o += 2 + len;
    }
    if (o > 0) this.buf = this.buf.slice(o);
    return out;
  }

  /** Bytes held for an incomplete frame. */
  get pending() {
    return this.buf.length;
  }
}
