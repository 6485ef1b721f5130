// @ts-check
// How a Rally session gets opened: endpoints from the server's origin, the
// pinned certificate digests (PROTOCOL.md §10), join tokens (§9), the
// handshake on one link (Hello or Resume, then Welcome) and the transport
// race (happy eyeballs over three tiers: WebTransport, WebSocket, HTTP
// streaming) with its remembered winner. The client object that lives on
// the winning link is in rally.js.

import { ErrorCode, RallyError, RedirectError } from './codec.js';
import { HttpLink, WebSocketLink, WebTransportLink, clockMs, noop } from './link.js';

/** @typedef {import('./codec.js').Welcome} Welcome */
/** @typedef {import('./codec.js').ServerMessage} ServerMessage */
/** @typedef {import('./link.js').Link} Link */
/** @typedef {import('./link.js').Channel} Channel */
/** @typedef {import('./link.js').CloseInfo} CloseInfo */
/** @typedef {import('./link.js').TransportKind} TransportKind */
/** @typedef {'auto' | TransportKind} TransportChoice */
/** @typedef {string | (() => string | null | Promise<string | null>)} TokenSource */
/**
 * @typedef {object} Endpoints
 * @property {string} origin
 * @property {string} webTransportUrl
 * @property {string} webSocketUrl
 * @property {string} httpUrl
 * @property {string} certHashUrl
 * @property {boolean} useCertHash
 * @property {string[]} [certHashes] hex digests already known for this node (from /rooms), so /cert-hash is not fetched
 */
/** @typedef {{ winner: TransportKind, at: number, reason?: string | null }} TransportMemory */
/**
 * What the race needs from the client's options.
 * @typedef {object} RaceOptions
 * @property {TransportChoice} transport
 * @property {number} headStartMs
 * @property {number} webTransportTimeoutMs
 * @property {number} webSocketTimeoutMs
 * @property {number} httpHeadStartMs
 * @property {number} httpTimeoutMs
 * @property {number} reprobeAfterMs
 * @property {string | string[] | false} [certificateHash]
 * @property {TokenSource} [token]
 */
/**
 * One attempt's timeline: ms from its start to each stage reached, and the
 * error of a failed one.
 * @typedef {object} AttemptReport
 * @property {TransportKind} transport
 * @property {number} [cert-hash]
 * @property {number} [no-cert-hash]
 * @property {number} [open]
 * @property {number} [hello-sent]
 * @property {number} [welcomed]
 * @property {number} [failed]
 * @property {number} [abandoned]
 * @property {string} [error]
 */
/**
 * The first message of a session: Hello, or Resume with the Hello to send
 * if the server answers resume_failed (PROTOCOL.md §7.1).
 * @typedef {{ hello: Uint8Array, resume: Uint8Array | null }} Greeting
 */
/**
 * @typedef {object} Joined
 * @property {Link} link
 * @property {Welcome} welcome
 * @property {boolean} resumed whether Welcome answered Resume (not a fresh Hello)
 * @property {[ServerMessage, Channel][]} backlog messages after Welcome, until the client takes over
 * @property {Attempt} attempt
 */
/**
 * @typedef {Joined & {
 *   transport: TransportKind,
 *   fallbackReason: string | null,
 *   attempts: Attempt[],
 *   certHashUsed: boolean,
 * }} Established
 */

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/**
 * Parses a 64-digit hex SHA-256 into 32 bytes, or returns null.
 * @param {unknown} hex
 * @returns {Uint8Array | null}
 */
