// @ts-check
// How a Rally session gets opened: endpoints from the server's origin, the
// pinned certificate digests (PROTOCOL.md §10), join tokens (§9), the
// handshake on one link (Hello or Resume, then Welcome) and the transport
// race (happy eyeballs) with its remembered winner. The client object that
// lives on the winning link is in rally.js.

import { ErrorCode, RallyError } from './codec.js';
import { WebSocketLink, WebTransportLink, clockMs, noop } from './link.js';

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
 * @property {string} certHashUrl
 * @property {boolean} useCertHash
 */
/** @typedef {{ winner: TransportKind, at: number, reason?: string | null }} TransportMemory */
/**
 * What the race needs from the client's options.
 * @typedef {object} RaceOptions
 * @property {TransportChoice} transport
 * @property {number} headStartMs
 * @property {number} webTransportTimeoutMs
 * @property {number} webSocketTimeoutMs
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
    certHashUrl: `${u.origin}/cert-hash`,
    // A page served over https uses a certificate the browser already
    // trusts, so WebTransport needs no pinned hash.
    useCertHash: !secure,
  };
}

/**
 * Which transports an 'auto' connection starts with, given what is
 * remembered for this server (or null), the time, and whether the browser
 * has WebTransport. Pure: the race itself lives in establish().
 * @param {{ hasWebTransport: boolean, memory: TransportMemory | null, now: number, reprobeAfterMs: number, secureContext?: boolean }} args
 * @returns {{ webTransport: boolean, reason: string | null }}
 */
