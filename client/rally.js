// Rally browser client: a dependency-free ES module speaking PROTOCOL.md v1
// over WebTransport (HTTP/3) with a WebSocket fallback. Import this file;
// it loads its two siblings by relative path:
//
//   codec.js  pure wire codec and framing (re-exported from here)
//   link.js   thin transport links that only move bytes
//   rally.js  connection policy (happy eyeballs, remembered winner,
//             reconnect backoff) and the client object games use
//
// The codec and the small policy helpers are exported so they can be tested
// without a browser.

import {
  PROTOCOL_VERSION, MsgType, Buttons, ERROR_NAMES, ErrorCode, NO_RETRY_CODES, MAX_CLIENT_MESSAGE,
  INPUT_REDUNDANCY, MAX_ROOM_BYTES, MAX_NAME_BYTES, DecodeError, RallyError, checkRoom,
  checkName, truncateUtf8, encodeHello, encodeResume, encodeInput, encodePing, encodeLeave, encodeFrame,
  decodeServerMessage, FrameDecoder,
} from './codec.js';
import { WebSocketLink, WebTransportLink, clockMs, nowUs, noop } from './link.js';

export {
  PROTOCOL_VERSION, MsgType, Buttons, ERROR_NAMES, ErrorCode, NO_RETRY_CODES, MAX_CLIENT_MESSAGE,
  INPUT_REDUNDANCY, MAX_ROOM_BYTES, MAX_NAME_BYTES, DecodeError, RallyError, checkRoom,
  checkName, truncateUtf8, encodeHello, encodeResume, encodeInput, encodePing, encodeLeave, encodeFrame,
  decodeServerMessage, FrameDecoder,
};

/** Timing defaults; every one can be overridden in connect() options. */
export const DEFAULTS = Object.freeze({
  /** Head start WebTransport gets before WebSocket is also tried. */
  headStartMs: 300,
  /** Give up on a WebTransport attempt after this long (handshake included). */
  webTransportTimeoutMs: 2500,
  /** Give up on a WebSocket attempt after this long (handshake included). */
  webSocketTimeoutMs: 10000,
  /** How long a remembered "WebSocket won" skips WebTransport before re-probing. */
  reprobeAfterMs: 10 * 60 * 1000,
  pingIntervalMs: 250,
  reconnectBaseMs: 500,
  reconnectMaxMs: 10000,
  /** Inputs kept for prediction replay (and redundancy). */
  inputHistory: 256,
});

// ---------------------------------------------------------------------------
// Small policies (pure)
// ---------------------------------------------------------------------------

/** Parses a 64-digit hex SHA-256 into 32 bytes, or returns null. */
export function hexToBytes(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) return null;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Endpoints derived from the server's http(s) origin (see connect()). */
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
 */