export function hexToBytes(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Endpoints derived from the server's http(s) origin.
 * @param {string} url
 * @param {string} [webTransportUrl]
 * @returns {Endpoints}
 */
export function endpoints(url, webTransportUrl) {
  const u = new URL(url);
  const secure = u.protocol === 'https:';
  if (!secure && u.protocol !== 'http:') throw new TypeError('url must be an http(s) origin');
  return {
    origin: u.origin,
    webTransportUrl: webTransportUrl || `https://${u.host}/rally`,
    webSocketUrl: `${secure ? 'wss' : 'ws'}://${u.host}/rally`,
    httpUrl: `${u.origin}/rally/http`,
    certHashUrl: `${u.origin}/cert-hash`,
    // A page served over https uses a certificate the browser already
    // trusts, so WebTransport needs no pinned hash.
    useCertHash: !secure,
  };
}

/**
 * Asks `origin` where `room` lives (`GET /rooms/NAME`, PROTOCOL.md §13.2).
 * Resolves with the answer, or null when the server has no such endpoint
 * or does not answer in `timeoutMs`; rejects with RallyError `unavailable`
 * when the cluster cannot place the room now.
 * @param {string} origin
 * @param {string} room
 * @param {number} timeoutMs
 * @returns {Promise<{ node: string, here: boolean, url: string, wtUrl: string, certHashes: string[], nodes: string[] } | null>}
 */
export async function locateRoom(origin, room, timeoutMs) {
  /** @type {Response} */
  let res;
  try {
    res = await fetch(`${origin}/rooms/${encodeURIComponent(room)}`, { signal: AbortSignal.timeout(timeoutMs), cache: 'no-store' });
  } catch {
    return null;
  }
  /** @type {any} */
  let v = null;
  try {
    v = await res.json();
  } catch {
    return null;
  }
  if (res.status === 503 && v?.error === 'unavailable') throw new RallyError(ErrorCode.unavailable, String(v.reason || ''));
  if (!res.ok || typeof v?.url !== 'string' || typeof v?.wt_url !== 'string') return null;
  const strings = (/** @type {unknown} */ a) => (Array.isArray(a) ? a.filter((x) => typeof x === 'string') : []);
  return { node: String(v.node || ''), here: v.here === true, url: v.url, wtUrl: v.wt_url, certHashes: strings(v.cert_hashes), nodes: strings(v.nodes) };
}

/**
 * Which transports an 'auto' connection tries, given what is remembered for
 * this server (or null), the time, and whether the browser has
 * WebTransport. HTTP streaming is always tried last. A remembered WebSocket
 * win skips WebTransport, a remembered HTTP streaming win skips both, until
 * `reprobeAfterMs` has passed. `reason` says why a tier is skipped. Pure:
 * the race itself lives in establish().
 * @param {{ hasWebTransport: boolean, memory: TransportMemory | null, now: number, reprobeAfterMs: number, secureContext?: boolean }} args
 * @returns {{ webTransport: boolean, webSocket: boolean, reason: string | null }}
 */
export function planAuto({ hasWebTransport, memory, now, reprobeAfterMs, secureContext = true }) {
  const fresh = !!memory && typeof memory.at === 'number' && now - memory.at >= 0 && now - memory.at < reprobeAfterMs;
  if (fresh && memory?.winner === 'http') {
    return { webTransport: false, webSocket: false, reason: `remembered: ${memory.reason || 'HTTP streaming won last time'}` };
  }
  if (!hasWebTransport) {
    return {
      webTransport: false,
      webSocket: true,
      reason: secureContext ? 'WebTransport API unavailable' : 'WebTransport API unavailable (page is not a secure context)',
    };
  }
  if (fresh && memory?.winner === 'websocket') {
    return { webTransport: false, webSocket: true, reason: `remembered: ${memory.reason || 'WebSocket won last time'}` };
  }
  return { webTransport: true, webSocket: true, reason: null };
}

/**
 * The digests a /cert-hash body tells a browser to accept (PROTOCOL.md §10):
 * every sha-256 entry of `hashes` (the current certificate and, during a
 * renewal, the next one), else the top-level digest.
 * @param {unknown} body
 * @returns {{ bytes: Uint8Array, notAfterUnix: number | null }[]}
 */
export function certHashesFromJson(body) {
  if (!body || typeof body !== 'object') return [];
  const b = /** @type {{ hashes?: unknown }} */ (body);
  const entries = Array.isArray(b.hashes) && b.hashes.length ? b.hashes : [body];
  const out = [];
  const seen = new Set();
  for (const e of entries) {
    if (!e || String(e.algorithm).toLowerCase() !== 'sha-256') continue;
    const bytes = hexToBytes(e.hex);
    if (!bytes || seen.has(e.hex.toLowerCase())) continue;
    seen.add(e.hex.toLowerCase());
    out.push({ bytes, notAfterUnix: typeof e.not_after_unix === 'number' ? e.not_after_unix : null });
  }
  return out;
}

/**
 * `url` with `?token=` set (PROTOCOL.md §9); unchanged when there is no token.
 * @param {string} url
 * @param {string | null | undefined} token
 * @returns {string}
 */
export function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set('token', token);
  return u.toString();
}

