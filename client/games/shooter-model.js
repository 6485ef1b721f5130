// @ts-check
// The shooter game's bytes and movement as the client needs them
// (PROTOCOL.md §12, shooter). Pure, so tests can hold them against the
// appendix.

/** Input button bits. */
export const Buttons = Object.freeze({ UP: 1, DOWN: 2, LEFT: 4, RIGHT: 8, FIRE: 16 });
/** App (server→client) kinds. */
export const FeedKind = Object.freeze({ KILL: 1 });

/**
 * @typedef {object} ShooterWorld
 * @property {number} arenaW
 * @property {number} arenaH
 * @property {number} speed arena units per second
 * @property {number} playerRadius
 * @property {number} viewRadius
 * @property {number} projectileSpeed
 * @property {number} maxHealth
 */
/** @typedef {{ id: number, x: number, y: number, aim: number, health: number }} Fighter aim in radians */
/**
 * @typedef {object} ShooterView
 * @property {number} you
 * @property {number} health
 * @property {number} score
 * @property {number} respawnIn tenths of a second until respawn, 0 when alive
 * @property {Fighter[]} players living players in view, you first
 * @property {{ x: number, y: number }[]} shots projectiles in view
 */

/** @param {Uint8Array} b */
function view(b) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Welcome.app: six f32 (arena_w, arena_h, speed, player_radius,
 * view_radius, projectile_speed) and max_health u8: 25 bytes.
 * @param {Uint8Array} app
 * @returns {ShooterWorld}
 */
export function decodeWelcome(app) {
  if (app.length !== 25) throw new RangeError(`shooter Welcome.app is 25 bytes, got ${app.length}`);
  const v = view(app);
  return {
    arenaW: v.getFloat32(0),
    arenaH: v.getFloat32(4),
    speed: v.getFloat32(8),
    playerRadius: v.getFloat32(12),
    viewRadius: v.getFloat32(16),
    projectileSpeed: v.getFloat32(20),
    maxHealth: app[24],
  };
}

/**
 * An angle in radians as the wire's i16 (units of π/32768, 0 = +x,
 * growing towards +y), wrapped into [-π, π).
 * @param {number} rad
 */
export function aimToWire(rad) {
  const units = Math.round((rad * 32768) / Math.PI);
  return ((((units + 32768) % 65536) + 65536) % 65536) - 32768;
}

/**
 * @param {number} units the wire's i16
 * @returns {number} radians
 */
export function aimFromWire(units) {
  return (units * Math.PI) / 32768;
}

/**
 * One input: buttons u8, aim i16, view_tick u32 (7 bytes).
 * @param {number} buttons
 * @param {number} aimRad
 * @param {number} viewTick the server tick being shown
 */
export function encodeInput(buttons, aimRad, viewTick) {
  const out = new Uint8Array(7);
  const v = new DataView(out.buffer);
  out[0] = buttons & 31;
  v.setInt16(1, aimToWire(aimRad));
  v.setUint32(3, viewTick >>> 0);
  return out;
}

/**
 * Snapshot.payload (one per player): you u32, health u8, score u16,
 * respawn_in u8, count u8, count × (id u32, x f32, y f32, aim i16,
 * health u8), shots u8, shots × (x f32, y f32).
 * @param {Uint8Array} payload
 * @returns {ShooterView}
 */
export function decodeSnapshot(payload) {
  const v = view(payload);
  let o = 0;
  /** @param {number} n */
  const need = (n) => {
    if (o + n > payload.length) throw new RangeError('shooter snapshot truncated');
  };
  need(9);
  const you = v.getUint32(0);
  const health = payload[4];
  const score = v.getUint16(5);
  const respawnIn = payload[7];
  const count = payload[8];
  o = 9;
  need(15 * count + 1);
  const players = new Array(count);
  for (let i = 0; i < count; i++, o += 15) {
    players[i] = { id: v.getUint32(o), x: v.getFloat32(o + 4), y: v.getFloat32(o + 8), aim: aimFromWire(v.getInt16(o + 12)), health: payload[o + 14] };
  }
  const shotCount = payload[o++];
  need(8 * shotCount);
  const shots = new Array(shotCount);
  for (let i = 0; i < shotCount; i++, o += 8) shots[i] = { x: v.getFloat32(o), y: v.getFloat32(o + 4) };
  if (o !== payload.length) throw new RangeError(`${payload.length - o} trailing bytes in shooter snapshot`);
  return { you, health, score, respawnIn, players, shots };
}

/**
 * Where one input moves a player: speed / tickHz along the held
 * direction, normalised (a diagonal is no faster), kept inside the arena
 * by the player's radius.
 * @param {{ x: number, y: number }} at
 * @param {Uint8Array} input
 * @param {ShooterWorld & { tickHz: number }} world
 */
export function step(at, input, world) {
  const b = input[0] ?? 0;
  const dx = (b & Buttons.RIGHT ? 1 : 0) - (b & Buttons.LEFT ? 1 : 0);
  const dy = (b & Buttons.DOWN ? 1 : 0) - (b & Buttons.UP ? 1 : 0);
  const len = Math.hypot(dx, dy);
  if (len === 0) return at;
  const d = world.speed / world.tickHz / len;
  const r = world.playerRadius;
  return {
    x: Math.min(world.arenaW - r, Math.max(r, at.x + dx * d)),
    y: Math.min(world.arenaH - r, Math.max(r, at.y + dy * d)),
  };
}

/**
 * The kill feed (App from the server): 1:u8 killer:u32 victim:u32; null
 * for any other kind.
 * @param {Uint8Array} payload
 * @returns {{ killer: number, victim: number } | null}
 */
export function decodeFeed(payload) {
  if (payload.length !== 9 || payload[0] !== FeedKind.KILL) return null;
  const v = view(payload);
  return { killer: v.getUint32(1), victim: v.getUint32(5) };
}
