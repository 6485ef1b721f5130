// @ts-check
// Dots: move a dot around a shared arena, and chat.
//
// Own dot: predicted (newest snapshot + replay of unacknowledged inputs).
// Other dots: interpolated between snapshots by the adaptive buffer.
// Chat: App messages (PROTOCOL.md §12, dots). Test hooks on window.rally.

import { SnapshotBuffer, predict, lerp } from '../rally.js';
import { startGame, rally, nameOf, byId, log, hudRow, heldButtons, fitCanvas, colourOf, MOVE_KEYS } from './common.js';
import { decodeWelcome, decodeSnapshot, encodeInput, step, encodeChat, decodeChat } from './dots-model.js';

/** @typedef {import('./dots-model.js').DotsWorld & { tickHz: number }} World */
/** @typedef {{ tick: number, ackSeq: number, dots: Map<number, { x: number, y: number }> }} Frame */

/** Border around the arena, in arena units, so dots on the edge show whole. */
const PAD = 16;
const RADIUS = 12;

const state = Object.assign(rally, {
  /** @type {Record<number, { id: number, name: string, x: number, y: number }>} positions in the newest snapshot */
  players: {},
  /** @type {{ x: number, y: number } | null} own dot as drawn (prediction applied) */
  predicted: null,
  /** @type {{ from: number, name: string, text: string }[]} */
  chat: [],
  /** @type {number | null} the interpolation buffer's render delay */
  renderDelayMs: null,
  /** @type {World | null} the arena, from Welcome.app */
  world: null,
});

/** @type {World | null} */
let world = null;
/** @type {SnapshotBuffer<Frame> | null} */
let buffer = null;
/** @type {Frame | null} */
let newest = null;
const canvas = /** @type {HTMLCanvasElement} */ (byId('arena'));
const view = fitCanvas(canvas, 960, 540, PAD);
const buttons = heldButtons(MOVE_KEYS);
const delayRow = hudRow('render delay');

/** Own dot: the newest snapshot's, moved by the inputs the server had not applied. */
function predictSelf() {
  const client = rally.client;
  const me = rally.playerId === null ? undefined : newest?.dots.get(rally.playerId);
  if (!client || !world || !newest || !me) return null;
  const w = world;
  return predict(me, newest.ackSeq, client, (at, input) => step(at, input, w));
}

/** @param {number} now */
function draw(now) {
  const { ctx } = view;
  const w = world?.arenaW ?? 960;
  const h = world?.arenaH ?? 540;
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
  if (!buffer) return;

  const s = buffer.sample(now);
  state.renderDelayMs = buffer.delayMs;
  if (s) {
    // Dots are those of the newer snapshot; one that just joined has no past.
    for (const [id, b] of s.to.dots) {
      if (id === rally.playerId) continue;
      const a = s.from.dots.get(id) ?? b;
      drawDot(ctx, id, lerp(a.x, b.x, s.t), lerp(a.y, b.y, s.t), false);
    }
  }
  const self = predictSelf();
  state.predicted = self;
  if (self && rally.playerId !== null) drawDot(ctx, rally.playerId, self.x, self.y, true);
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} id
 * @param {number} x
 * @param {number} y
 * @param {boolean} isSelf
 */
function drawDot(ctx, id, x, y, isSelf) {
  ctx.beginPath();
  ctx.arc(x, y, RADIUS, 0, Math.PI * 2);
  ctx.fillStyle = colourOf(id);
  ctx.fill();
  ctx.lineWidth = isSelf ? 3 : 1.5;
  ctx.strokeStyle = isSelf ? '#ffffff' : 'rgba(0,0,0,0.6)';
  ctx.stroke();
  ctx.fillStyle = isSelf ? '#ffffff' : '#d8dee9';
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(nameOf(id), x, y - RADIUS - 5);
}

// Chat: a form under the HUD; typing in it never steers (common.js).
const chatForm = /** @type {HTMLFormElement} */ (byId('chat'));
const chatInput = /** @type {HTMLInputElement} */ (byId('chat-text'));
const chatLog = byId('chat-log');
chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const bytes = encodeChat(chatInput.value);
  if (!bytes || !rally.client) return;
  try {
    rally.client.send(bytes);
    chatInput.value = '';
  } catch (err) {
    log(`chat not sent: ${/** @type {Error} */ (err).message}`);
  }
});

/**
 * @param {number} from
 * @param {string} text
 */
function showChat(from, text) {
  const name = nameOf(from);
  state.chat.push({ from, name, text });
  if (state.chat.length > 100) state.chat.shift();
  const li = document.createElement('li');
  const who = document.createElement('b');
  who.textContent = `${name}: `;
  li.append(who, text);
  chatLog.append(li);
  while (chatLog.childElementCount > 50) chatLog.firstElementChild?.remove();
  chatLog.scrollTop = chatLog.scrollHeight;
}

startGame({
  game: 'dots',
  onJoin(welcome, resumed) {
    const w = decodeWelcome(welcome.app);
    world = { ...w, tickHz: welcome.tickHz };
    state.world = world;
    view.setWorld(w.arenaW, w.arenaH);
    // A resumed player is in the same room at the same ticks: its buffer stays.
    if (!resumed || !buffer) {
      buffer = new SnapshotBuffer({ tickHz: welcome.tickHz, snapshotEvery: welcome.snapshotEvery });
      newest = null;
      state.players = {};
    }
  },
  onSnapshot(snap, _channel, now) {
    const dots = decodeSnapshot(snap.payload);
    newest = { tick: snap.tick, ackSeq: snap.ackSeq, dots: new Map(dots.map((d) => [d.id, { x: d.x, y: d.y }])) };
    buffer?.push(newest, now);
    /** @type {typeof state.players} */
    const players = {};
    for (const d of dots) players[d.id] = { id: d.id, name: nameOf(d.id), x: d.x, y: d.y };
    state.players = players;
    state.predicted = predictSelf();
  },
  onMessage(payload, reliable) {
    if (!reliable) return; // dots sends chat reliably only
    const { from, text } = decodeChat(payload);
    showChat(from, text);
  },
  input() {
    state.predicted = predictSelf();
    return encodeInput(buttons());
  },
  draw(now) {
    draw(now);
    delayRow.textContent = state.renderDelayMs === null ? '–' : `${state.renderDelayMs.toFixed(0)} ms`;
  },
});
