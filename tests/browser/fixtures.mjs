// The server's side of PROTOCOL.md v2, written again from the document with
// Node's Buffer (not with client/codec.js), so the pure tests compare two
// independent readings of the protocol: encoders for server messages, a
// parser for client messages.

const TOKEN = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);

function str(s) {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length]), b]);
}

const u8 = (b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

/** Welcome (0x81), every field overridable. */
export function welcomeBytes({
  version = 2, playerId = 7, tickHz = 60, snapshotEvery = 1, tick = 100, token = TOKEN,
  resumeWindowMs = 10_000, reliableSeq = 0, clientSeq = 0, maxMessage = 256, maxInput = 32,
  game = 'dots', app = new Uint8Array(0),
} = {}) {
  const head = Buffer.alloc(46);
  head[0] = 0x81;
  head.writeUInt16BE(version, 1);
  head.writeUInt32BE(playerId, 3);
  head.writeUInt16BE(tickHz, 7);
  head.writeUInt16BE(snapshotEvery, 9);
  head.writeUInt32BE(tick, 11);
  Buffer.from(token).copy(head, 15);
  head.writeUInt32BE(resumeWindowMs, 31);
  head.writeUInt32BE(reliableSeq, 35);
  head.writeUInt32BE(clientSeq, 39);
  head.writeUInt16BE(maxMessage, 43);
  head[45] = maxInput;
  return u8(Buffer.concat([head, str(game), Buffer.from(app)]));
}

export const RESUME_TOKEN = TOKEN;

export function joinedBytes(id, name) {
  const b = Buffer.alloc(5);
  b[0] = 0x82;
  b.writeUInt32BE(id, 1);
  return u8(Buffer.concat([b, str(name)]));
}

export function leftBytes(id) {
  const b = Buffer.alloc(5);
  b[0] = 0x83;
  b.writeUInt32BE(id, 1);
  return u8(b);
}

export function snapshotBytes(tick, { ackSeq = 0, payload = new Uint8Array([tick & 0xff]), serverTimeUs = 1_700_000_000_000_000n + BigInt(tick) } = {}) {
  const b = Buffer.alloc(17);
  b[0] = 0x84;
  b.writeUInt32BE(ackSeq, 1);
  b.writeUInt32BE(tick, 5);
  b.writeBigUInt64BE(BigInt(serverTimeUs), 9);
  return u8(Buffer.concat([b, Buffer.from(payload)]));
}

export function pongBytes(clientTimeUs, serverTimeUs = 5n) {
  const b = Buffer.alloc(17);
  b[0] = 0x85;
  b.writeBigUInt64BE(BigInt(clientTimeUs), 1);
  b.writeBigUInt64BE(BigInt(serverTimeUs), 9);
  return u8(b);
}

export function errorBytes(code, reason) {
  const b = Buffer.alloc(3);
  b[0] = 0x86;
  b.writeUInt16BE(code, 1);
  return u8(Buffer.concat([b, str(reason)]));
}

/** Server App (0x87) or AppUnreliable (0x88). */
export function appBytes(payload, { reliable = true } = {}) {
  return u8(Buffer.concat([Buffer.from([reliable ? 0x87 : 0x88]), Buffer.from(payload)]));
}

/** Parses one client→server message (PROTOCOL.md §4); throws on anything malformed. */
export function parseClient(bytes) {
  const b = Buffer.from(bytes);
  let o = 1;
  const need = (n) => {
    if (o + n > b.length) throw new Error(`client message truncated: ${b.toString('hex')}`);
  };
  const s = () => {
    need(1);
    const n = b[o++];
    need(n);
    const v = b.subarray(o, o + n).toString('utf8');
    o += n;
    return v;
  };
  const done = (msg) => {
    if (o !== b.length) throw new Error(`trailing bytes in client message ${b.toString('hex')}`);
    return msg;
  };
  // newest_seq u32, count u8, count × (len u8, bytes), from `o`.
  const inputs = () => {
    need(5);
    const newestSeq = b.readUInt32BE(o);
    const count = b[o + 4];
    o += 5;
    const list = [];
    for (let i = 0; i < count; i++) {
      need(1);
      const n = b[o++];
      need(n);
      list.push([...b.subarray(o, o + n)]);
      o += n;
    }
    return { newestSeq, inputs: list };
  };
  switch (b[0]) {
    case 0x01: {
      need(2);
      const version = b.readUInt16BE(1);
      o = 3;
      const room = s();
      const name = s();
      const app = new Uint8Array(b.subarray(o));
      o = b.length;
      return done({ type: 'hello', version, room, name, app });
    }
    case 0x02:
      o = 1;
      return done({ type: 'input', ...inputs() });
    case 0x08: {
      // InputAck (PROTOCOL.md §4): an Input that acknowledges a snapshot.
      need(4);
      const ack = b.readUInt32BE(1);
      o = 5;
      return done({ type: 'input', ack, ...inputs() });
    }
    case 0x03:
      need(8);
      o = 9;
      return done({ type: 'ping', clientTimeUs: b.readBigUInt64BE(1) });
    case 0x04:
      return done({ type: 'leave' });
    case 0x05:
      need(22);
      o = 23;
      return done({ type: 'resume', version: b.readUInt16BE(1), token: new Uint8Array(b.subarray(3, 19)), lastSeq: b.readUInt32BE(19) });
    case 0x06:
    case 0x07:
      return { type: b[0] === 0x06 ? 'app' : 'app_unreliable', payload: new Uint8Array(b.subarray(1)) };
    default:
      throw new Error(`unknown client message type 0x${b[0].toString(16)}`);
  }
}
