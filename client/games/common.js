// @ts-check
// What every game page shares: options from the URL, the nav of the games
// this server offers (GET /games), the check that this server runs the
// page's game, the connection and its HUD (transport tier, why not a
// faster one, RTT, jitter, snapshot rate, losses, tick), the player
// names, one input per server tick, the event log, and `window.rally`, the
// page's state mirrored for tests and the curious.

import { connect, RallyError, NO_RETRY_CODES, checkRoom, checkName, truncateUtf8 } from '../rally.js';

/** @typedef {import('../rally.js').RallyClient} RallyClient */
/** @typedef {import('../rally.js').Welcome} Welcome */
/** @typedef {import('../rally.js').Snapshot} Snapshot */
/** @typedef {import('../rally.js').Channel} Channel */
/** @typedef {import('../rally.js').StatusEvent} StatusEvent */
/** @typedef {import('../rally.js').RallyEvent} RallyEvent */
/** @typedef {{ name: string, path: string, title: string }} GameEntry */

/**
 * @typedef {object} GameSpec
 * @property {string} game the game this page plays (Welcome.game, /games name)
 * @property {(welcome: Welcome, resumed: boolean) => void} [onJoin] a session was welcomed; `resumed` false means a fresh player
 * @property {(snapshot: Snapshot, channel: Channel, now: number) => void} [onSnapshot]
 * @property {(payload: Uint8Array, reliable: boolean) => void} [onMessage]
 * @property {(id: number) => void} [onLeft] a player left the room
 * @property {() => Uint8Array | null} [input] this tick's input, or null to send none
 * @property {(now: number) => void} [draw] called every animation frame
 */

/** Key codes and the buttons they hold, for games steered with the keyboard. */
export const MOVE_KEYS = Object.freeze({
  ArrowUp: 1, KeyW: 1,
  ArrowDown: 2, KeyS: 2,
  ArrowLeft: 4, KeyA: 4,
  ArrowRight: 8, KeyD: 8,
});

/** After a stall, catch up at most this many ticks of input (the server takes 8 per tick). */
const MAX_CATCH_UP_INPUTS = 4;

// ---------------------------------------------------------------------------
// Options and state
// ---------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
/** @type {Record<string, import('../rally.js').TransportChoice>} */
const TRANSPORTS = { auto: 'auto', wt: 'webtransport', webtransport: 'webtransport', ws: 'websocket', websocket: 'websocket', http: 'http' };
/** What the HUD calls each transport tier. */
export const TIER_NAMES = Object.freeze({ webtransport: 'WebTransport (HTTP/3)', websocket: 'WebSocket', http: 'HTTP streaming' });
const randomName = () => `player-${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;

/** Connection options from the page's URL: ?transport=auto|wt|ws|http&room=&name=&wt=&token= */
export const options = {
  transport: TRANSPORTS[(params.get('transport') || 'auto').toLowerCase()] || 'auto',
  room: params.get('room') || 'lobby',
  name: truncateUtf8(params.get('name') || randomName(), 24),
  webTransportUrl: params.get('wt') || undefined,
  token: params.get('token') || undefined,
};

/**
 * The page's state, mirrored on window.rally. Game pages add their own
 * fields (positions, chat, ...).
 */
export const rally = {
  /** @type {string} the game this page plays */
  game: '',
  /** @type {RallyClient | null} */
  client: null,
  /** @type {string} a client state, or 'wrong-game' */
  status: 'connecting',
  /** @type {string | null} */
  transport: null,
  /** @type {string | null} why not a faster transport (null on WebTransport) */
  fallbackReason: null,
  certHashUsed: false,
  /** @type {number | null} */
  playerId: null,
  /** @type {Welcome | null} */
  welcome: null,
  resumed: false,
  sessions: 0,
  /** @type {number | null} */
  connectedAt: null,
  /** @type {Record<number, string>} player id → name, from PlayerJoined; kept across resumes */
  names: {},
  /** @type {{ tick: number, ackSeq: number, serverTimeUs: number, channel: Channel } | null} */
  lastSnapshot: null,
  /** @type {number | null} */
  serverTick: null,
  snapshotRate: 0,
  snapshotsReceived: 0,
  datagramSnapshots: 0,
  streamSnapshots: 0,
  httpSnapshots: 0,
  snapshotsLost: 0,
  inputsSent: 0,
  /** @type {number | null} */
  rtt: null,
  /** @type {number | null} */
  jitter: null,
  /** @type {import('../rally.js').AttemptReport[]} */
  attempts: [],
  /** @type {string[]} the log, oldest first */
  events: [],
  /** @type {string | null} */
  error: null,
  /** @type {string | null} the game this server runs, from /games (null until known) */
  running: null,
  options,
};
/** @type {Window & { rally?: typeof rally }} */ (window).rally = rally;

const nameMap = new Map(/** @type {[number, string][]} */ ([]));

/**
 * A player's name, or #id until its PlayerJoined arrives (a snapshot can
 * overtake it: datagrams are not ordered with the stream).
 * @param {number} id
 */
export function nameOf(id) {
  return nameMap.get(id) ?? `#${id}`;
}

