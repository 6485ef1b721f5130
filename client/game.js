// Rally demo game: move a dot around a shared arena.
//
// Own player: predicted (newest snapshot + replay of unacknowledged inputs).
// Other players: interpolated between snapshots, rendered ~100 ms behind.
// Test hooks: everything worth checking is mirrored on `window.rally`.

import { connect, Buttons, truncateUtf8, checkRoom, checkName, RallyError, NO_RETRY_CODES } from '/client/rally.js';

const INTERP_DELAY_MS = 100;
const BUFFER_MS = 1000;
const MAX_CATCH_UP_INPUTS = 4;
/** Border around the arena, in arena units, so players on the edge show whole. */
const PAD = 16;

// ---------------------------------------------------------------------------
// Options from the URL
// ---------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const TRANSPORTS = { auto: 'auto', wt: 'webtransport', webtransport: 'webtransport', ws: 'websocket', websocket: 'websocket' };
const transportChoice = TRANSPORTS[(params.get('transport') || 'auto').toLowerCase()] || 'auto';
const room = params.get('room') || 'lobby';
const randomName = () => `player-${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;
const name = truncateUtf8(params.get('name') || randomName(), 24);
const webTransportUrl = params.get('wt') || undefined;
const token = params.get('token') || undefined;

// ---------------------------------------------------------------------------
// State (mirrored on window.rally for tests and the curious)
// ---------------------------------------------------------------------------

const rally = {
  client: null,
  status: 'connecting',
  transport: null,
  fallbackReason: null,
  certHashUsed: false,
  playerId: null,
  welcome: null,
  connectedAt: null,
  sessions: 0,
  snapshotsReceived: 0,
  snapshotsApplied: 0,
  datagramSnapshots: 0,
  streamSnapshots: 0,
  snapshotsLost: 0,
  snapshotRate: 0,
  serverTick: null,
  lastSnapshot: null,
  /** id → {id, name, x, y}: positions from the newest snapshot (authoritative). */
  players: {},
  /** Own position as drawn (prediction applied). */
  predicted: null,
  rtt: null,
  jitter: null,
  inputsSent: 0,
  /** How the transport was chosen: client.attempts (ms to each stage). */
  attempts: [],
  events: [],
  error: null,
  options: { transport: transportChoice, room, name, webTransportUrl: webTransportUrl || null },
};
window.rally = rally;

const names = new Map(); // id → name, from PlayerJoined
let client = null;
let welcome = null;
/** Recent snapshots for interpolation: {tick, players: Map id → {x, y}}. */
let history = [];
/** Estimated (server tick − local ms × tickHz / 1000): maps local time to ticks. */
let tickOffset = null;
const appliedTimes = [];

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

const KEYS = {
  ArrowUp: Buttons.UP, KeyW: Buttons.UP,
  ArrowDown: Buttons.DOWN, KeyS: Buttons.DOWN,
  ArrowLeft: Buttons.LEFT, KeyA: Buttons.LEFT,
  ArrowRight: Buttons.RIGHT, KeyD: Buttons.RIGHT,
};
const held = new Set();

function keyBit(e) {
  return KEYS[e.code] || KEYS[e.key] || 0;
}

window.addEventListener('keydown', (e) => {
  const bit = keyBit(e);
  if (!bit) return;
  held.add(bit);
  e.preventDefault();
});
window.addEventListener('keyup', (e) => {
  const bit = keyBit(e);
  if (!bit) return;
  held.delete(bit);
  e.preventDefault();
});
window.addEventListener('blur', () => held.clear());

function currentButtons() {
  let b = 0;
  for (const bit of held) b |= bit;
  // Opposite keys cancel, as the server's direction does; send what is held.
  return b;
}

// Fixed-step input pump: one Input per server tick. Driven from both
// requestAnimationFrame and a timer, so a throttled rAF (background tab)
// still sends input; the accumulator makes double driving harmless.
let lastPump = performance.now();
let acc = 0;
function pump() {
  const now = performance.now();
  if (!client || client.state !== 'connected' || !welcome) {
    lastPump = now;
    acc = 0;
    return;
  }
  const step = 1000 / welcome.tickHz;
  acc += now - lastPump;
  lastPump = now;
  // After a stall do not flood: the server applies at most 8 inputs a tick.
  if (acc > step * MAX_CATCH_UP_INPUTS) acc = step * MAX_CATCH_UP_INPUTS;
  while (acc >= step) {
    acc -= step;
    if (client.sendInput(currentButtons())) rally.inputsSent++;
  }
}

// ---------------------------------------------------------------------------
// Network callbacks
// ---------------------------------------------------------------------------

function onStatus(s) {
  rally.status = s.state;
  rally.transport = s.transport;
  rally.fallbackReason = s.fallbackReason;
  if (s.state === 'connected' && !s.fallbackUpdated) {
    client = s.client;
    rally.client = client;
    welcome = s.welcome;
    rally.welcome = { ...welcome };
    rally.playerId = welcome.playerId;
    rally.connectedAt = client.connectedAt;
    rally.certHashUsed = client.certHashUsed;
    rally.sessions = client.sessions;
    rally.error = null;
    // A new session re-sends the roster after Welcome.
    names.clear();
    rally.players = {};
    history = [];
    tickOffset = null;
    acc = 0;
    lastPump = performance.now();
    resizeCanvas();
  }
  if (s.state === 'closed' || s.state === 'reconnecting') rally.error = s.reason || null;
  log(`${s.state}${s.transport ? ` (${s.transport})` : ''}${s.reason ? `: ${s.reason}` : ''}`);
  updateHud();
}

function onEvent(ev) {
  if (ev.type === 'player_joined') {
    names.set(ev.playerId, ev.name);
    // Snapshots (datagrams) can overtake the reliable PlayerJoined.
    if (rally.players[ev.playerId]) rally.players[ev.playerId].name = ev.name;
    if (ev.playerId !== rally.playerId) log(`${ev.name} joined`);
  } else if (ev.type === 'player_left') {
    log(`${names.get(ev.playerId) || `#${ev.playerId}`} left`);
    names.delete(ev.playerId);
    delete rally.players[ev.playerId];
  } else if (ev.type === 'error') {
    rally.error = `${ev.codeName}: ${ev.reason}`;
    log(`server error ${rally.error}`);
  }
}

function onSnapshot(snap, info) {
  const now = performance.now();
  const hz = welcome.tickHz;
  const sample = snap.tick - (now * hz) / 1000;
  tickOffset = tickOffset === null ? sample : tickOffset + (sample - tickOffset) * 0.1;
  // Never let the estimate lag far behind what actually arrived.
  if (sample - tickOffset > hz * 0.25) tickOffset = sample;

  const map = new Map();
  const players = {};
  for (const p of snap.players) {
    map.set(p.id, { x: p.x, y: p.y });
    players[p.id] = { id: p.id, name: names.get(p.id) || `#${p.id}`, x: p.x, y: p.y };
  }
  history.push({ tick: snap.tick, players: map });
  const keepTicks = (BUFFER_MS * hz) / 1000;
  while (history.length > 2 && snap.tick - history[0].tick > keepTicks) history.shift();

  appliedTimes.push(now);
  while (appliedTimes.length && now - appliedTimes[0] > 1000) appliedTimes.shift();

  const st = client.stats;
  rally.players = players;
  rally.lastSnapshot = { tick: snap.tick, ackSeq: snap.ackSeq, serverTimeUs: snap.serverTimeUs, channel: info.channel, players: snap.players.map((p) => ({ ...p })) };
  rally.serverTick = snap.tick;
  rally.snapshotsReceived = st.snapshotsReceived;
  rally.snapshotsApplied = st.snapshotsApplied;
  rally.datagramSnapshots = st.datagramSnapshots;
  rally.streamSnapshots = st.streamSnapshots;
  rally.snapshotsLost = st.snapshotsLost;
}

