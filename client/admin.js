// @ts-check
// The admin page (`rally serve --admin-token TOKEN`, then /admin#token=TOKEN):
// polls GET /admin/api/state once a second with `Authorization: Bearer` and
// updates the tables and the three charts in place. The token comes from
// the URL fragment (never sent to a server, so never in a log) or the
// password field, and is kept in sessionStorage only. No library: the
// charts are drawn on <canvas> here.

/**
 * @typedef {object} Sample
 * @property {number} t unix ms
 * @property {Record<string, number>} sessions open sessions by transport
 * @property {number} messages_in_per_sec
 * @property {number} messages_out_per_sec
 * @property {number | null} tick_p50_ms
 * @property {number | null} tick_p99_ms
 * @property {number | null} cpu
 */
/**
 * @typedef {object} NodeEntry
 * @property {string} id
 * @property {string} url
 * @property {string} wt_url
 * @property {number} sessions
 * @property {number} rooms
 * @property {number} players
 * @property {number | null} cpu
 * @property {boolean} draining
 * @property {boolean} local
 */
/** @typedef {{ name: string, players: number, game: string }} RoomEntry */
/**
 * @typedef {object} PlayerEntry
 * @property {number} session
 * @property {string} room
 * @property {number} id
 * @property {string} name
 * @property {string} transport
 * @property {number | null} rtt_ms
 * @property {number | null} jitter_ms
 * @property {string | null} remote
 * @property {number} connected_for_s
 */
/**
 * @typedef {object} AdminState
 * @property {number} now
 * @property {number} sample_period_ms
 * @property {NodeEntry} node
 * @property {NodeEntry[]} nodes
 * @property {RoomEntry[]} rooms
 * @property {PlayerEntry[]} players
 * @property {Sample[]} series
 */
/** @typedef {{ label: string, color: string, values: (number | null)[] }} Line */

const STORAGE_KEY = 'rally-admin-token';
const POLL_MS = 1000;
const TRANSPORT_COLORS = /** @type {const} */ ([
  ['webtransport', 'WebTransport', '#88c0d0'],
  ['websocket', 'WebSocket', '#a3be8c'],
  ['http', 'HTTP streaming', '#ebcb8b'],
]);

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} is missing`);
  return el;
}

const notice = byId('notice', HTMLDivElement);
const statusLine = byId('status', HTMLSpanElement);
const login = byId('login', HTMLFormElement);
const tokenInput = byId('token', HTMLInputElement);

/** What the page shows, for tests and the curious. */
const admin = {
  /** @type {AdminState | null} */
  state: null,
  /** Successful polls so far. */
  updates: 0,
  /** 'ok' | 'unauthorized' | 'unreachable' | 'no-token' */
  status: 'starting',
};
/** @type {any} */ (window).admin = admin;

/** The token from `#token=...` (then removed from the address bar), or the stored one. */
function initialToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get('token');
  if (fromHash) {
    sessionStorage.setItem(STORAGE_KEY, fromHash);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(STORAGE_KEY);
}

/** @param {string | null} text */
function showNotice(text) {
  notice.hidden = text === null;
  notice.textContent = text ?? '';
}

/** @param {string} text @param {string} [cls] */
function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/** @param {number | null | undefined} v @param {number} [digits] */
function num(v, digits = 1) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–';
}

/** @param {number} s */
function duration(s) {
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * Replaces a table's rows (the table itself stays, so the page never
 * jumps); an empty list shows `empty`.
 * @param {string} id
 * @param {HTMLTableRowElement[]} rows
 * @param {string} empty
 */
function fillTable(id, rows, empty) {
  const table = byId(id, HTMLTableElement);
  const body = table.tBodies[0];
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(empty, 'empty');
    td.colSpan = table.tHead?.rows[0]?.cells.length ?? 1;
    tr.append(td);
    rows = [tr];
  }
  body.replaceChildren(...rows);
}

/** @param {...HTMLTableCellElement} cells */
function row(...cells) {
  const tr = document.createElement('tr');
  tr.append(...cells);
  return tr;
}

/** @param {AdminState} s */
function renderTables(s) {
  fillTable(
    'nodes',
    s.nodes.map((n) => row(
      cell(n.local ? `${n.id} (this node)` : n.id),
      cell(n.url),
      cell(n.wt_url),
      cell(String(n.sessions), 'num'),
      cell(String(n.rooms), 'num'),
      cell(String(n.players), 'num'),
      cell(num(n.cpu), 'num'),
      cell(n.draining ? 'draining' : 'serving'),
    )),
    'no nodes',
  );
  fillTable(
    'rooms',
    s.rooms.map((r) => row(cell(r.name), cell(r.game), cell(String(r.players), 'num'))),
    'no rooms open',
  );
  fillTable(
    'players',
    s.players.map((p) => {
      const tr = row(
        cell(p.room),
        cell(String(p.id), 'num'),
        cell(p.name),
        cell(p.transport),
        cell(num(p.rtt_ms), 'num'),
        cell(num(p.jitter_ms), 'num'),
        cell(p.remote ?? '–'),
        cell(duration(p.connected_for_s), 'num'),
      );
      tr.dataset.transport = p.transport;
      tr.dataset.session = String(p.session);
      return tr;
    }),
    'no players connected',
  );
}

/**
 * A rounded-up axis maximum: 1, 2 or 5 times a power of ten.
 * @param {number} v
 */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** @param {number} v */