// ---------------------------------------------------------------------------
// Page furniture: nav, HUD, log, notices
// ---------------------------------------------------------------------------

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page has no #${id}`);
  return el;
}

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {string} [text]
 */
function el(tag, attrs = {}, text = '') {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

const hudList = el('dl');
const logList = el('ul', { id: 'log' });

/**
 * Adds a labelled value to the HUD; returns the element to write into.
 * @param {string} label
 * @param {string} [id]
 */
export function hudRow(label, id = `hud-${label.replace(/\W+/g, '-')}`) {
  const dd = el('dd', { id }, '–');
  hudList.append(el('dt', {}, label), dd);
  return dd;
}

const hud = {
  status: hudRow('status'),
  room: hudRow('room'),
  transport: hudRow('transport'),
  reason: hudRow('why this tier', 'hud-reason'),
  rtt: hudRow('RTT'),
  jitter: hudRow('jitter'),
  rate: hudRow('snapshots', 'hud-rate'),
  lost: hudRow('lost'),
  tick: hudRow('server tick', 'hud-tick'),
  players: hudRow('players'),
};

/** @param {string} line */
export function log(line) {
  const t = new Date().toLocaleTimeString();
  rally.events.push(`${t} ${line}`);
  if (rally.events.length > 100) rally.events.shift();
  const li = el('li', {}, `${t} ${line}`);
  logList.prepend(li);
  while (logList.childElementCount > 10) logList.lastElementChild?.remove();
}

/**
 * Shows a message above the game (role=alert), replacing any earlier one.
 * @param {(string | Node)[]} parts
 */
function notice(...parts) {
  const box = byId('notice');
  box.replaceChildren(...parts);
  box.hidden = false;
}

/**
 * Tells the player this server runs another game, and how to get this one.
 * @param {string} running
 * @param {GameEntry[]} games
 */
function wrongGame(running, games) {
  rally.status = 'wrong-game';
  rally.running = running;
  rally.error = `this server runs ${running}, not ${rally.game}`;
  const other = games.find((g) => g.name === running);
  const cmd = el('code', {}, `rally serve --game ${rally.game}`);
  const parts = [`This server runs ${running}, not ${rally.game}. To play ${rally.game}, start a server with `, cmd, '.'];
  if (other) parts.push(' Or play ', el('a', { href: other.path + location.search }, other.title), ' here.');
  notice(...parts);
  log(rally.error);
  updateHud();
}

/**
 * The nav of every game page; marks the one this server runs.
 * @param {GameEntry[]} games
 * @param {string} running
 */
function renderNav(games, running) {
  const nav = byId('nav');
  nav.replaceChildren(
    ...games.map((g) => {
      const a = el('a', { href: g.path + location.search, 'data-game': g.name }, g.title);
      if (g.name === rally.game) a.setAttribute('aria-current', 'page');
      if (g.name === running) a.append(el('span', { class: 'running', title: 'this server runs it' }, ' ●'));
      return a;
    }),
  );
}

/**
 * Asks the server which games it has and which one it runs.
 * @returns {Promise<{ running: string, games: GameEntry[] } | null>}
 */
async function fetchGames() {
  try {
    const res = await fetch('/games', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    if (typeof body?.running !== 'string' || !Array.isArray(body.games)) throw new Error('unexpected body');
    return body;
  } catch (e) {
    log(`GET /games failed (${/** @type {Error} */ (e).message}); Welcome will say which game runs`);
    return null;
  }
}

/** @param {number | null} v */
function fmtMs(v) {
  return v === null || v === undefined ? '–' : `${v.toFixed(v < 10 ? 2 : 1)} ms`;
}

const appliedTimes = /** @type {number[]} */ ([]);

function updateHud() {
  const c = rally.client;
  if (c) {
    rally.rtt = c.rtt;
    rally.jitter = c.jitter;
    rally.attempts = c.attempts;
    rally.inputsSent = c.stats.inputsSent;
  }
  const now = performance.now();
  while (appliedTimes.length && now - appliedTimes[0] > 1000) appliedTimes.shift();
  rally.snapshotRate = appliedTimes.length;
  hud.status.textContent = rally.status;
  hud.room.textContent = `${options.room} as ${options.name}`;
  const tier = /** @type {keyof typeof TIER_NAMES | null} */ (rally.transport);
  hud.transport.textContent = tier
    ? `${TIER_NAMES[tier] || tier}${rally.certHashUsed && tier === 'webtransport' ? ', pinned cert hash' : ''}`
    : '–';
  hud.transport.dataset.tier = tier || '';
  hud.reason.textContent = rally.fallbackReason || (tier === 'webtransport' ? 'the fastest tier: it works' : '–');
  hud.rtt.textContent = fmtMs(rally.rtt);
  hud.jitter.textContent = rally.rtt === null ? '–' : fmtMs(rally.jitter);
  hud.rate.textContent = `${rally.snapshotRate} /s`;
  hud.lost.textContent = String(rally.snapshotsLost);
  hud.tick.textContent = rally.serverTick === null ? '–' : String(rally.serverTick);
  hud.players.textContent = String(nameMap.size);
}

// ---------------------------------------------------------------------------
// Keyboard and canvas helpers
// ---------------------------------------------------------------------------

/**
 * Whether a key event is typing into a text field (input, textarea,
 * select, contenteditable): such keys are text, not steering.
 * @param {Event} e
 */
export function isTyping(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
}

/**
 * Tracks held keys from `keys` (code → button bits) on the window, except
 * while a text field has focus; returns the buttons held now.
 * @param {Readonly<Record<string, number>>} keys
 * @returns {() => number}
 */
export function heldButtons(keys) {
  const held = new Set(/** @type {string[]} */ ([]));
  window.addEventListener('keydown', (e) => {
    if (isTyping(e) || !(e.code in keys)) return;
    held.add(e.code);
    e.preventDefault();
  });
  window.addEventListener('keyup', (e) => {
    if (!held.delete(e.code)) return;
    e.preventDefault();
  });
  // Keys released elsewhere (another window, a text field) never send keyup here.
  window.addEventListener('blur', () => held.clear());
  document.addEventListener('focusin', (e) => {
    if (isTyping(e)) held.clear();
  });
  return () => {
    let b = 0;
    for (const code of held) b |= keys[code];
    return b;
  };
}

/**
 * Scales a canvas so that a `w` × `h` world (plus a `pad` border) fits the
 * stage, now and on every resize; draws then use world units. Returns the
 * context, a way to change the world's size (Welcome.app may say), and
 * conversions between world coordinates and the page's (for pointer events
 * and tests).
 * @param {HTMLCanvasElement} canvas
 * @param {number} w
 * @param {number} h
 * @param {number} pad
 */
export function fitCanvas(canvas, w, h, pad) {
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
  const stage = /** @type {HTMLElement} */ (canvas.parentElement);
  let scale = 1;
  const fit = () => {
    const box = stage.getBoundingClientRect();
    const availW = Math.max(160, box.width || window.innerWidth - 32);
    const availH = Math.max(90, window.innerHeight - stage.offsetTop - 24);
    scale = Math.min(availW / (w + 2 * pad), availH / (h + 2 * pad));
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = `${Math.floor((w + 2 * pad) * scale)}px`;
    canvas.style.height = `${Math.floor((h + 2 * pad) * scale)}px`;
    canvas.width = Math.floor((w + 2 * pad) * scale * dpr);
    canvas.height = Math.floor((h + 2 * pad) * scale * dpr);
    ctx.setTransform(scale * dpr, 0, 0, scale * dpr, pad * scale * dpr, pad * scale * dpr);
  };
  fit();
  window.addEventListener('resize', fit);
  return {
    ctx,
    /**
     * @param {number} width
     * @param {number} height
     */
    setWorld(width, height) {
      w = width;
      h = height;
      fit();
    },
    /** World → page coordinates (what a mouse event's clientX/Y would be). */
    toPage(/** @type {number} */ x, /** @type {number} */ y) {
      const r = canvas.getBoundingClientRect();
      return { x: r.left + (x + pad) * scale, y: r.top + (y + pad) * scale };
    },
    /** Page → world coordinates. */
    toWorld(/** @type {number} */ px, /** @type {number} */ py) {
      const r = canvas.getBoundingClientRect();
      return { x: (px - r.left) / scale - pad, y: (py - r.top) / scale - pad };
    },
  };
}

/**
 * A stable colour per player id.
 * @param {number} id
 */
export function colourOf(id) {
  return `hsl(${(id * 137.508) % 360}, 70%, 55%)`;
}

// ---------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------

/**
 * Builds the page furniture, checks the server runs `spec.game`, connects,
 * and runs the input pump and the frame loop.
 * @param {GameSpec} spec
 */
export function startGame(spec) {
  rally.game = spec.game;
  const hudBox = byId('hud');
  hudBox.prepend(hudList);
  hudBox.append(logList);
  /** @type {RallyClient | null} */
  let client = null;
  /** @type {Welcome | null} */
  let welcome = null;

  // Fixed-step input pump: one Input per server tick. Driven from both
  // requestAnimationFrame and a timer, so a throttled rAF (background tab)
  // still sends input; the accumulator makes double driving harmless.
  let lastPump = performance.now();
  let acc = 0;
  const pump = () => {
    const now = performance.now();
    if (!spec.input || !client || client.state !== 'connected' || !welcome) {
      lastPump = now;
      acc = 0;
      return;
    }
    const step = 1000 / welcome.tickHz;
    acc = Math.min(acc + now - lastPump, step * MAX_CATCH_UP_INPUTS);
    lastPump = now;
    while (acc >= step) {
      acc -= step;
      const bytes = spec.input();
      if (bytes) client.sendInput(bytes);
    }
  };

  /** @param {StatusEvent} s */
  const onStatus = (s) => {
    if (rally.status === 'wrong-game') return;
    rally.status = s.state;
    rally.transport = s.transport;
    rally.fallbackReason = s.fallbackReason;
    if (s.state === 'connected' && !s.fallbackUpdated && s.welcome) {
      client = s.client;
      welcome = s.welcome;
      rally.client = client;
      rally.welcome = welcome;
      rally.playerId = welcome.playerId;
      rally.resumed = client.resumed;
      rally.connectedAt = client.connectedAt;
      rally.certHashUsed = client.certHashUsed;
      rally.sessions = client.sessions;
      rally.error = null;
      if (welcome.game !== spec.game) {
        client.close();
        wrongGame(welcome.game, []);
        return;
      }
      // A fresh player gets the whole roster again after Welcome; a resumed
      // one only the events it missed, so its names must be kept.
      if (!client.resumed) {
        nameMap.clear();
        rally.names = {};
      }
      acc = 0;
      lastPump = performance.now();
      spec.onJoin?.(welcome, client.resumed);
    }
    if (s.state === 'closed' || s.state === 'reconnecting') rally.error = s.reason || null;
    log(`${s.state}${s.transport ? ` (${s.transport})` : ''}${s.client.resumed && s.state === 'connected' ? ', resumed' : ''}${s.reason ? `: ${s.reason}` : ''}`);
    updateHud();
  };

  /** @param {RallyEvent} ev */
  const onEvent = (ev) => {
    if (ev.type === 'player_joined') {
      nameMap.set(ev.playerId, ev.name);
      rally.names[ev.playerId] = ev.name;
      if (ev.playerId !== rally.playerId) log(`${ev.name} joined`);
    } else if (ev.type === 'player_left') {
      log(`${nameOf(ev.playerId)} left`);
      nameMap.delete(ev.playerId);
      delete rally.names[ev.playerId];
      spec.onLeft?.(ev.playerId);
    } else {
      rally.error = `${ev.codeName}: ${ev.reason}`;
      log(`server error ${rally.error}`);
    }
  };

  /**
   * @param {Snapshot} snap
   * @param {{ channel: Channel }} info
   */
  const onSnapshot = (snap, info) => {
    const now = performance.now();
    appliedTimes.push(now);
    const st = /** @type {RallyClient} */ (client).stats;
    rally.lastSnapshot = { tick: snap.tick, ackSeq: snap.ackSeq, serverTimeUs: snap.serverTimeUs, channel: info.channel };
    rally.serverTick = snap.tick;
    rally.snapshotsReceived = st.snapshotsReceived;
    rally.datagramSnapshots = st.datagramSnapshots;
    rally.streamSnapshots = st.streamSnapshots;
    rally.httpSnapshots = st.httpSnapshots;
    rally.snapshotsLost = st.snapshotsLost;
    spec.onSnapshot?.(snap, info.channel, now);
  };

  /** @param {number} retryMs */
  const start = async (retryMs) => {
    try {
      await connect(location.origin, {
        ...options,
        onStatus,
        onEvent,
        onSnapshot,
        onMessage: (payload, info) => spec.onMessage?.(payload, info.reliable),
        onLost: (n) => log(`${n} message${n === 1 ? '' : 's'} could not be delivered`),
      });
    } catch (e) {
      if (rally.status === 'wrong-game') return;
      const err = /** @type {Error} */ (e);
      rally.error = err.message;
      updateHud();
      const fatal = err instanceof TypeError || (err instanceof RallyError && NO_RETRY_CODES.includes(err.code));
      if (!fatal) {
        log(`retrying in ${Math.round(retryMs / 1000)} s`);
        setTimeout(() => start(Math.min(retryMs * 2, 15000)), retryMs);
      }
    }
  };

  const frame = (/** @type {number} */ now) => {
    pump();
    spec.draw?.(now);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  setInterval(pump, 5);
  setInterval(updateHud, 250);
  window.addEventListener('pagehide', () => client?.close());
  updateHud();

  const bad = checkRoom(options.room) || checkName(options.name);
  if (bad) {
    rally.status = 'closed';
    rally.error = bad;
    log(`cannot join: ${bad}`);
    updateHud();
    return;
  }
  // Join only a server that runs this game; an old server without /games
  // gets a try, and Welcome.game decides.
  fetchGames().then((list) => {
    if (list) {
      rally.running = list.running;
      renderNav(list.games, list.running);
      if (list.running !== spec.game) {
        wrongGame(list.running, list.games);
        return;
      }
    }
    start(1000);
  });
}