/**
 * @param {TokenSource | undefined} token
 * @returns {Promise<string | null>}
 */
async function resolveToken(token) {
  if (typeof token === 'function') return (await token()) || null;
  return token || null;
}

/**
 * A short, human-readable reason for a failure.
 * @param {unknown} err
 * @returns {string}
 */
export function reasonOf(err) {
  if (!err) return 'unknown error';
  if (err instanceof Error) return err.message || String(err);
  return String(err);
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} message
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, message) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/**
 * @param {string} url
 * @param {number} timeoutMs
 */
async function fetchCertHash(url, timeoutMs) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(url, { cache: 'no-store', signal: ctl.signal });
    if (!res.ok) return null;
    const hashes = certHashesFromJson(await res.json());
    return hashes.length ? hashes : null;
  } catch {
    return null;
  } finally {
    clearTimeout(t);
  }
}

// ---------------------------------------------------------------------------
// One handshake
// ---------------------------------------------------------------------------

/** @typedef {(mark: (stage: string) => void) => Promise<Link>} LinkFactory */

/**
 * One handshake attempt over one link: open it, (maybe) wait for `gate`,
 * send Hello or Resume, wait for Welcome. Messages after Welcome queue in
 * `backlog` until the client takes over.
 */
export class Attempt {
  /** @type {'starting' | 'open' | 'hello-sent' | 'welcomed' | 'failed'} */
  stage = 'starting';
  t0 = clockMs();
  /** @type {Record<string, number | string>} stage → ms since start, plus `error` */
  timeline = {};
  /** @type {Link | null} */
  link = null;
  abandoned = false;
  /** @type {[ServerMessage, Channel][]} */
  backlog = [];
  /** @type {CloseInfo | null} how the link ended after Welcome, before the client took over */
  closeInfo = null;
  resumeRefused = false;

  /**
   * @param {TransportKind} kind
   * @param {LinkFactory} makeLink
   * @param {Greeting} greeting
   * @param {{ timeoutMs: number, beforeHello?: (() => Promise<void> | null) | undefined, onStage?: (stage: string) => void }} opts
   */
  constructor(kind, makeLink, greeting, { timeoutMs, beforeHello, onStage = noop }) {
    this.kind = kind;
    this.onStage = onStage;
    /** @type {Promise<Joined>} */
    this.promise = withTimeout(this.run(makeLink, greeting, beforeHello), timeoutMs, 'timeout').then(
      (r) => {
        if (this.abandoned) {
          this.discard();
          throw new Error('abandoned');
        }
        return r;
      },
      (err) => {
        this.mark('failed');
        this.timeline.error = reasonOf(err);
        // A timed-out run may still be in flight: make sure it never joins.
        this.abandoned = true;
        this.discard();
        throw err;
      },
    );
    this.promise.catch(noop);
  }

