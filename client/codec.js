// Rally wire codec (PROTOCOL.md v1): message layouts, strict decoding and
// stream framing. Pure: bytes in, values out; no I/O, no clocks, no DOM, so
// it runs unchanged in browsers and in Node.

export const PROTOCOL_VERSION = 1;

/** Message type bytes (PROTOCOL.md §4, §5). */
export const MsgType = Object.freeze({
  HELLO: 0x01,
  INPUT: 0x02,
  PING: 0x03,
  LEAVE: 0x04,
  RESUME: 0x05,
  WELCOME: 0x81,
  PLAYER_JOINED: 0x82,
  PLAYER_LEFT: 0x83,
  SNAPSHOT: 0x84,
  PONG: 0x85,
  ERROR: 0x86,
});

/** Input button bits (PROTOCOL.md §4, Input). */
export const Buttons = Object.freeze({ UP: 1, DOWN: 2, LEFT: 4, RIGHT: 8, ALL: 15 });

/** Error code → name (PROTOCOL.md §6). */
export const ERROR_NAMES = Object.freeze({
  1: 'bad_message',
  2: 'unsupported_version',
  3: 'unknown_message',
  4: 'message_too_large',
  5: 'unexpected_message',
  6: 'invalid_name',
  7: 'room_full',
  8: 'server_full',
  9: 'too_slow',
  10: 'shutting_down',
  11: 'hello_timeout',
  12: 'internal',
  13: 'rate_limited',
  14: 'unauthorized',
  15: 'token_expired',
  16: 'resume_failed',
  17: 'replaced',
});

/** Error codes (PROTOCOL.md §6) the client acts on by number. */
export const ErrorCode = Object.freeze({ RESUME_FAILED: 16, REPLACED: 17 });

/** Errors after which reconnecting cannot help: the same Hello would fail again. */
export const NO_RETRY_CODES = Object.freeze([2, 6, 14, 17]);

/** Largest message a client may send on any channel (PROTOCOL.md §8). */
export const MAX_CLIENT_MESSAGE = 256;
/** Inputs carried per Input message: the newest plus 3 repeats (PROTOCOL.md §4). */
export const INPUT_REDUNDANCY = 4;
export const MAX_ROOM_BYTES = 32;
export const MAX_NAME_BYTES = 24;

// ---------------------------------------------------------------------------
// Codec (pure)
// ---------------------------------------------------------------------------

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** A server message failed to decode. */
export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

/** The server reported an Error message (or closed with a Rally close code). */
export class RallyError extends Error {
  constructor(code, reason) {
    const name = ERROR_NAMES[code] || `error_${code}`;
    super(reason ? `${name}: ${reason}` : name);
    this.name = 'RallyError';
    this.code = code;
    this.codeName = name;
    this.reason = reason || '';
  }
}

const ROOM_RE = /^[A-Za-z0-9_-]+$/;
// Unicode category Cc, as Rust's char::is_control.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/** Returns null when `room` is a valid room name, else why not. */
export function checkRoom(room) {
  if (typeof room !== 'string') return 'room must be a string';
  const n = utf8.encode(room).length;
  if (n < 1 || n > MAX_ROOM_BYTES) return `room must be 1-${MAX_ROOM_BYTES} bytes`;
  if (!ROOM_RE.test(room)) return 'room may only contain A-Z a-z 0-9 _ -';
  return null;
}

/** Returns null when `name` is a valid player name, else why not. */
export function checkName(name) {
  if (typeof name !== 'string') return 'name must be a string';
  const n = utf8.encode(name).length;
  if (n < 1 || n > MAX_NAME_BYTES) return `name must be 1-${MAX_NAME_BYTES} bytes of UTF-8`;
  if (CONTROL_RE.test(name)) return 'name must not contain control characters';
  return null;
}

/** Cuts `s` to at most `maxBytes` of UTF-8 without splitting a character. */
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

function toBigU64(v) {
  const b = typeof v === 'bigint' ? v : BigInt(Math.max(0, Math.floor(Number(v))));
  return BigInt.asUintN(64, b);
}

/** Hello (0x01): version u16, room str, name str. Throws TypeError on bad names. */
export function encodeHello(room, name, version = PROTOCOL_VERSION) {
  const bad = checkRoom(room) || checkName(name);
  if (bad) throw new TypeError(bad);
  const r = utf8.encode(room);
  const n = utf8.encode(name);
  const out = new Uint8Array(5 + r.length + n.length);
  const dv = new DataView(out.buffer);
  out[0] = MsgType.HELLO;
  dv.setUint16(1, version);
  out[3] = r.length;
  out.set(r, 4);
  out[4 + r.length] = n.length;
  out.set(n, 5 + r.length);
  return out;
}

