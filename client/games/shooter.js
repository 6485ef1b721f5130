// @ts-check
// Shooter: a top-down arena. WASD or arrows move, the mouse aims, a click
// or Space fires. Own player predicted; the others and the projectiles
// interpolated; each input names the tick on screen (view_tick) so the
// server can check hits where you saw them (PROTOCOL.md §12, shooter).

import { SnapshotBuffer, predict, lerp, lerpAngle } from '../rally.js';
import { startGame, rally, nameOf, byId, hudRow, heldButtons, fitCanvas, colourOf, MOVE_KEYS } from './common.js';
import { Buttons, decodeWelcome, decodeSnapshot, encodeInput, step, decodeFeed } from './shooter-model.js';

/** @typedef {import('./shooter-model.js').ShooterWorld & { tickHz: number }} World */
/** @typedef {import('./shooter-model.js').ShooterView} ShooterView */
/** @typedef {{ tick: number, ackSeq: number, view: ShooterView, byId: Map<number, import('./shooter-model.js').Fighter> }} Frame */

const PAD = 16;

const state = Object.assign(rally, {
  /** @type {Record<number, { id: number, name: string, x: number, y: number, aim: number, health: number }>} players in view in the newest snapshot */
  players: {},
  /** @type {{ x: number, y: number } | null} own position as drawn (prediction applied); null while dead */
  self: null,
  health: 0,
  maxHealth: 0,
  score: 0,
  /** seconds until respawn, 0 when alive */
  respawnIn: 0,
  shots: 0,
  /** @type {{ killer: number, victim: number, killerName: string, victimName: string }[]} */
  kills: [],
  /** the tick on screen, sent as view_tick */
  viewTick: 0,
  /** aim in radians, sent with every input */
  aim: 0,
  /** @type {World | null} the arena, from Welcome.app */
  world: null,
  /**
   * Page coordinates of an arena point (for tests aiming the mouse).
   * @param {number} x
   * @param {number} y
   */
  toPage(x, y) {
    return view.toPage(x, y);
  },
});

/** @type {World | null} */
let world = null;
/** @type {SnapshotBuffer<Frame> | null} */
let buffer = null;
/** @type {Frame | null} */
let newest = null;
const canvas = /** @type {HTMLCanvasElement} */ (byId('arena'));
const view = fitCanvas(canvas, 1200, 800, PAD);
const buttons = heldButtons({ ...MOVE_KEYS, Space: Buttons.FIRE });
const rows = { health: hudRow('health'), score: hudRow('score'), respawn: hudRow('respawn') };
const feed = byId('feed');

/** @type {{ x: number, y: number } | null} where the mouse points, in arena units */
let mouse = null;
let mouseFiring = false;
canvas.addEventListener('pointermove', (e) => {
  mouse = view.toWorld(e.clientX, e.clientY);
});
canvas.addEventListener('pointerdown', (e) => {
  if (e.button !== 0) return;
  mouse = view.toWorld(e.clientX, e.clientY);
  mouseFiring = true;
});
window.addEventListener('pointerup', () => {
  mouseFiring = false;
});
window.addEventListener('blur', () => {
  mouseFiring = false;
});

/** Own position: the newest snapshot's, moved by the inputs the server had not applied. */
function predictSelf() {
  const client = rally.client;
  const me = newest?.view.players[0];
  if (!client || !world || !newest || !me || me.id !== newest.view.you || newest.view.respawnIn > 0) return null;
  const w = world;
  return predict({ x: me.x, y: me.y }, newest.ackSeq, client, (at, input) => step(at, input, w));
}

/** @param {number} now */
function draw(now) {
  const { ctx } = view;
  const w = world?.arenaW ?? 1200;
  const h = world?.arenaH ?? 800;
  ctx.fillStyle = '#161b25';
  ctx.fillRect(-PAD, -PAD, w + 2 * PAD, h + 2 * PAD);
  ctx.fillStyle = '#1d2330';
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = '#5e81ac';
  ctx.lineWidth = 3;
  ctx.strokeRect(0, 0, w, h);
  if (!buffer || !world) return;
  const s = buffer.sample(now);
  if (!s) return;
  state.viewTick = s.tick;
  const self = predictSelf();
  state.self = self;

  // What you can see: a circle of view_radius; beyond it the server sends nothing.
  if (self) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, w, h);
    ctx.clip();
    ctx.beginPath();
    ctx.arc(self.x, self.y, world.viewRadius, 0, Math.PI * 2);
    ctx.fillStyle = '#232a38';
    ctx.fill();
    ctx.restore();
  }
  // Projectiles have no ids to pair up: show the nearer snapshot's.
  ctx.fillStyle = '#ebcb8b';
  for (const p of (s.t < 0.5 ? s.from : s.to).view.shots) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, 3, 0, Math.PI * 2);
    ctx.fill();
  }
  for (const [id, b] of s.to.byId) {
    if (id === s.to.view.you) continue;
    const a = s.from.byId.get(id) ?? b;
    drawFighter(ctx, id, lerp(a.x, b.x, s.t), lerp(a.y, b.y, s.t), lerpAngle(a.aim, b.aim, s.t), b.health, false);
  }
  if (self && rally.playerId !== null) drawFighter(ctx, rally.playerId, self.x, self.y, state.aim, state.health, true);
  if (state.respawnIn > 0) {
    ctx.fillStyle = '#ebcb8b';
    ctx.font = '32px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.fillText(`respawn in ${state.respawnIn.toFixed(1)} s`, w / 2, h / 2);
  }
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {number} id
 * @param {number} x
 * @param {number} y
 * @param {number} aim
 * @param {number} health
 * @param {boolean} isSelf
 */