  /**
   * @param {LinkFactory} makeLink
   * @param {Greeting} greeting
   * @param {(() => Promise<void> | null) | undefined} beforeHello
   * @returns {Promise<Joined>}
   */
  async run(makeLink, greeting, beforeHello) {
    const link = await makeLink((stage) => this.mark(stage));
    this.link = link;
    if (this.abandoned) throw new Error('abandoned');
    /** @type {Promise<Welcome>} */
    const welcomed = new Promise((resolve, reject) => {
      link.onMessage = (msg, channel) => {
        if (this.stage === 'welcomed') {
          this.backlog.push([msg, channel]);
        } else if (msg.type === 'welcome') {
          this.mark('welcomed');
          resolve(msg);
        } else if (msg.type === 'error' && msg.code === ErrorCode.resume_failed && greeting.resume && !this.resumeRefused) {
          // Not fatal (PROTOCOL.md §7.1): the player is gone; join afresh
          // on the same session.
          this.resumeRefused = true;
          link.sendReliable(greeting.hello);
        } else if (msg.type === 'error') {
          reject(new RallyError(msg.code, msg.reason));
        } else if (msg.type === 'redirect') {
          // Cluster mode: the room is on another node; connect() goes there.
          reject(new RedirectError(msg));
        }
        // Anything else before Welcome is ignored: the server sends Welcome first.
      };
      link.onClose = (info) => {
        if (this.stage === 'welcomed') {
          this.closeInfo = info;
          return;
        }
        const code = codeFromClose(info.code);
        reject(code ? new RallyError(code, info.reason) : new Error(info.reason || 'closed'));
      };
    });
    welcomed.catch(noop);
    await Promise.race([link.open(), welcomed]);
    this.mark('open');
    // The gate is asked and Hello sent in one go (no await between when
    // it says go), so two attempts never both pass it at once.
    const gate = beforeHello ? beforeHello() : null;
    if (gate) await gate;
    if (this.abandoned) throw new Error('abandoned');
    link.sendReliable(greeting.resume || greeting.hello);
    this.mark('hello-sent');
    const welcome = await welcomed;
    const resumed = greeting.resume !== null && !this.resumeRefused;
    return { link, welcome, resumed, backlog: this.backlog, attempt: this };
  }

  /** @param {string} stage */
  mark(stage) {
    if (stage === 'open' || stage === 'hello-sent' || stage === 'welcomed' || stage === 'failed') this.stage = stage;
    this.timeline[stage] = Math.round(clockMs() - this.t0);
    this.onStage(stage);
  }

  /**
   * What happened, for diagnostics.
   * @returns {AttemptReport}
   */
  report() {
    return /** @type {AttemptReport} */ ({ transport: this.kind, ...this.timeline });
  }

  /** Stops this attempt: a joined loser leaves, anything else just closes. */
  abandon() {
    this.abandoned = true;
    this.timeline.abandoned = Math.round(clockMs() - this.t0);
    this.discard();
  }

  discard() {
    const link = this.link;
    if (!link || link.closed) return;
    link.onMessage = noop;
    if (this.stage === 'welcomed') link.leave();
    else link.close();
  }
}

/**
 * Error code carried by a close code 4001..4999, else null (PROTOCOL.md §6).
 * @param {number | null | undefined} closeCode
 * @returns {number | null}
 */
export function codeFromClose(closeCode) {
  return Number.isInteger(closeCode) && /** @type {number} */ (closeCode) > 4000 && /** @type {number} */ (closeCode) < 5000
    ? /** @type {number} */ (closeCode) - 4000
    : null;
}

// Factories return unopened links: Attempt.run attaches its handlers first.

/**
 * @param {Endpoints} ep
 * @param {RaceOptions} opts
 * @param {{ certHashUsed: boolean, certHashExpired: boolean }} info
 * @returns {LinkFactory}
 */
function wtLinkFactory(ep, opts, info) {
  return async (mark) => {
    /** @type {Uint8Array[] | null} */
    let certHashes = null;
    const token = await resolveToken(opts.token);
    if (opts.certificateHash) {
      const given = /** @type {Uint8Array[]} */ ([opts.certificateHash].flat().map(hexToBytes).filter(Boolean));
      certHashes = given.length ? given : null;
    } else if (ep.useCertHash && opts.certificateHash !== false && ep.certHashes?.length) {
      certHashes = /** @type {Uint8Array[]} */ (ep.certHashes.map(hexToBytes).filter(Boolean));
    } else if (ep.useCertHash && opts.certificateHash !== false) {
      const got = await fetchCertHash(ep.certHashUrl, Math.min(1000, opts.webTransportTimeoutMs));
      if (got) {
        certHashes = got.map((h) => h.bytes);
        const now = Date.now();
        info.certHashExpired = got.every((h) => h.notAfterUnix !== null && h.notAfterUnix * 1000 < now);
      }
    }
    info.certHashUsed = !!certHashes;
    mark(certHashes ? 'cert-hash' : 'no-cert-hash');
    return new WebTransportLink(withToken(ep.webTransportUrl, token), certHashes);
  };
}

