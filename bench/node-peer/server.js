// Node.js peer for `rally load s2`: a WebSocket broadcast server on the
// `ws` package that speaks just enough of Rally's protocol (PROTOCOL.md) for
// the same load generator to drive it: Hello -> Welcome, Ping -> Pong, and a
// Rally-format Snapshot (19 + 12 x players bytes) to every client of a room
// at the tick rate. Rooms are created on demand by name, as in Rally.
//
// Like Rally's WebSocket path it is latest-only: a client whose socket has
// not taken the previous snapshot skips this one. Unlike Rally it sends one
// shared buffer to the whole room (ack_seq 0), which only favours the peer.
//
// Prints one line {"event":"listening","tcp":"127.0.0.1:PORT"} when ready.
'use strict';

const { WebSocketServer } = require('ws');
const { performance } = require('perf_hooks');

const TICK_HZ = Number(process.env.PEER_TICK_HZ || 60);
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
  // PROTOCOL.md §5: 51 bytes, ending in resume token, window and reliable_seq.
  const b = Buffer.alloc(51);
  let o = 0;
  o = b.writeUInt8(0x81, o);
  o = b.writeUInt16BE(1, o);
  o = b.writeUInt32BE(playerId, o);
  o = b.writeUInt16BE(TICK_HZ, o);
  o = b.writeUInt16BE(1, o);
  o = b.writeFloatBE(960, o);
  o = b.writeFloatBE(540, o);
  o = b.writeFloatBE(240, o);
  o = b.writeUInt32BE(tick, o);
  o += 16; // resume token: zeros (the peer does not resume)
  o = b.writeUInt32BE(0, o); // resume_window_ms
  b.writeUInt32BE(0, o); // reliable_seq
  return b;
}

function onMessage(ws, data, isBinary) {
  if (!isBinary || data.length === 0) return ws.close(4001, 'bad_message');
  switch (data[0]) {
    case 0x01: { // Hello
      if (ws.room) return ws.close(4005, 'unexpected_message');
      const roomLen = data[3];
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
    const b = Buffer.allocUnsafe(19 + 12 * n);
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
  process.stdout.write(JSON.stringify({ event: 'listening', tcp: `${a.address}:${a.port}` }) + '\n');
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