export function planAuto({ hasWebTransport, memory, now, reprobeAfterMs = DEFAULTS.reprobeAfterMs, secureContext = true }) {
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

/** Delay before reconnect attempt `attempt` (0-based): capped exponential, jittered in [50%, 100%]. */
export function backoffDelay(attempt, { baseMs = DEFAULTS.reconnectBaseMs, maxMs = DEFAULTS.reconnectMaxMs, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

/** Whether a session that ended with this Rally error code may be retried. */
export function mayRetry(code) {
  return !NO_RETRY_CODES.includes(code);
}

/** Error code carried by a close code 4001..4999, else null (PROTOCOL.md §6). */
export function codeFromClose(closeCode) {
  return Number.isInteger(closeCode) && closeCode > 4000 && closeCode < 5000 ? closeCode - 4000 : null;
}

/**
 * Smoothed round-trip time and jitter. RTT as TCP's SRTT (RFC 6298, gain
 * 1/8); jitter as RTP's interarrival jitter (RFC 3550 §6.4.1): the mean
 * difference between consecutive samples, gain 1/16.
 */
export class RttEstimator {
  constructor() {
    this.rtt = null;
    this.jitter = 0;
    this.last = null;
    this.samples = 0;
  }
  sample(ms) {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    if (this.rtt === null) {
      this.rtt = ms;
    } else {
      this.rtt += (ms - this.rtt) / 8;
      this.jitter += (Math.abs(ms - this.last) - this.jitter) / 16;
    }
    this.last = ms;
    this.samples++;
  }
}

// ---------------------------------------------------------------------------
// Handshake and the connection race
// ---------------------------------------------------------------------------

function withTimeout(promise, ms, message) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/**
 * The digests a /cert-hash body tells a browser to accept (PROTOCOL.md §10):
 * every sha-256 entry of `hashes` (the current certificate and, during a
 * renewal, the next one), else the top-level digest. Pure.
 */
export function certHashesFromJson(body) {
  if (!body || typeof body !== 'object') return [];
  const entries = Array.isArray(body.hashes) && body.hashes.length ? body.hashes : [body];
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

/** Appends `?token=` (PROTOCOL.md §9) to a session URL. */
export function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set('token', token);
  return u.toString();
}

async function resolveToken(token) {
  if (typeof token === 'function') return (await token()) || null;
  return token || null;
}

async function fetchCertHash(url, timeoutMs) {
  const ctl = typeof AbortController === 'function' ? new AbortController() : null;
  const t = setTimeout(() => ctl && ctl.abort(), timeoutMs);
  try {
    const res = await fetch(url, { cache: 'no-store', signal: ctl ? ctl.signal : undefined });
    if (!res.ok) return null;
    const hashes = certHashesFromJson(await res.json());
    return hashes.length ? hashes : null;
  } catch {
    return null;
  } finally {
    clearTimeout(t);
  }
}

/**
 * One handshake attempt over one link: open it, (maybe) wait for `gate`,
 * send Hello, wait for Welcome. Resolves with {link, welcome, backlog};
 * messages after Welcome queue in `backlog` until the client takes over.
 */
class Attempt {
  constructor(kind, makeLink, hello, { timeoutMs, beforeHello, onStage = noop }) {
    this.kind = kind;
    this.stage = 'starting'; // starting → open → hello-sent → welcomed | failed
    this.t0 = clockMs();
    /** Stage → ms since the attempt started, plus `error` when it failed. */
    this.timeline = {};
    this.onStage = onStage;
    this.link = null;
    this.abandoned = false;
    this.backlog = [];
    this.closeInfo = null;
    this.promise = withTimeout(this._run(makeLink, hello, beforeHello), timeoutMs, 'timeout').then(
      (r) => {
        if (this.abandoned) {
          this._discard();
          throw new Error('abandoned');
        }
        return r;
      },
      (err) => {
        this._stage('failed');
        this.timeline.error = reasonOf(err);
        // A timed-out run may still be in flight: make sure it never joins.
        this.abandoned = true;
        this._discard();
        throw err;
      },
    );
    this.promise.catch(noop);
  }

  async _run(makeLink, hello, beforeHello) {
    const link = await makeLink((stage) => this._stage(stage));
    this.link = link;
    if (this.abandoned) throw new Error('abandoned');
    // `hello` is the encoded Hello, or {hello, resume} to try Resume first.
    const greeting = hello instanceof Uint8Array ? { hello, resume: null } : hello;
    this.resumed = false;
    const welcomed = new Promise((resolve, reject) => {
      link.onMessage = (msg, channel) => {
        if (this.stage === 'welcomed') {
          this.backlog.push([msg, channel]);
        } else if (msg.type === 'welcome') {
          this._stage('welcomed');
          this.resumed = greeting.resume !== null && !this.resumeRefused;
          resolve(msg);
        } else if (msg.type === 'error' && msg.code === ErrorCode.RESUME_FAILED && greeting.resume && !this.resumeRefused) {
          // Not fatal (PROTOCOL.md §7.1): the player is gone; join afresh.
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
    this._stage('open');
    if (beforeHello) await beforeHello();
    if (this.abandoned) throw new Error('abandoned');
    link.sendReliable(greeting.resume || greeting.hello);
    this._stage('hello-sent');
    const welcome = await welcomed;
    return { link, welcome, backlog: this.backlog, attempt: this, resumed: this.resumed };
  }

  _stage(stage) {
    if (['open', 'hello-sent', 'welcomed', 'failed'].includes(stage)) this.stage = stage;
    this.timeline[stage] = Math.round(clockMs() - this.t0);
    this.onStage(stage);
  }

  /** What happened, for diagnostics: {transport, stages: {stage: ms}, error?}. */
  report() {
    return { transport: this.kind, ...this.timeline };
  }

  /** Stops this attempt: a joined loser leaves, anything else just closes. */
  abandon() {
    this.abandoned = true;
    this.timeline.abandoned = Math.round(clockMs() - this.t0);
    this._discard();
  }

  _discard() {
    const link = this.link;
    if (!link || link.closed) return;
    link.onMessage = noop;
    if (this.stage === 'welcomed') link.leave();
    else link.close(this.kind === 'websocket' ? 1000 : 0, 'bye');
  }
}

function wtLinkFactory(ep, opts, info) {
  return async (mark) => {
    let certHashes = null;
    const token = await resolveToken(opts.token);
    if (opts.certificateHash) {
      const given = [].concat(opts.certificateHash).map(hexToBytes).filter(Boolean);
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

function wsLinkFactory(ep, opts) {
  return async () => new WebSocketLink(withToken(ep.webSocketUrl, await resolveToken(opts.token)));
}

// `Attempt._run` needs the link before open() so that it can attach handlers;
// the factories return unopened links and Attempt opens them.

function reasonOf(err) {
  if (!err) return 'unknown error';
  if (err instanceof RallyError) return err.message;
  return err.message || String(err);
}

function memoryKey(ep) {
  return `rally.transport:${ep.webSocketUrl}|${ep.webTransportUrl}`;
}

function readMemory(ep) {
  try {
    const raw = globalThis.localStorage?.getItem(memoryKey(ep));
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function writeMemory(ep, value) {
  try {
    globalThis.localStorage?.setItem(memoryKey(ep), JSON.stringify(value));
  } catch {
    // Storage may be disabled; the race simply runs every time.
  }
}

/**
 * Opens one Rally session per `opts.transport`. 'auto' races WebTransport
 * against WebSocket (happy eyeballs): WebTransport starts first, WebSocket
 * after a head start, the first to receive Welcome wins, the loser closes.
 * Resolves with {link, welcome, backlog, transport, fallbackReason, certHashUsed}.
 */
function establish(ep, opts, hello, onReasonUpdate) {
  const hasWT = typeof globalThis.WebTransport === 'function';
  const info = { certHashUsed: false, certHashExpired: false };
  const attempts = [];
  const track = (a) => {
    attempts.push(a);
    return a;
  };
  const wtAttempt = (onStage) =>
    track(new Attempt('webtransport', wtLinkFactory(ep, opts, info), hello, { timeoutMs: opts.webTransportTimeoutMs, onStage }));
  const wsAttempt = (beforeHello) => track(new Attempt('websocket', wsLinkFactory(ep, opts), hello, { timeoutMs: opts.webSocketTimeoutMs, beforeHello }));
  const result = (r, transport, fallbackReason) => ({
    ...r,
    transport,
    fallbackReason,
    attempts,
    certHashUsed: transport === 'webtransport' && info.certHashUsed,
  });
  const wtReason = (err) => {
    const base = reasonOf(err);
    return info.certHashExpired ? `${base} (certificate hash expired; re-fetch /cert-hash)` : base;
  };

  if (opts.transport === 'websocket') {
    return wsAttempt().promise.then((r) => result(r, 'websocket', 'WebSocket requested'));
  }
  if (opts.transport === 'webtransport') {
    if (!hasWT) return Promise.reject(new Error('WebTransport API unavailable'));
    return wtAttempt().promise.then((r) => result(r, 'webtransport', null), (e) => {
      throw new Error(`WebTransport failed: ${wtReason(e)}`);
    });
  }

  const plan = planAuto({
    hasWebTransport: hasWT,
    memory: readMemory(ep),
    now: Date.now(),
    reprobeAfterMs: opts.reprobeAfterMs,
    secureContext: globalThis.isSecureContext !== false,
  });
  if (!plan.webTransport) {
    return wsAttempt().promise.then((r) => result(r, 'websocket', plan.reason));
  }

  return new Promise((resolve, reject) => {
    let settled = false;
    let wtError = null;
    let wsError = null;
    let ws = null;
    let headStart = null;
    // The head start counts from the moment WebTransport starts connecting,
    // after the /cert-hash fetch (itself capped at 1 s): a slow fetch says
    // nothing about UDP, and WebSocket still starts within ~1.3 s.
    const wt = wtAttempt((stage) => {
      if ((stage === 'cert-hash' || stage === 'no-cert-hash') && headStart === null && !ws) {
        headStart = setTimeout(startWebSocket, opts.headStartMs);
      }
    });

    function startWebSocket() {
      clearTimeout(headStart);
      if (ws || settled) return;
      // If WebTransport is already past its transport handshake and waiting
      // for Welcome, hold the WebSocket Hello until it settles: joining the
      // room twice would flash a duplicate player for everyone else.
      ws = wsAttempt(() => (wt.stage === 'hello-sent' ? wt.promise.then(noop, noop) : null));
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
              const why = e.message === 'abandoned' ? null : wtReason(e);
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
          if (wt.stage === 'failed' && !settled) {
            settled = true;
            reject(new Error(`WebTransport: ${wtReason(wtError)}; WebSocket: ${reasonOf(wsError)}`));
          }
        },
      );
    }

    wt.promise.then(
      (r) => {
        if (settled) return;
        settled = true;
        clearTimeout(headStart);
        if (ws) ws.abandon();
        writeMemory(ep, { winner: 'webtransport', at: Date.now(), reason: null });
        resolve(result(r, 'webtransport', null));
      },
      (e) => {
        wtError = e;
        if (settled) return;
        if (!ws) startWebSocket();
        else if (wsError) {
          settled = true;
          reject(new Error(`WebTransport: ${wtReason(wtError)}; WebSocket: ${reasonOf(wsError)}`));
        }
      },
    );
  });
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * A Rally client: one session at a time, reconnected after unexpected drops.
 * Create it with connect().
 */
export class RallyClient {
  constructor(url, options) {
    const opts = { ...DEFAULTS, transport: 'auto', ...options };
    if (!['auto', 'webtransport', 'websocket'].includes(opts.transport)) {
      throw new TypeError("transport must be 'auto', 'webtransport' or 'websocket'");
    }
    this.options = opts;
    this.endpoints = endpoints(url || globalThis.location?.origin, opts.webTransportUrl);
    this.hello = encodeHello(opts.room, opts.name);
    this.onSnapshot = opts.onSnapshot || noop;
    this.onEvent = opts.onEvent || noop;
    this.onStatus = opts.onStatus || noop;

    /** 'connecting' | 'connected' | 'reconnecting' | 'closed' */
    this.state = 'connecting';
    this.transport = null;
    this.fallbackReason = null;
    this.certHashUsed = false;
    this.welcome = null;
    this.playerId = null;
    this.lastError = null;
    this.closeReason = null;
    this.connectedAt = null;
    this.sessions = 0;

    this._link = null;
    this._attempts = [];
    this._closing = false;
    this._noRetry = false;
    this._reconnectAttempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._rtt = new RttEstimator();
    /** Resume state (PROTOCOL.md §7.1): token from Welcome, last event number. */
    this._resumeToken = null;
    this._reliableSeq = 0;
    /** True when the current session took back the player after a drop. */
    this.resumed = false;
    this._resetSession();
  }

  /** Smoothed round-trip time in ms (null before the first Pong). */
  get rtt() {
    return this._rtt.rtt;
  }

  /** RTT jitter in ms (RFC 3550 style). */
  get jitter() {
    return this._rtt.jitter;
  }

  /**
   * How the current session was chosen: one entry per transport tried, with
   * ms from its start to each stage reached (open, hello-sent, welcomed,
   * failed) and the error of a failed one. Later stages of an abandoned
   * probe appear as it runs on.
   */
  get attempts() {
    return (this._attempts || []).map((a) => a.report());
  }

  /** Sequence number of the last input sent in this session (0: none). */
  get inputSeq() {
    return this._seq;
  }

  _resetSession() {
    this._seq = 0;
    this._inputs = []; // [{seq, buttons}], oldest first
    this._lastTick = null;
    this.lastSnapshot = null;
    this.stats = {
      snapshotsReceived: 0,
      snapshotsApplied: 0,
      snapshotsStale: 0,
      snapshotsLost: 0,
      datagramSnapshots: 0,
      streamSnapshots: 0,
      websocketSnapshots: 0,
      inputsSent: 0,
      pingsSent: 0,
      pongs: 0,
    };
  }

  _status(state, extra = {}) {
    this.state = state;
    try {
      this.onStatus({
        state,
        transport: this.transport,
        fallbackReason: this.fallbackReason,
        welcome: this.welcome,
        client: this,
        ...extra,
      });
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  async _connectOnce() {
    let adopted = null;
    // After a drop, the first two attempts resume the player on the transport
    // it had (one Resume at a time: two racing transports would take the
    // player from each other); later attempts join afresh with `auto` rules.
    const resuming = this._resumeToken !== null && this._reconnectAttempt > 0 && this._reconnectAttempt <= 2;
    const options = resuming && this.transport ? { ...this.options, transport: this.transport } : this.options;
    const greeting = resuming
      ? { hello: this.hello, resume: encodeResume(this._resumeToken, this._reliableSeq) }
      : this.hello;
    const r = await establish(this.endpoints, options, greeting, (reason) => {
      // A late verdict of the abandoned WebTransport probe (e.g. 'timeout').
      if (adopted !== null && this._link === adopted) {
        this.fallbackReason = reason;
        this._status(this.state, { fallbackUpdated: true });
      }
    });
    if (this._closing) {
      r.attempt.abandoned = true;
      r.link.leave();
      throw new Error('closed');
    }
    this._adopt(r);
    adopted = r.link;
    return this;
  }

  _adopt(r) {
    // A resumed player keeps its input numbering: the server's ack for it
    // carries on from before the drop.
    const resumed = Boolean(r.resumed ?? r.attempt?.resumed);
    if (!resumed) this._resetSession();
    this.resumed = resumed;
    this._resumeToken = r.welcome.resumeToken;
    this._reliableSeq = r.welcome.reliableSeq;
    this._link = r.link;
    this.transport = r.transport;
    this.fallbackReason = r.fallbackReason;
    this.certHashUsed = r.certHashUsed;
    this._attempts = r.attempts;
    this.welcome = r.welcome;
    this.playerId = r.welcome.playerId;
    this.connectedAt = typeof performance !== 'undefined' ? performance.now() : Date.now();
    this.sessions++;
    this._reconnectAttempt = 0;
    this._lastTick = r.welcome.tick;
    const link = r.link;
    link.onMessage = (msg, channel) => this._onMessage(msg, channel);
    link.onClose = (info) => this._onLinkClose(link, info);
    this._startPing();
    this._status('connected');
    for (const [msg, channel] of r.backlog) this._onMessage(msg, channel);
    r.backlog.length = 0;
    if (r.attempt.closeInfo) this._onLinkClose(link, r.attempt.closeInfo);
  }

  _onMessage(msg, channel) {
    switch (msg.type) {
      case 'snapshot':
        this._onSnapshotMsg(msg, channel);
        break;
      case 'pong':
        this.stats.pongs++;
        this._rtt.sample((nowUs() - msg.clientTimeUs) / 1000);
        break;
      case 'error':
        this.lastError = msg;
        if (!this._mayRetry(msg.code)) this._noRetry = true;
        this.onEvent(msg);
        break;
      case 'welcome':
        // Only one Welcome per session; a second one is ignored.
        break;
      case 'player_joined':
      case 'player_left':
        // Numbered reliable events (PROTOCOL.md §7.1).
        this._reliableSeq = (this._reliableSeq + 1) >>> 0;
        this.onEvent(msg);
        break;
      default:
        this.onEvent(msg);
    }
  }

  _onSnapshotMsg(s, channel) {
    const st = this.stats;
    st.snapshotsReceived++;
    if (channel === 'datagram') st.datagramSnapshots++;
    else if (channel === 'stream') st.streamSnapshots++;
    else st.websocketSnapshots++;
    // Latest-only: anything not newer than what was applied is stale
    // (datagrams reorder). Tick arithmetic is modulo 2^32.
    if (this.lastSnapshot !== null) {
      const ahead = (s.tick - this._lastTick) >>> 0;
      if (ahead === 0 || ahead >= 0x80000000) {
        st.snapshotsStale++;
        return;
      }
      const every = this.welcome?.snapshotEvery || 1;
      const missed = Math.round(ahead / every) - 1;
      if (missed > 0) st.snapshotsLost += missed;
    }
    this._lastTick = s.tick;
    this.lastSnapshot = s;
    st.snapshotsApplied++;
    this.onSnapshot(s, { channel });
  }

  _startPing() {
    this._stopPing();
    const ping = () => {
      if (!this._link || this._link.closed) return;
      this._link.sendUnreliable(encodePing(nowUs()));
      this.stats.pingsSent++;
    };
    ping();
    this._pingTimer = setInterval(ping, this.options.pingIntervalMs);
  }

  _stopPing() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /**
   * Whether a new session could succeed after error `code`: not after those a
   * new Hello would repeat (NO_RETRY_CODES), nor after token_expired unless
   * `token` is a function that can mint a fresh one.
   */
  _mayRetry(code) {
    if (code === 15) return typeof this.options.token === 'function';
    return mayRetry(code);
  }

  _onLinkClose(link, info) {
    if (link !== this._link) return;
    this._link = null;
    this._stopPing();
    const code = codeFromClose(info.code);
    if (code && !this._mayRetry(code)) this._noRetry = true;
    this.closeReason = info.reason || null;
    if (this._closing) return;
    if (this._noRetry || this.options.reconnect === false) {
      this._status('closed', { reason: this.lastError ? `${this.lastError.codeName}: ${this.lastError.reason}` : info.reason });
      return;
    }
    this._scheduleReconnect(info.reason || 'connection lost');
  }

  _scheduleReconnect(reason) {
    const delayMs = backoffDelay(this._reconnectAttempt, {
      baseMs: this.options.reconnectBaseMs,
      maxMs: this.options.reconnectMaxMs,
    });
    this._reconnectAttempt++;
    this._status('reconnecting', { attempt: this._reconnectAttempt, delayMs, reason });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this._closing) return;
      this._connectOnce().catch((e) => {
        if (this._closing) return;
        if (e instanceof RallyError && !this._mayRetry(e.code)) {
          this.lastError = { type: 'error', code: e.code, codeName: e.codeName, reason: e.reason };
          this._status('closed', { reason: e.message });
          return;
        }
        this._scheduleReconnect(reasonOf(e));
      });
    }, delayMs);
  }

  /**
   * Sends this frame's buttons as input number `inputSeq + 1`, together with
   * the previous inputs up to INPUT_REDUNDANCY in all, newest first. Returns
   * the new sequence number, or 0 when there is no session to send on.
   */
  sendInput(buttons) {
    const b = buttons & Buttons.ALL;
    if (!this._link || this._link.closed) return 0;
    const seq = ++this._seq;
    this._inputs.push({ seq, buttons: b });
    if (this._inputs.length > this.options.inputHistory) this._inputs.splice(0, this._inputs.length - this.options.inputHistory);
    const n = Math.min(INPUT_REDUNDANCY, this._inputs.length, seq);
    const carried = new Array(n);
    for (let i = 0; i < n; i++) carried[i] = this._inputs[this._inputs.length - 1 - i].buttons;
    this._link.sendUnreliable(encodeInput(seq, carried));
    this.stats.inputsSent++;
    return seq;
  }

  /** Inputs sent in this session with seq > `ackSeq`, oldest first, for prediction. */
  unackedInputs(ackSeq) {
    return this._inputs.filter((i) => i.seq > ackSeq);
  }

  /** Leaves the room and closes the session; no reconnect follows. */
  async close() {
    if (this._closing) return;
    this._closing = true;
    if (this._reconnectTimer !== null) clearTimeout(this._reconnectTimer);
    this._stopPing();
    const link = this._link;
    this._link = null;
    if (link) await link.leave();
    this._status('closed', { reason: 'closed by client' });
  }
}

/**
 * Connects to the Rally server at `url` (its http(s) origin). Resolves with
 * the client once the first session is welcomed; rejects when neither
 * transport could join. After that, drops reconnect with backoff.
 */
export async function connect(url, options = {}) {
  const client = new RallyClient(url, options);
  client._status('connecting');
  try {
    return await client._connectOnce();
  } catch (e) {
    client._closing = true;
    client.lastError = e instanceof RallyError ? { type: 'error', code: e.code, codeName: e.codeName, reason: e.reason } : null;
    client._status('closed', { reason: reasonOf(e) });
    throw e;
  }
}

export default connect;