/** Input (0x02): newest_seq u32, count u8, buttons newest first. */
export function encodeInput(newestSeq, buttonsNewestFirst) {
  const count = buttonsNewestFirst.length;
  if (count < 1 || count > 8) throw new RangeError('an Input carries 1-8 inputs');
  if (!Number.isInteger(newestSeq) || newestSeq < count || newestSeq > 0xffffffff) {
    throw new RangeError('newest_seq must be an integer >= count');
  }
  const out = new Uint8Array(6 + count);
  const dv = new DataView(out.buffer);
  out[0] = MsgType.INPUT;
  dv.setUint32(1, newestSeq);
  out[5] = count;
  for (let i = 0; i < count; i++) {
    const b = buttonsNewestFirst[i];
    if (!Number.isInteger(b) || (b & ~Buttons.ALL) !== 0) throw new RangeError('bad buttons byte');
    out[6 + i] = b;
  }
  return out;
}

/** Ping (0x03): client_time_us u64 (number or bigint). */
export function encodePing(clientTimeUs) {
  const out = new Uint8Array(9);
  out[0] = MsgType.PING;
  new DataView(out.buffer).setBigUint64(1, toBigU64(clientTimeUs));
  return out;
}

/** Leave (0x04): the type byte only. */
export function encodeLeave() {
  return Uint8Array.of(MsgType.LEAVE);
}

/** Resume (0x05): version u16, token 16 bytes, last_seq u32 (PROTOCOL.md §7.1). */
export function encodeResume(token, lastSeq) {
  const t = asBytes(token);
  if (t.length !== 16) throw new RangeError('a resume token is 16 bytes');
  const out = new Uint8Array(23);
  const dv = new DataView(out.buffer);
  out[0] = MsgType.RESUME;
  dv.setUint16(1, PROTOCOL_VERSION);
  out.set(t, 3);
  dv.setUint32(19, lastSeq >>> 0);
  return out;
}

/** Prefixes one message with its u16 big-endian length (PROTOCOL.md §2). */
export function encodeFrame(message) {
  if (message.length < 1 || message.length > 0xffff) throw new RangeError('frame length must be 1..=65535');
  const out = new Uint8Array(2 + message.length);
  out[0] = message.length >> 8;
  out[1] = message.length & 0xff;
  out.set(message, 2);
  return out;
}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.o = 0;
  }
  need(n) {
    if (this.o + n > this.b.length) throw new DecodeError('message truncated');
  }
  u8() { this.need(1); return this.b[this.o++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.o); this.o += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.o); this.o += 4; return v; }
  // Microsecond clocks fit a double exactly until year 2255.
  u64() { this.need(8); const v = this.dv.getBigUint64(this.o); this.o += 8; return Number(v); }
  f32() { this.need(4); const v = this.dv.getFloat32(this.o); this.o += 4; return v; }
  bytes(n) { this.need(n); const v = this.b.slice(this.o, this.o + n); this.o += n; return v; }
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
    const rest = this.b.length - this.o;
    if (rest !== 0) throw new DecodeError(`${rest} trailing bytes after message`);
  }
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected bytes');
}

/**
 * Decodes one server→client message. Throws DecodeError on anything
 * PROTOCOL.md does not allow (unknown type, truncation, trailing bytes).
 */
export function decodeServerMessage(data) {
  const bytes = asBytes(data);
  if (bytes.length === 0) throw new DecodeError('empty message');
  const r = new Reader(bytes);
  const type = r.u8();
  let msg;
  switch (type) {
    case MsgType.WELCOME:
      msg = {
        type: 'welcome',
        version: r.u16(),
        playerId: r.u32(),
        tickHz: r.u16(),
        snapshotEvery: r.u16(),
        arenaW: r.f32(),
        arenaH: r.f32(),
        speed: r.f32(),
        tick: r.u32(),
        resumeToken: r.bytes(16),
        resumeWindowMs: r.u32(),
        reliableSeq: r.u32(),
      };
      break;
    case MsgType.PLAYER_JOINED:
      msg = { type: 'player_joined', playerId: r.u32(), name: r.str() };
      break;
    case MsgType.PLAYER_LEFT:
      msg = { type: 'player_left', playerId: r.u32() };
      break;
    case MsgType.SNAPSHOT: {
      const ackSeq = r.u32();
      const tick = r.u32();
      const serverTimeUs = r.u64();
      const count = r.u16();
      r.need(count * 12);
      const players = new Array(count);
      for (let i = 0; i < count; i++) players[i] = { id: r.u32(), x: r.f32(), y: r.f32() };
      msg = { type: 'snapshot', ackSeq, tick, serverTimeUs, players };
      break;
    }
    case MsgType.PONG:
      msg = { type: 'pong', clientTimeUs: r.u64(), serverTimeUs: r.u64() };
      break;
    case MsgType.ERROR: {
      const code = r.u16();
      const reason = r.str();
      msg = { type: 'error', code, codeName: ERROR_NAMES[code] || `error_${code}`, reason };
      break;
    }
    default:
      throw new DecodeError(`unknown message type 0x${type.toString(16).padStart(2, '0')}`);
  }
  r.finish();
  return msg;
}

/**
 * Reassembles length-prefixed frames from a byte stream: a frame may arrive
 * split across reads and one read may hold several frames (PROTOCOL.md §2).
 */
export class FrameDecoder {
  constructor() {
    this.buf = new Uint8Array(0);
  }
  /** Adds bytes; returns the payloads of every frame now complete. */
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