function drawFighter(ctx, id, x, y, aim, health, isSelf) {
  const r = world?.playerRadius ?? 16;
  ctx.strokeStyle = '#d8dee9';
  ctx.lineWidth = 4;
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + Math.cos(aim) * r * 1.6, y + Math.sin(aim) * r * 1.6);
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(x, y, r, 0, Math.PI * 2);
  ctx.fillStyle = colourOf(id);
  ctx.fill();
  ctx.lineWidth = isSelf ? 3 : 1.5;
  ctx.strokeStyle = isSelf ? '#ffffff' : 'rgba(0,0,0,0.6)';
  ctx.stroke();
  const max = world?.maxHealth || 1;
  ctx.fillStyle = '#3b4252';
  ctx.fillRect(x - r, y - r - 10, 2 * r, 4);
  ctx.fillStyle = health / max > 0.3 ? '#a3be8c' : '#bf616a';
  ctx.fillRect(x - r, y - r - 10, (2 * r * health) / max, 4);
  ctx.fillStyle = isSelf ? '#ffffff' : '#d8dee9';
  ctx.font = '12px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(nameOf(id), x, y - r - 14);
}

function updateRows() {
  rows.health.textContent = `${state.health} / ${state.maxHealth}`;
  rows.score.textContent = String(state.score);
  rows.respawn.textContent = state.respawnIn > 0 ? `${state.respawnIn.toFixed(1)} s` : 'alive';
}

startGame({
  game: 'shooter',
  onJoin(welcome, resumed) {
    const w = decodeWelcome(welcome.app);
    world = { ...w, tickHz: welcome.tickHz };
    state.world = world;
    state.maxHealth = w.maxHealth;
    view.setWorld(w.arenaW, w.arenaH);
    if (!resumed || !buffer) {
      buffer = new SnapshotBuffer({ tickHz: welcome.tickHz, snapshotEvery: welcome.snapshotEvery });
      newest = null;
      state.players = {};
      state.kills = [];
      feed.replaceChildren();
    }
  },
  onSnapshot(snap, _channel, now) {
    const v = decodeSnapshot(snap.payload);
    newest = { tick: snap.tick, ackSeq: snap.ackSeq, view: v, byId: new Map(v.players.map((p) => [p.id, p])) };
    buffer?.push(newest, now);
    /** @type {typeof state.players} */
    const players = {};
    for (const p of v.players) players[p.id] = { ...p, name: nameOf(p.id) };
    state.players = players;
    state.health = v.health;
    state.score = v.score;
    state.respawnIn = v.respawnIn / 10;
    state.shots = v.shots.length;
    state.self = predictSelf();
    updateRows();
  },
  onMessage(payload, reliable) {
    const kill = reliable ? decodeFeed(payload) : null;
    if (!kill) return;
    const entry = { ...kill, killerName: nameOf(kill.killer), victimName: nameOf(kill.victim) };
    state.kills.push(entry);
    if (state.kills.length > 50) state.kills.shift();
    const li = document.createElement('li');
    li.textContent = `${entry.killerName} ✕ ${entry.victimName}`;
    feed.prepend(li);
    while (feed.childElementCount > 8) feed.lastElementChild?.remove();
  },
  input() {
    const self = predictSelf();
    state.self = self;
    if (self && mouse) state.aim = Math.atan2(mouse.y - self.y, mouse.x - self.x);
    // Name the tick on screen even when no frame was drawn lately (a
    // background tab): the buffer's clock runs on without drawing.
    const shown = buffer?.sample(performance.now());
    if (shown) state.viewTick = shown.tick;
    return encodeInput(buttons() | (mouseFiring ? Buttons.FIRE : 0), state.aim, state.viewTick);
  },
  draw,
});
