// Node.js peer for `rally load s2`: a WebSocket broadcast server on the
// `ws` package that speaks just enough of Rally's protocol, version 2
// (PROTOCOL.md), for the same load generator to drive it: Hello -> Welcome
// (game "dots"), Ping -> Pong, and a Snapshot carrying a dots payload
// (17-byte header + 2 + 12 x players bytes, as Rally's dots game sends) to
// every client of a room at the tick rate. Rooms are created on demand by
// name, as in Rally. No roster (PlayerJoined), no resume, no messages.
//
// Like Rally's WebSocket path it is latest-only: a client whose socket has
// not taken the previous snapshot skips this one. Unlike Rally it sends one
// shared buffer to the whole room (ack_seq 0), which only favours the peer.
//
// Prints Rally's listening line when ready, so the tools start it as they
// start a Rally server: {"event":"listening","udp":"0.0.0.0:0",
// "tcp":"127.0.0.1:PORT","cert_sha256":""} -- no UDP side (WebSocket only)
// and no certificate (plain ws).
'use strict';

const { WebSocketServer } = require('ws');
const { performance } = require('perf_hooks');

const TICK_HZ = Number(process.env.PEER_TICK_HZ || 60);
const PROTOCOL_VERSION = 2;
const GAME = Buffer.from('dots');
// Rally's defaults (PROTOCOL.md §8), announced in Welcome.
const MAX_MESSAGE = 256;
const MAX_INPUT = 32;
const [host, port] = (process.env.PEER_LISTEN || '127.0.0.1:0').split(':');

const rooms = new Map(); // name -> { players: Map<ws, id>, nextId }
let tick = 0;

// Wall clock in microseconds, as Rally's server_time_us. Date.now() has
// only millisecond resolution and performance.timeOrigin can be off by up
// to a millisecond, so calibrate once: spin until Date.now() ticks over and
// pin that millisecond edge to the monotonic clock.
const EPOCH_OFFSET_US = (() => {
  const first = Date.now();
  let edge;
  while ((edge = Date.now()) === first) { /* spin, < 1 ms */ }
  return BigInt(edge) * 1000n - process.hrtime.bigint() / 1000n;
})();

function nowUs() {
  return EPOCH_OFFSET_US + process.hrtime.bigint() / 1000n;
}

function welcome(playerId) {
  // PROTOCOL.md §5: version, player_id, tick_hz, snapshot_every, tick,
  // resume_token, resume_window_ms, reliable_seq, client_seq, max_message,
  // max_input, game (str), then the game's app bytes: dots sends the arena
  // and speed (§12), 12 bytes.
  const b = Buffer.alloc(47 + GAME.length + 12);
  let o = 0;
  o = b.writeUInt8(0x81, o);
  o = b.writeUInt16BE(PROTOCOL_VERSION, o);
  o = b.writeUInt32BE(playerId, o);
  o = b.writeUInt16BE(TICK_HZ, o);
  o = b.writeUInt16BE(1, o); // snapshot_every
  o = b.writeUInt32BE(tick, o);
  o += 16; // resume token: zeros (the peer does not resume)
  o = b.writeUInt32BE(0, o); // resume_window_ms
  o = b.writeUInt32BE(0, o); // reliable_seq
  o = b.writeUInt32BE(0, o); // client_seq
  o = b.writeUInt16BE(MAX_MESSAGE, o);
  o = b.writeUInt8(MAX_INPUT, o);
  o = b.writeUInt8(GAME.length, o);
  o += GAME.copy(b, o);
  o = b.writeFloatBE(960, o);
  o = b.writeFloatBE(540, o);
  b.writeFloatBE(240, o);
  return b;
}

// Error (PROTOCOL.md §5, §6), then the close code 4000 + code.
function refuse(ws, code, name) {
  const reason = Buffer.from(name);
  const b = Buffer.alloc(4 + reason.length);
  b.writeUInt8(0x86, 0);
  b.writeUInt16BE(code, 1);
  b.writeUInt8(reason.length, 3);
  reason.copy(b, 4);
  ws.send(b);
  ws.close(4000 + code, name);
}

function onMessage(ws, data, isBinary) {
  if (!isBinary || data.length === 0) return refuse(ws, 1, 'bad_message');
  switch (data[0]) {
    case 0x01: { // Hello: version u16, room str, name str, app rest
      if (ws.room) return refuse(ws, 5, 'unexpected_message');
      if (data.length < 5) return refuse(ws, 1, 'bad_message');
      if (data.readUInt16BE(1) !== PROTOCOL_VERSION) return refuse(ws, 2, 'unsupported_version');
      const roomLen = data[3];
      if (roomLen === 0 || 4 + roomLen > data.length) return refuse(ws, 6, 'invalid_name');
      const name = data.toString('utf8', 4, 4 + roomLen);
      let room = rooms.get(name);
      if (!room) {
        room = { players: new Map(), nextId: 1 };
        rooms.set(name, room);
      }
      const id = room.nextId++;
      room.players.set(ws, id);
      ws.room = room;
      ws.send(welcome(id));
      break;
    }
    case 0x03: { // Ping
      const pong = Buffer.alloc(17);
      pong.writeUInt8(0x85, 0);
      data.copy(pong, 1, 1, 9);
      pong.writeBigUInt64BE(nowUs(), 9);
      ws.send(pong);
      break;
    }
    case 0x04: // Leave
      ws.close(1000, 'bye');
      break;
    default: // Input and anything else: ignored
      break;
  }
}

function broadcast() {
  tick = (tick + 1) >>> 0;
  const t = nowUs();
  for (const room of rooms.values()) {
    const n = room.players.size;
    if (n === 0) continue;
    // Snapshot: type, ack_seq, tick, server_time_us (17 bytes), then the
    // dots payload: count u16, count x (id u32, x f32, y f32).
    const b = Buffer.allocUnsafe(17 + 2 + 12 * n);
    let o = 0;
    o = b.writeUInt8(0x84, o);
    o = b.writeUInt32BE(0, o);
    o = b.writeUInt32BE(tick, o);
    o = b.writeBigUInt64BE(t, o);
    o = b.writeUInt16BE(n, o);
    for (const id of room.players.values()) {
      o = b.writeUInt32BE(id, o);
      o = b.writeFloatBE(100 + (id % 700), o);
      o = b.writeFloatBE(100 + (tick % 300), o);
    }
    for (const ws of room.players.keys()) {
      // Latest-only: skip a client that has not taken the last snapshot.
      if (ws.bufferedAmount > 0) continue;
      ws.send(b);
    }
  }
}

const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false, maxPayload: 4096 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => onMessage(ws, data, isBinary));
  ws.on('close', () => {
    if (ws.room) ws.room.players.delete(ws);
  });
  ws.on('error', () => {});
});
wss.on('listening', () => {
  const a = wss.address();
  const line = { event: 'listening', udp: '0.0.0.0:0', tcp: `${a.address}:${a.port}`, cert_sha256: '' };
  process.stdout.write(JSON.stringify(line) + '\n');
  // Drift-corrected tick loop: tick k is due at start + k * period.
  const period = 1000 / TICK_HZ;
  const start = performance.now();
  let k = 0;
  const loop = () => {
    broadcast();
    k += 1;
    // Skip missed ticks rather than bursting to catch up (as Rally's
    // MissedTickBehavior::Skip).
    const now = performance.now();
    if (start + k * period < now) k = Math.ceil((now - start) / period);
    setTimeout(loop, Math.max(0, start + k * period - now));
  };
  setTimeout(loop, period);
});
process.on('SIGTERM', () => process.exit(0));