/**
 * @param {Endpoints} ep
 * @param {RaceOptions} opts
 * @param {string | null} [fallback] wt_unavailable, wt_failed, wt_timeout or remembered
 * @returns {LinkFactory}
 */
function wsLinkFactory(ep, opts, fallback) {
  return async () => {
    const url = new URL(ep.webSocketUrl);
    // Why this is not WebTransport, for the server's metrics (PROTOCOL.md §1.1).
    if (fallback) url.searchParams.set('fallback', fallback);
    return new WebSocketLink(withToken(url.toString(), await resolveToken(opts.token)));
  };
}

/**
 * @param {Endpoints} ep
 * @param {RaceOptions} opts
 * @param {string | null} [fallback] ws_failed or remembered
 * @returns {LinkFactory}
 */
function httpLinkFactory(ep, opts, fallback) {
  return async () => {
    const url = new URL(ep.httpUrl, globalThis.location?.href);
    // Why this is not WebSocket, for the server's metrics (PROTOCOL.md §1.1).
    if (fallback) url.searchParams.set('fallback', fallback);
    return new HttpLink(withToken(url.toString(), await resolveToken(opts.token)));
  };
}

// ---------------------------------------------------------------------------
// The remembered winner
// ---------------------------------------------------------------------------

/** @param {Endpoints} ep */
function memoryKey(ep) {
  return `rally.transport:${ep.webSocketUrl}|${ep.webTransportUrl}`;
}

/**
 * @param {Endpoints} ep
 * @returns {TransportMemory | null}
 */