function axisLabel(v) {
  if (v >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  return String(+v.toPrecision(3));
}

/**
 * Draws `lines` (oldest value first) on `canvas`, and its legend; the
 * x axis spans the samples received, the y axis starts at zero.
 * @param {string} name chart-NAME and legend-NAME
 * @param {Line[]} lines
 * @param {number} periodMs
 * @param {number} digits decimals of the legend's latest values
 */
function drawChart(name, lines, periodMs, digits) {
  const canvas = byId(`chart-${name}`, HTMLCanvasElement);
  const legend = byId(`legend-${name}`, HTMLUListElement);
  const n = Math.max(0, ...lines.map((l) => l.values.length));
  canvas.dataset.samples = String(n);
  const latest = lines.map((l) => l.values.at(-1));
  canvas.dataset.latest = JSON.stringify(Object.fromEntries(lines.map((l, i) => [l.label, latest[i] ?? null])));
  legend.replaceChildren(...lines.map((l, i) => {
    const li = document.createElement('li');
    li.style.setProperty('--swatch', l.color);
    li.textContent = `${l.label} ${num(latest[i], digits)}`;
    return li;
  }));

  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 40;
  const right = 8;
  const top = 8;
  const bottom = 18;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  let max = 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
  max = niceMax(max);

  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#8791a5';
  ctx.strokeStyle = '#2b3344';
  ctx.lineWidth = 1;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (const f of [0, 0.5, 1]) {
    const y = Math.round(top + plotH * (1 - f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    ctx.fillText(axisLabel(max * f), left - 6, y);
  }
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  const span = Math.max(0, (n - 1) * periodMs / 1000);
  ctx.fillText(n > 1 ? `−${duration(span)}` : '', left, top + plotH + 4);
  ctx.textAlign = 'right';
  ctx.fillText('now', left + plotW, top + plotH + 4);

  const x = (/** @type {number} */ i) => left + (n > 1 ? (plotW * i) / (n - 1) : plotW);
  const y = (/** @type {number} */ v) => top + plotH * (1 - v / max);
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  for (const l of lines) {
    ctx.strokeStyle = l.color;
    ctx.beginPath();
    let pen = false;
    const offset = n - l.values.length;
    l.values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        return;
      }
      if (pen) ctx.lineTo(x(i + offset), y(v));
      else ctx.moveTo(x(i + offset), y(v));
      pen = true;
    });
    if (n === 1 && l.values[0] !== null && l.values[0] !== undefined) {
      ctx.arc(x(0), y(l.values[0]), 2, 0, 2 * Math.PI);
    }
    ctx.stroke();
  }
}

/** @param {AdminState} s */
function renderCharts(s) {
  const series = s.series;
  const period = s.sample_period_ms || POLL_MS;
  drawChart(
    'sessions',
    TRANSPORT_COLORS.map(([key, label, color]) => ({ label, color, values: series.map((p) => p.sessions[key] ?? 0) })),
    period,
    0,
  );
  drawChart(
    'messages',
    [
      { label: 'in', color: '#b48ead', values: series.map((p) => p.messages_in_per_sec) },
      { label: 'out', color: '#d08770', values: series.map((p) => p.messages_out_per_sec) },
    ],
    period,
    0,
  );
  drawChart(
    'ticks',
    [
      { label: 'p50', color: '#88c0d0', values: series.map((p) => p.tick_p50_ms) },
      { label: 'p99', color: '#bf616a', values: series.map((p) => p.tick_p99_ms) },
    ],
    period,
    2,
  );
}

/** @type {string | null} */
let token = initialToken();
/** @type {ReturnType<typeof setTimeout> | null} */
let timer = null;

/** @param {string} text */
function askForToken(text) {
  admin.status = token ? 'unauthorized' : 'no-token';
  showNotice(text);
  statusLine.textContent = '';
  login.hidden = false;
  tokenInput.focus();
}

async function poll() {
  timer = null;
  if (!token) {
    askForToken('Enter the admin token (rally serve --admin-token), or open /admin#token=TOKEN.');
    return;
  }
  let res;
  try {
    res = await fetch('/admin/api/state', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  } catch {
    admin.status = 'unreachable';
    showNotice('The server does not answer; retrying every second.');
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  if (res.status === 401) {
    sessionStorage.removeItem(STORAGE_KEY);
    askForToken('401: the admin token was refused. Enter the token the server was started with (--admin-token).');
    return;
  }
  if (!res.ok) {
    admin.status = 'unreachable';
    showNotice(`The server answered ${res.status}; retrying every second.`);
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  /** @type {AdminState} */
  const s = await res.json();
  admin.state = s;
  admin.updates++;
  admin.status = 'ok';
  showNotice(null);
  login.hidden = true;
  statusLine.textContent = `${s.node.id} · ${s.node.sessions} sessions · updated ${new Date(s.now).toLocaleTimeString()}`;
  renderTables(s);
  renderCharts(s);
  timer = setTimeout(poll, POLL_MS);
}

login.addEventListener('submit', (e) => {
  e.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  token = value;
  tokenInput.value = '';
  sessionStorage.setItem(STORAGE_KEY, value);
  if (timer !== null) clearTimeout(timer);
  void poll();
});

void poll();

// A module (loaded with type="module"): its names stay out of the global scope.
export {};