export function planAuto({ hasWebTransport, memory, now, reprobeAfterMs, secureContext = true }) {
  if (!hasWebTransport) {
    return {
      webTransport: false,
      reason: secureContext ? 'WebTransport API unavailable' : 'WebTransport API unavailable (page is not a secure context)',
    };
  }
  if (memory && memory.winner === 'websocket' && typeof memory.at === 'number' && now - memory.at >= 0 && now - memory.at < reprobeAfterMs) {
    return { webTransport: false, reason: `remembered: ${memory.reason || 'WebSocket won last time'}` };
  }
  return { webTransport: true, reason: null };
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
   * @param {{ timeoutMs: number, beforeHello?: () => Promise<void> | null, onStage?: (stage: string) => void }} opts
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
    if (beforeHello) await beforeHello();
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
    else link.close(this.kind === 'websocket' ? 1000 : 0, 'bye');
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

/**
 * Opens one Rally session per `opts.transport`. 'auto' races WebTransport
 * against WebSocket (happy eyeballs): WebTransport starts first, WebSocket
 * after a head start, the first to receive Welcome wins, the loser closes.
 * `onReasonUpdate` hears the late verdict of a WebTransport probe that lost.
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
  /** @param {(stage: string) => void} [onStage] */
  const wtAttempt = (onStage) => {
    const a = new Attempt('webtransport', wtLinkFactory(ep, opts, info), greeting, { timeoutMs: opts.webTransportTimeoutMs, onStage });
    attempts.push(a);
    return a;
  };
  /**
   * @param {(() => Promise<void> | null) | undefined} [beforeHello]
   * @param {string | null} [fallback]
   */
  const wsAttempt = (beforeHello, fallback) => {
    const a = new Attempt('websocket', wsLinkFactory(ep, opts, fallback), greeting, { timeoutMs: opts.webSocketTimeoutMs, beforeHello });
    attempts.push(a);
    return a;
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
  /** @param {unknown} err */
  const wtReason = (err) => {
    const base = reasonOf(err);
    return info.certHashExpired ? `${base} (certificate hash expired; re-fetch /cert-hash)` : base;
  };

  if (opts.transport === 'websocket') {
    return wsAttempt().promise.then((r) => result(r, 'websocket', 'WebSocket requested'));
  }
  if (opts.transport === 'webtransport') {
    if (!hasWT) return Promise.reject(new Error('WebTransport API unavailable'));
    return wtAttempt().promise.then(
      (r) => result(r, 'webtransport', null),
      (e) => {
        // Server errors (e.g. unauthorized) keep their code for the client.
        if (e instanceof RallyError) throw e;
        throw new Error(`WebTransport failed: ${wtReason(e)}`);
      },
    );
  }

  const plan = planAuto({
    hasWebTransport: hasWT,
    memory: readMemory(ep),
    now: Date.now(),
    reprobeAfterMs: opts.reprobeAfterMs,
    secureContext: globalThis.isSecureContext !== false,
  });
  if (!plan.webTransport) {
    return wsAttempt(undefined, hasWT ? 'remembered' : 'wt_unavailable').promise.then((r) => result(r, 'websocket', plan.reason));
  }

  return new Promise((resolve, reject) => {
    let settled = false;
    /** @type {unknown} */
    let wtError = null;
    /** @type {unknown} */
    let wsError = null;
    /** @type {Attempt | null} */
    let ws = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let headStart = null;
    const bothFailed = () => {
      settled = true;
      reject(new Error(`WebTransport: ${wtReason(wtError)}; WebSocket: ${reasonOf(wsError)}`));
    };
    /**
     * The server itself refused (room_full, unauthorized, ...): the other
     * transport would hear the same, so stop it and report this.
     * @param {RallyError} e
     */
    const refused = (e) => {
      settled = true;
      if (headStart !== null) clearTimeout(headStart);
      for (const a of attempts) if (a.stage !== 'failed') a.abandon();
      reject(e);
    };
    // The head start counts from the moment WebTransport starts connecting,
    // after the /cert-hash fetch (itself capped at 1 s): a slow fetch says
    // nothing about UDP, and WebSocket still starts within ~1.3 s.
    const wt = wtAttempt((stage) => {
      if ((stage === 'cert-hash' || stage === 'no-cert-hash') && headStart === null && !ws) {
        headStart = setTimeout(startWebSocket, opts.headStartMs);
      }
    });

    function startWebSocket() {
      if (headStart !== null) clearTimeout(headStart);
      if (ws || settled) return;
      // If WebTransport is already past its transport handshake and waiting
      // for Welcome, hold the WebSocket Hello until it settles: joining the
      // room twice would flash a duplicate player for everyone else.
      ws = wsAttempt(
        () => (wt.stage === 'hello-sent' ? wt.promise.then(noop, noop) : null),
        wt.stage === 'failed' ? 'wt_failed' : 'wt_timeout',
      );
      ws.promise.then(
        (r) => {
          if (settled) return;
          settled = true;
          let reason = wtError ? wtReason(wtError) : null;
          if (!reason) {
            reason = `WebSocket connected first (WebTransport not ready ${opts.headStartMs} ms after it started)`;
            // Let the WebTransport probe run to its own end to learn why,
            // but never let it join (Attempt checks `abandoned` before Hello).
            wt.abandoned = true;
            wt.timeline.abandoned = Math.round(clockMs() - wt.t0);
            wt.promise.catch((e) => {
              const why = reasonOf(e) === 'abandoned' ? null : wtReason(e);
              if (why) {
                writeMemory(ep, { winner: 'websocket', at: Date.now(), reason: why });
                onReasonUpdate(why);
              }
            });
          }
          writeMemory(ep, { winner: 'websocket', at: Date.now(), reason });
          resolve(result(r, 'websocket', reason));
        },
        (e) => {
          wsError = e;
          if (settled) return;
          if (e instanceof RallyError) refused(e);
          else if (wt.stage === 'failed') bothFailed();
        },
      );
    }

    wt.promise.then(
      (r) => {
        if (settled) return;
        settled = true;
        if (headStart !== null) clearTimeout(headStart);
        if (ws) ws.abandon();
        writeMemory(ep, { winner: 'webtransport', at: Date.now(), reason: null });
        resolve(result(r, 'webtransport', null));
      },
      (e) => {
        wtError = e;
        if (settled) return;
        if (e instanceof RallyError) refused(e);
        else if (!ws) startWebSocket();
        else if (wsError) bothFailed();
      },
    );
  });
}