function readMemory(ep) {
  try {
    const raw = globalThis.localStorage?.getItem(memoryKey(ep));
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

/**
 * @param {Endpoints} ep
 * @param {TransportMemory} value
 */
function writeMemory(ep, value) {
  try {
    globalThis.localStorage?.setItem(memoryKey(ep), JSON.stringify(value));
  } catch {
    // Storage may be disabled; the race simply runs every time.
  }
}

// ---------------------------------------------------------------------------
// The race
// ---------------------------------------------------------------------------

/** The tiers, fastest first, and their names in reasons. */
const TIERS = /** @type {const} */ (['webtransport', 'websocket', 'http']);
/** @type {Record<TransportKind, string>} */
const LABEL = { webtransport: 'WebTransport', websocket: 'WebSocket', http: 'HTTP streaming' };

/**
 * A reason as stored in memory: without "remembered: ", so remembered
 * reasons do not nest visit after visit.
 * @param {string} reason
 */
function unremembered(reason) {
  return reason.replace(/remembered: /g, '');
}

/**
 * Opens one Rally session per `opts.transport`. 'auto' races the three
 * tiers (happy eyeballs): WebTransport starts first; WebSocket
 * `headStartMs` after WebTransport started connecting, or as soon as it
 * fails; HTTP streaming `httpHeadStartMs` after WebSocket started, or as
 * soon as both failed. The first to receive Welcome wins and the others
 * close; a faster tier that lost is left to finish its handshake (never
 * joining) so that `onReasonUpdate` hears why it lost.
 * @param {Endpoints} ep
 * @param {RaceOptions} opts
 * @param {Greeting} greeting
 * @param {(reason: string) => void} onReasonUpdate
 * @returns {Promise<Established>}
 */
export function establish(ep, opts, greeting, onReasonUpdate) {
  const hasWT = typeof globalThis.WebTransport === 'function';
  const info = { certHashUsed: false, certHashExpired: false };
  /** @type {Attempt[]} */
  const attempts = [];

  /**
   * Starts one attempt. Its Hello waits while another attempt awaits its
   * Welcome: joining the room twice would flash a duplicate player for
   * everyone else.
   * @param {TransportKind} kind
   * @param {(stage: string) => void} [onStage]
   * @param {string | null} [fallback] why a faster tier is not used (§1.1)
   */
  const start = (kind, onStage, fallback) => {
    /** @type {Attempt | null} */
    let self = null;
    const beforeHello = () => {
      const busy = attempts.filter((a) => a !== self && a.stage === 'hello-sent');
      return busy.length ? Promise.all(busy.map((a) => a.promise.then(noop, noop))).then(noop) : null;
    };
    const factory = kind === 'webtransport' ? wtLinkFactory(ep, opts, info) : kind === 'websocket' ? wsLinkFactory(ep, opts, fallback) : httpLinkFactory(ep, opts, fallback);
    const timeoutMs = kind === 'webtransport' ? opts.webTransportTimeoutMs : kind === 'websocket' ? opts.webSocketTimeoutMs : opts.httpTimeoutMs;
    self = new Attempt(kind, factory, greeting, { timeoutMs, beforeHello, onStage });
    attempts.push(self);
    return self;
  };
  /**
   * @param {Joined} r
   * @param {TransportKind} transport
   * @param {string | null} fallbackReason
   * @returns {Established}
   */
  const result = (r, transport, fallbackReason) => ({
    ...r,
    transport,
    fallbackReason,
    attempts,
    certHashUsed: transport === 'webtransport' && info.certHashUsed,
  });
  /**
   * @param {TransportKind} kind
   * @param {unknown} err
   */
  const reasonFor = (kind, err) => {
    const base = reasonOf(err);
    return kind === 'webtransport' && info.certHashExpired ? `${base} (certificate hash expired; re-fetch /cert-hash)` : base;
  };

  if (opts.transport === 'websocket') {
    return start('websocket').promise.then((r) => result(r, 'websocket', 'WebSocket requested'));
  }
  if (opts.transport === 'http') {
    return start('http').promise.then((r) => result(r, 'http', 'HTTP streaming requested'));
  }
  if (opts.transport === 'webtransport') {
    if (!hasWT) return Promise.reject(new Error('WebTransport API unavailable'));
    return start('webtransport').promise.then(
      (r) => result(r, 'webtransport', null),
      (e) => {
        // Server errors (e.g. unauthorized) keep their code for the client.
        if (e instanceof RallyError) throw e;
        throw new Error(`WebTransport failed: ${reasonFor('webtransport', e)}`);
      },
    );
  }

  const memory = readMemory(ep);
  const plan = planAuto({
    hasWebTransport: hasWT,
    memory,
    now: Date.now(),
    reprobeAfterMs: opts.reprobeAfterMs,
    secureContext: globalThis.isSecureContext !== false,
  });
  /** @type {Record<TransportKind, string | null>} why each tier is not the one in use */
  const why = {
    webtransport: plan.webTransport ? null : plan.reason,
    websocket: plan.webSocket ? null : plan.reason,
    http: null,
  };
  /**
   * Why the faster tiers are not in use, for a session on `winner`.
   * @param {TransportKind} winner
   * @returns {string | null}
   */
  const fallbackFor = (winner) => {
    if (winner === 'webtransport') return null;
    if (winner === 'websocket') return why.webtransport;
    if (!plan.webSocket) return plan.reason;
    return `WebTransport: ${why.webtransport}; WebSocket: ${why.websocket}`;
  };

  return new Promise((resolve, reject) => {
    let settled = false;
    /** @type {Record<TransportKind, Attempt | null>} */
    const running = { webtransport: null, websocket: null, http: null };
    /** @type {Set<TransportKind>} */
    const failed = new Set();
    /** @type {ReturnType<typeof setTimeout>[]} */
    const timers = [];
    const settle = () => {
      settled = true;
      for (const t of timers) clearTimeout(t);
    };
    /**
     * Remembers the winner when a faster tier was tried and lost: a visit
     * that went straight to the remembered winner keeps the old date, so
     * the faster tiers are probed again when it expires, and a browser
     * without WebTransport says nothing about the network.
     * @param {TransportKind} winner
     */
    const remember = (winner) => {
      if (winner !== 'webtransport' && !TIERS.slice(0, TIERS.indexOf(winner)).some((k) => running[k])) return;
      const reason = fallbackFor(winner);
      writeMemory(ep, { winner, at: Date.now(), reason: reason === null ? null : unremembered(reason) });
    };
    const wtDone = () => !plan.webTransport || failed.has('webtransport');
    const wsDone = () => !plan.webSocket || failed.has('websocket');

    /** @param {TransportKind} kind */
    const begin = (kind) => {
      if (settled || running[kind]) return;
      /** @type {((stage: string) => void) | undefined} */
      let onStage;
      if (kind === 'webtransport') {
        // The head start counts from the moment WebTransport starts
        // connecting, after the /cert-hash fetch (itself capped at 1 s): a
        // slow fetch says nothing about UDP, and WebSocket still starts
        // within ~1.3 s.
        onStage = (stage) => {
          if (stage === 'cert-hash' || stage === 'no-cert-hash') timers.push(setTimeout(() => begin('websocket'), opts.headStartMs));
        };
      }
      /** @type {string | null} */
      let fallback = null;
      if (kind === 'websocket') {
        if (!plan.webTransport) fallback = hasWT ? 'remembered' : 'wt_unavailable';
        else fallback = failed.has('webtransport') ? 'wt_failed' : 'wt_timeout';
      } else if (kind === 'http') {
        fallback = !plan.webSocket ? 'remembered' : failed.has('websocket') ? 'ws_failed' : null;
      }
      const a = start(kind, onStage, fallback);
      running[kind] = a;
      if (kind === 'websocket') timers.push(setTimeout(() => begin('http'), opts.httpHeadStartMs));
      a.promise.then(
        (r) => won(kind, r),
        (e) => lost(kind, e),
      );
    };

    /** Starts whatever the failures so far call for, or gives up. */
    const advance = () => {
      if (settled) return;
      if (plan.webSocket && wtDone()) begin('websocket');
      if (wtDone() && wsDone()) begin('http');
      if (wtDone() && wsDone() && failed.has('http')) {
        settle();
        const parts = TIERS.map((k) => `${LABEL[k]}: ${why[k]}`);
        reject(new Error(parts.join('; ')));
      }
    };

    /**
     * @param {TransportKind} kind
     * @param {Joined} r
     */
    const won = (kind, r) => {
      if (settled) return;
      settle();
      const rank = TIERS.indexOf(kind);
      for (const k of TIERS) {
        const a = running[k];
        if (!a || a === r.attempt || failed.has(k)) continue;
        if (TIERS.indexOf(k) < rank && a.stage !== 'welcomed') {
          // A faster tier still trying: let it run to its own end to learn
          // why, but never let it join (Attempt checks `abandoned` before
          // Hello).
          const waited = Math.round(clockMs() - a.t0);
          why[k] = `${LABEL[kind]} connected first (${LABEL[k]} not ready ${waited} ms after it started)`;
          a.abandoned = true;
          a.timeline.abandoned = waited;
          a.promise.catch((e) => {
            if (reasonOf(e) === 'abandoned') return;
            why[k] = reasonFor(k, e);
            const reason = fallbackFor(kind);
            remember(kind);
            if (reason !== null) onReasonUpdate(reason);
          });
        } else {
          a.abandon();
        }
      }
      remember(kind);
      resolve(result(r, kind, fallbackFor(kind)));
    };

    /**
     * @param {TransportKind} kind
     * @param {unknown} e
     */
    const lost = (kind, e) => {
      failed.add(kind);
      if (settled) return;
      if (e instanceof RallyError) {
        // The server itself refused (room_full, unauthorized, ...): the
        // other transports would hear the same, so stop them and report it.
        settle();
        for (const a of attempts) if (a.stage !== 'failed') a.abandon();
        reject(e);
        return;
      }
      why[kind] = reasonFor(kind, e);
      advance();
    };

    if (plan.webTransport) begin('webtransport');
    advance();
  });
}