// ---------------------------------------------------------------------------
// Prediction and interpolation
// ---------------------------------------------------------------------------

function clamp(v, lo, hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

function predictSelf() {
  const snap = client && client.lastSnapshot;
  if (!snap || !welcome) return null;
  const me = snap.players.find((p) => p.id === welcome.playerId);
  if (!me) return null;
  const step = welcome.speed / welcome.tickHz;
  let { x, y } = me;
  for (const { buttons: b } of client.unackedInputs(snap.ackSeq)) {
    // Diagonals are not normalised, as on the server.
    const dx = (b & Buttons.RIGHT ? 1 : 0) - (b & Buttons.LEFT ? 1 : 0);
    const dy = (b & Buttons.DOWN ? 1 : 0) - (b & Buttons.UP ? 1 : 0);
    x = clamp(x + dx * step, 0, welcome.arenaW);
    y = clamp(y + dy * step, 0, welcome.arenaH);
  }
  return { x, y };
}

function interpolated(now) {
  const out = new Map();
  if (history.length === 0 || tickOffset === null) return out;
  const renderTick = (now * welcome.tickHz) / 1000 + tickOffset - (INTERP_DELAY_MS * welcome.tickHz) / 1000;
  const newest = history[history.length - 1];
  // Players are those of the newest snapshot; their past comes from the buffer.
  for (const [id, p] of newest.players) {
    let pos = p;
    if (renderTick < newest.tick) {
      for (let i = history.length - 1; i > 0; i--) {
        const a = history[i - 1];
        const b = history[i];
        if (a.tick <= renderTick) {
          const pa = a.players.get(id);
          const pb = b.players.get(id);
          if (pa && pb) {
            const t = clamp((renderTick - a.tick) / (b.tick - a.tick), 0, 1);
            pos = { x: pa.x + (pb.x - pa.x) * t, y: pa.y + (pb.y - pa.y) * t };
          } else {
            pos = pb || pa || p;
          }
          break;
        }
        if (i === 1) pos = a.players.get(id) || p; // older than the buffer
      }
    }
    out.set(id, pos);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------

const canvas = document.getElementById('arena');
const ctx = canvas.getContext('2d');
let scale = 1;

function resizeCanvas() {
  const w = welcome ? welcome.arenaW : 960;
  const h = welcome ? welcome.arenaH : 540;
  const box = canvas.parentElement.getBoundingClientRect();
  const availW = Math.max(160, box.width || window.innerWidth - 32);
  const availH = Math.max(90, window.innerHeight - canvas.parentElement.offsetTop - 24);
  scale = Math.min(availW / (w + 2 * PAD), availH / (h + 2 * PAD));
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${Math.floor((w + 2 * PAD) * scale)}px`;
  canvas.style.height = `${Math.floor((h + 2 * PAD) * scale)}px`;
  canvas.width = Math.floor((w + 2 * PAD) * scale * dpr);
  canvas.height = Math.floor((h + 2 * PAD) * scale * dpr);
  ctx.setTransform(scale * dpr, 0, 0, scale * dpr, PAD * scale * dpr, PAD * scale * dpr);
}
window.addEventListener('resize', resizeCanvas);

function colourOf(id) {
  return `hsl(${(id * 137.508) % 360}, 70%, 55%)`;
}

function drawPlayer(id, x, y, isSelf) {
  const r = 12;
  ctx.beginPath();
  ctx.arc(x, y, r, 0, Math.PI * 2);
  ctx.fillStyle = colourOf(id);
  ctx.fill();
  ctx.lineWidth = isSelf ? 3 : 1.5;
  ctx.strokeStyle = isSelf ? '#ffffff' : 'rgba(0,0,0,0.6)';
  ctx.stroke();
  ctx.fillStyle = isSelf ? '#ffffff' : '#d8dee9';
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(names.get(id) || `#${id}`, x, y - r - 5);
}

function draw(now) {
  const w = welcome ? welcome.arenaW : 960;
  const h = welcome ? welcome.arenaH : 540;
  ctx.fillStyle = '#161b25';
  ctx.fillRect(-PAD, -PAD, w + 2 * PAD, h + 2 * PAD);
  ctx.fillStyle = '#1d2330';
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = '#2b3344';
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let x = 0; x <= w; x += 60) {
    ctx.moveTo(x, 0);
    ctx.lineTo(x, h);
  }
  for (let y = 0; y <= h; y += 60) {
    ctx.moveTo(0, y);
    ctx.lineTo(w, y);
  }
  ctx.stroke();
  ctx.strokeStyle = '#5e81ac';
  ctx.lineWidth = 3;
  ctx.strokeRect(0, 0, w, h);
  if (!welcome) return;

  const others = interpolated(now);
  for (const [id, p] of others) {
    if (id !== welcome.playerId) drawPlayer(id, p.x, p.y, false);
  }
  const self = predictSelf();
  rally.predicted = self;
  if (self) drawPlayer(welcome.playerId, self.x, self.y, true);
}

// ---------------------------------------------------------------------------
// HUD
// ---------------------------------------------------------------------------

const hud = {
  status: document.getElementById('hud-status'),
  transport: document.getElementById('hud-transport'),
  reason: document.getElementById('hud-reason'),
  rtt: document.getElementById('hud-rtt'),
  jitter: document.getElementById('hud-jitter'),
  rate: document.getElementById('hud-rate'),
  lost: document.getElementById('hud-lost'),
  tick: document.getElementById('hud-tick'),
  players: document.getElementById('hud-players'),
  room: document.getElementById('hud-room'),
  log: document.getElementById('log'),
};

function fmtMs(v) {
  return v === null || v === undefined ? '–' : `${v.toFixed(v < 10 ? 2 : 1)} ms`;
}

function updateHud() {
  if (client) {
    rally.rtt = client.rtt;
    rally.jitter = client.jitter;
    rally.attempts = client.attempts;
  }
  const now = performance.now();
  while (appliedTimes.length && now - appliedTimes[0] > 1000) appliedTimes.shift();
  rally.snapshotRate = appliedTimes.length;
  hud.status.textContent = rally.status;
  hud.transport.textContent = rally.transport
    ? `${rally.transport === 'webtransport' ? 'WebTransport (HTTP/3)' : 'WebSocket'}${rally.certHashUsed && rally.transport === 'webtransport' ? ', pinned cert hash' : ''}`
    : '–';
  hud.reason.textContent = rally.fallbackReason || (rally.transport === 'webtransport' ? 'none' : '–');
  hud.rtt.textContent = fmtMs(rally.rtt);
  hud.jitter.textContent = rally.rtt === null ? '–' : fmtMs(rally.jitter);
  hud.rate.textContent = `${rally.snapshotRate} /s`;
  hud.lost.textContent = String(rally.snapshotsLost);
  hud.tick.textContent = rally.serverTick === null ? '–' : String(rally.serverTick);
  hud.players.textContent = String(Object.keys(rally.players).length);
  hud.room.textContent = `${room} as ${name}`;
}

function log(line) {
  const t = new Date().toLocaleTimeString();
  rally.events.push(`${t} ${line}`);
  if (rally.events.length > 50) rally.events.shift();
  const li = document.createElement('li');
  li.textContent = `${t} ${line}`;
  hud.log.prepend(li);
  while (hud.log.childElementCount > 8) hud.log.lastElementChild.remove();
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

function frame(now) {
  pump();
  draw(now);
  requestAnimationFrame(frame);
}

async function start(retryMs = 1000) {
  try {
    await connect(location.origin, {
      transport: transportChoice,
      room,
      name,
      webTransportUrl,
      token,
      onSnapshot,
      onEvent,
      onStatus,
    });
  } catch (e) {
    rally.error = e.message;
    const fatal = e instanceof TypeError || (e instanceof RallyError && NO_RETRY_CODES.includes(e.code));
    updateHud();
    if (!fatal) {
      log(`retrying in ${Math.round(retryMs / 1000)} s`);
      setTimeout(() => start(Math.min(retryMs * 2, 15000)), retryMs);
    }
  }
}

const bad = checkRoom(room) || checkName(name);
resizeCanvas();
requestAnimationFrame(frame);
setInterval(pump, 5);
setInterval(updateHud, 250);
window.addEventListener('pagehide', () => {
  if (client) client.close();
});
if (bad) {
  rally.status = 'closed';
  rally.error = bad;
  log(`cannot join: ${bad}`);
  updateHud();
} else {
  start();
}
