// @ts-check
// Relay: no server state at all. Every page sends its pointer as an
// unreliable message about 30 times a second and clicks as reliable
// "stamps"; the relay game forwards both to the rest of the room.

import { startGame, rally, nameOf, byId, fitCanvas, colourOf } from './common.js';
import { Kind, encodeMark, decodeRelayed } from './relay-model.js';

/** Board size in drawing units (16:9); messages carry fractions of it. */
const W = 1600;
const H = 900;
const PAD = 8;
/** Pointer updates per second at most. */
const CURSOR_HZ = 30;
/** A cursor not heard from for this long fades (its owner stopped moving). */
const STALE_MS = 3000;

const state = Object.assign(rally, {
  /** @type {Record<number, { x: number, y: number, at: number }>} other players' pointers, as board fractions */
  cursors: {},
  /** @type {{ from: number, name: string, x: number, y: number }[]} every stamp, yours included */
  stamps: [],
  cursorsSent: 0,
  /**
   * Page coordinates of a point of the board given as fractions (for tests
   * moving the mouse).
   * @param {number} fx
   * @param {number} fy
   */
  toPage(fx, fy) {
    return view.toPage(fx * W, fy * H);
  },
});

const canvas = /** @type {HTMLCanvasElement} */ (byId('arena'));
const view = fitCanvas(canvas, W, H, PAD);

/** @type {{ x: number, y: number } | null} own pointer, waiting to be sent */
let pointer = null;

/** @param {PointerEvent} e */
function boardPoint(e) {
  const p = view.toWorld(e.clientX, e.clientY);
  return { x: Math.min(1, Math.max(0, p.x / W)), y: Math.min(1, Math.max(0, p.y / H)) };
}

canvas.addEventListener('pointermove', (e) => {
  pointer = boardPoint(e);
});
canvas.addEventListener('pointerdown', (e) => {
  if (e.button !== 0 || !rally.client || rally.playerId === null) return;
  const p = boardPoint(e);
  rally.client.send(encodeMark(Kind.STAMP, p.x, p.y));
  // The relay forwards to the others only: keep our own stamp here.
  addStamp(rally.playerId, p.x, p.y);
});

// Only the newest position matters: send it at most CURSOR_HZ times a
// second, and only when it moved.
setInterval(() => {
  const c = rally.client;
  if (!pointer || !c || c.state !== 'connected') return;
  c.send(encodeMark(Kind.CURSOR, pointer.x, pointer.y), { reliable: false });
  state.cursorsSent++;
  pointer = null;
}, 1000 / CURSOR_HZ);

/**
 * @param {number} from
 * @param {number} x
 * @param {number} y
 */
function addStamp(from, x, y) {
  state.stamps.push({ from, name: nameOf(from), x, y });
  if (state.stamps.length > 500) state.stamps.shift();
}

/** @param {number} now */
function draw(now) {
  const { ctx } = view;
  ctx.fillStyle = '#1d2330';
  ctx.fillRect(-PAD, -PAD, W + 2 * PAD, H + 2 * PAD);
  ctx.strokeStyle = '#5e81ac';
  ctx.lineWidth = 3;
  ctx.strokeRect(0, 0, W, H);
  ctx.font = '14px system-ui, sans-serif';
  ctx.textAlign = 'center';
  for (const s of state.stamps) {
    ctx.beginPath();
    ctx.arc(s.x * W, s.y * H, 14, 0, Math.PI * 2);
    ctx.fillStyle = colourOf(s.from);
    ctx.fill();
  }
  for (const [key, c] of Object.entries(state.cursors)) {
    const id = Number(key);
    const x = c.x * W;
    const y = c.y * H;
    ctx.globalAlpha = now - c.at > STALE_MS ? 0.35 : 1;
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 14, y + 30);
    ctx.lineTo(x + 24, y + 18);
    ctx.closePath();
    ctx.fillStyle = colourOf(id);
    ctx.fill();
    ctx.fillStyle = '#d8dee9';
    ctx.fillText(nameOf(id), x + 20, y + 46);
    ctx.globalAlpha = 1;
  }
}

startGame({
  game: 'relay',
  onJoin(_welcome, resumed) {
    // A new player may be in a room with other people: start clean.
    if (!resumed) {
      state.cursors = {};
      state.stamps = [];
    }
  },
  onMessage(payload) {
    const m = decodeRelayed(payload);
    if (!m) return;
    if (m.kind === Kind.CURSOR) state.cursors[m.from] = { x: m.x, y: m.y, at: performance.now() };
    else addStamp(m.from, m.x, m.y);
  },
  onLeft(id) {
    delete state.cursors[id];
  },
  draw,
});
