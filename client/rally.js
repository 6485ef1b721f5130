// @ts-check
// Rally browser client: a dependency-free ES module speaking PROTOCOL.md v2
// over WebTransport (HTTP/3), falling back to WebSocket and then to HTTP
// streaming (§11), for any game: the game's bytes go in and come out
// untouched. Import this file; it loads
// its siblings by relative path:
//
//   wire.js           the message-type table, generated from the server's
//   codec.js          pure wire codec and framing
//   link.js           thin transport links that only move bytes
//   race.js           handshake, transport race, remembered winner
//   outbox.js         numbering and replay of reliable App messages
//   interpolation.js  snapshot buffer with an adaptive delay (pure)
//   prediction.js     replay of unacknowledged inputs (pure)
//   policy.js         timing defaults, backoff, retry, RTT (pure)
//   deltas.js         snapshot deltas: the codec, the states kept (pure)
//   rally.js          the client object games use, reconnect and resume
//
// Types: rally.d.ts, checked against this code by tests/browser/run.sh.

import { PROTOCOL_VERSION, MsgType, NUMBERED, ERROR_NAMES } from './wire.js';
import {
  ErrorCode, NO_RETRY_CODES, INPUT_REDUNDANCY, MAX_INPUTS_PER_MESSAGE, MAX_ROOM_BYTES, MAX_NAME_BYTES,
  DecodeError, RallyError, RedirectError, checkRoom, checkName, truncateUtf8, encodeHello, encodeInput, inputMessageSize,
  encodeInputAck, encodePing, encodeLeave, encodeResume, encodeApp, encodeFrame, decodeServerMessage, isNumbered, FrameDecoder,
} from './codec.js';
import { States, applyRallyDelta } from './deltas.js';
import { nowUs, clockMs } from './link.js';
import { establish, endpoints, locateRoom, planAuto, certHashesFromJson, hexToBytes, withToken, codeFromClose, reasonOf } from './race.js';
import { AppOutbox, APP_REPLAY_KEEP } from './outbox.js';
import { SnapshotBuffer, lerp, lerpAngle } from './interpolation.js';
import { predict } from './prediction.js';
import { DEFAULTS, backoffDelay, mayRetry, RttEstimator } from './policy.js';

export {
  PROTOCOL_VERSION, MsgType, NUMBERED, ERROR_NAMES,
  ErrorCode, NO_RETRY_CODES, INPUT_REDUNDANCY, MAX_INPUTS_PER_MESSAGE, MAX_ROOM_BYTES, MAX_NAME_BYTES,
  DecodeError, RallyError, RedirectError, checkRoom, checkName, truncateUtf8, encodeHello, encodeInput, inputMessageSize,
  encodeInputAck, encodePing, encodeLeave, encodeResume, encodeApp, encodeFrame, decodeServerMessage, isNumbered, FrameDecoder,
  applyRallyDelta, endpoints, planAuto, certHashesFromJson, hexToBytes, withToken, codeFromClose,
  AppOutbox, APP_REPLAY_KEEP, SnapshotBuffer, lerp, lerpAngle, predict,
  DEFAULTS, backoffDelay, mayRetry, RttEstimator,
};

// Public types (rally.d.ts lists the same); internals are named inline.
/** @typedef {import('./codec.js').ErrorName} ErrorName */
/** @typedef {import('./codec.js').Welcome} Welcome */
/** @typedef {import('./codec.js').PlayerJoined} PlayerJoined */
/** @typedef {import('./codec.js').PlayerLeft} PlayerLeft */
/** @typedef {import('./codec.js').SnapshotMsg} SnapshotMsg */
/** @typedef {import('./codec.js').SnapshotDeltaMsg} SnapshotDeltaMsg */
/** @typedef {import('./codec.js').Pong} Pong */
/** @typedef {import('./codec.js').ErrorMsg} ErrorMsg */
/** @typedef {import('./codec.js').AppMsg} AppMsg */
/** @typedef {import('./codec.js').AppUnreliableMsg} AppUnreliableMsg */
/** @typedef {import('./codec.js').RedirectMsg} RedirectMsg */
/** @typedef {import('./codec.js').ServerMessage} ServerMessage */
/** @typedef {import('./link.js').Channel} Channel */
/** @typedef {import('./link.js').TransportKind} TransportKind */
/** @typedef {import('./race.js').TransportChoice} TransportChoice */
/** @typedef {import('./race.js').AttemptReport} AttemptReport */
/** @typedef {import('./race.js').TokenSource} TokenSource */
/** @typedef {import('./race.js').Endpoints} Endpoints */
/** @typedef {import('./race.js').TransportMemory} TransportMemory */
/** @typedef {import('./outbox.js').Numbered} Numbered */
/** @typedef {import('./interpolation.js').SnapshotBufferOptions} SnapshotBufferOptions */
/**
 * @template S
 * @typedef {import('./interpolation.js').Sample<S>} Sample
 */
/** @typedef {import('./prediction.js').SentInput} SentInput */
/** @typedef {import('./policy.js').Timing} Timing */
/** @typedef {import('./deltas.js').ApplyDelta} ApplyDelta */

/** A snapshot as onSnapshot gets it: the header, and the game's bytes. */
/** @typedef {{ tick: number, ackSeq: number, serverTimeUs: number, payload: Uint8Array }} Snapshot */
/** What onEvent receives: roster changes and server errors. */
/** @typedef {PlayerJoined | PlayerLeft | ErrorMsg} RallyEvent */
/** @typedef {'connecting' | 'connected' | 'reconnecting' | 'closed'} ClientState */

/**
 * @typedef {object} StatusEvent
 * @property {ClientState} state
 * @property {TransportKind | null} transport
 * @property {string | null} fallbackReason
 * @property {Welcome | null} welcome
 * @property {RallyClient} client
 * @property {number} [attempt] 'reconnecting': attempt number (1-based)
 * @property {number} [delayMs] 'reconnecting': delay before it
 * @property {string} [reason] 'reconnecting' / 'closed': why
 * @property {boolean} [fallbackUpdated] only fallbackReason changed (the losing WebTransport probe finished)
 */

/**
 * @typedef {object} Handlers
 * @property {(snapshot: Snapshot, info: { channel: Channel }) => void} [onSnapshot] every applied snapshot (stale, reordered ones are dropped)
 * @property {(payload: Uint8Array, info: { reliable: boolean, channel: Channel }) => void} [onMessage] the game's App (reliable) and AppUnreliable messages
 * @property {(event: RallyEvent) => void} [onEvent] PlayerJoined, PlayerLeft, Error
 * @property {(status: StatusEvent) => void} [onStatus] connection state changes
 * @property {(count: number) => void} [onLost] reliable messages sent with send() that will never reach the game
 */

/**
 * @typedef {Partial<Timing> & Handlers & {
 *   room: string,
 *   name: string,
 *   app?: Uint8Array,
 *   transport?: TransportChoice,
 *   webTransportUrl?: string,
 *   certificateHash?: string | string[] | false,
 *   token?: TokenSource,
 *   reconnect?: boolean,
 *   locate?: boolean,
 *   deltas?: boolean,
 *   applyDelta?: ApplyDelta,
 * }} ConnectOptions
 */

/**
 * @typedef {object} ClientStats
 * @property {number} snapshotsReceived
 * @property {number} snapshotsApplied
 * @property {number} snapshotsStale received but not newer than the newest applied
 * @property {number} snapshotsLost ticks skipped in the applied sequence, in units of snapshotEvery
 * @property {number} datagramSnapshots
 * @property {number} streamSnapshots
 * @property {number} websocketSnapshots
 * @property {number} httpSnapshots
 * @property {number} inputsSent
 * @property {number} pingsSent
 * @property {number} pongs
 * @property {number} appSent reliable App messages written (replays excluded)
 * @property {number} appResent reliable App messages sent again after a resume
 * @property {number} appLost reliable App messages reported through onLost
 * @property {number} appUnreliableSent
 * @property {number} appReceived server App messages
 * @property {number} appUnreliableReceived
 * @property {number} deltasApplied snapshots that came as deltas and were made whole
 * @property {number} deltasIgnored deltas not applied (no baseline, or undecodable): the next snapshot does
 */

/** Reconnect attempts that try Resume on the transport the player had (later ones join afresh). */
const RESUME_ATTEMPTS = 2;
/** How long `GET /rooms/NAME` may take before the client connects where it was told to. */
const LOCATE_TIMEOUT_MS = 1000;
/** Redirects (cluster mode) followed before connect() gives up. */
const MAX_REDIRECTS = 3;

/**
 * @param {Uint8Array} b
 * @returns {string}
 */
function bytesToHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** @returns {ClientStats} */
function freshStats() {
  return {
    snapshotsReceived: 0,
    snapshotsApplied: 0,
    snapshotsStale: 0,
    snapshotsLost: 0,
    datagramSnapshots: 0,
    streamSnapshots: 0,
    websocketSnapshots: 0,
    httpSnapshots: 0,
    inputsSent: 0,
    pingsSent: 0,
    pongs: 0,
    appSent: 0,
    appResent: 0,
    appLost: 0,
    appUnreliableSent: 0,
    appReceived: 0,
    appUnreliableReceived: 0,
    deltasApplied: 0,
    deltasIgnored: 0,
  };
}

/**
 * Runs an application callback; an exception in it is reported (window's
 * `error` event and the console, as an uncaught one would be) without
 * unwinding into the transport that called us.
 * @template {unknown[]} A
 * @param {((...args: A) => void) | undefined} fn
 * @param {A} args
 */
function call(fn, ...args) {
  if (!fn) return;
  try {
    fn(...args);
  } catch (e) {
    if (typeof globalThis.reportError === 'function') {
      globalThis.reportError(e);
    } else {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/**
 * @param {unknown} bytes
 * @param {string} what
 * @returns {Uint8Array}
 */
function requireBytes(bytes, what) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  return bytes;
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * A Rally client: one session at a time, reconnected (and its player
 * resumed) after unexpected drops. Create it with connect().
 */
export class RallyClient {
  /** @internal @type {Timing & ConnectOptions & { transport: TransportChoice }} */
  _options;
  /** @internal @type {Endpoints} the origin connect() was given */
  _endpoints;
  /** @internal @type {string | null} the node origin the player is on (cluster mode) */
  _nodeUrl = null;
  /** @internal @type {string[]} the cluster's nodes, asked when the given origin does not answer */
  _entries = [];
  /** @internal @type {Uint8Array} */
  _hello;
  /** @internal @type {ClientState} */
  _state = 'connecting';
  /** @internal @type {TransportKind | null} */
  _transport = null;
  /** @internal @type {string | null} */
  _fallbackReason = null;
  /** @internal */
  _certHashUsed = false;
  /** @internal @type {Welcome | null} */
  _welcome = null;
  /** @internal @type {States} recent whole states, for deltas */
  _states = new States();
  /** @internal @type {ErrorMsg | null} */
  _lastError = null;
  /** @internal @type {number | null} */
  _connectedAt = null;
  /** @internal */
  _sessions = 0;
  /** @internal */
  _resumed = false;
  /** @internal @type {import('./link.js').Link | null} */
  _link = null;
  /** @internal @type {import('./race.js').Attempt[]} */
  _attempts = [];
  /** @internal */
  _closing = false;
  /** @internal */
  _noRetry = false;
  /** @internal */
  _reconnectAttempt = 0;
  /** @internal @type {number | null} clock ms when the last session dropped */
  _droppedAt = null;
  /** @internal @type {ReturnType<typeof setTimeout> | null} */
  _reconnectTimer = null;
  /** @internal @type {ReturnType<typeof setInterval> | null} */
  _pingTimer = null;
  /** @internal @type {ReturnType<typeof setInterval> | null} */
  _watchdogTimer = null;
  /** @internal clock ms when the server was last heard (anything at all) */
  _heardAt = 0;
  /** @internal */
  _rtt = new RttEstimator();
  /** @internal @type {Uint8Array | null} resume token from the last Welcome (PROTOCOL.md §7.1) */
  _resumeToken = null;
  /** @internal number of the last numbered event received (PROTOCOL.md §7.1) */
  _reliableSeq = 0;
  /** @internal */
  _outbox = new AppOutbox();
  /** @internal last input number sent */
  _seq = 0;
  /** @internal @type {SentInput[]} oldest first */
  _inputs = [];
  /** @internal @type {number | null} */
  _lastTick = null;
  /** @internal @type {Snapshot | null} */
  _lastSnapshot = null;
  /** @internal */
  _stats = freshStats();

  /**
   * @param {string | undefined} url the server's http(s) origin (default: the page's)
   * @param {ConnectOptions} options
   */
  constructor(url, options) {
    const opts = { ...DEFAULTS, transport: /** @type {TransportChoice} */ ('auto'), ...options };
    if (!['auto', 'webtransport', 'websocket', 'http'].includes(opts.transport)) {
      throw new TypeError("transport must be 'auto', 'webtransport', 'websocket' or 'http'");
    }
    this._options = opts;
    this._endpoints = endpoints(url || globalThis.location?.origin, opts.webTransportUrl);
    this._hello = encodeHello(opts.room, opts.name, opts.app);
  }

  /** 'connecting' | 'connected' | 'reconnecting' | 'closed' */
  get state() {
    return this._state;
  }

  /** Transport of the current (or last) session. */
  get transport() {
    return this._transport;
  }

  /**
   * Why the faster transports are not in use (null on WebTransport): on
   * WebSocket why not WebTransport, on HTTP streaming why neither.
   */
  get fallbackReason() {
    return this._fallbackReason;
  }

  /** Whether the WebTransport session pinned the /cert-hash digest. */
  get certHashUsed() {
    return this._certHashUsed;
  }

  /** The origin of the node the player is on (in a cluster, the room's node; PROTOCOL.md §13). */
  get nodeUrl() {
    return this._nodeUrl;
  }

  /** The current session's Welcome (the last one while reconnecting). */
  get welcome() {
    return this._welcome;
  }

  /** Your player id (null before the first Welcome). */
  get playerId() {
    return this._welcome ? this._welcome.playerId : null;
  }

  /** True when the current session took the player back after a drop (Resume), false after a fresh join. */
  get resumed() {
    return this._resumed;
  }

  /** Smoothed round-trip time in ms (null before the first Pong). */
  get rtt() {
    return this._rtt.rtt;
  }

  /** RTT jitter in ms (RFC 3550 style). */
  get jitter() {
    return this._rtt.jitter;
  }

  /** Newest applied snapshot of this player. */
  get lastSnapshot() {
    return this._lastSnapshot;
  }

  /** Last Error the server sent, if any. */
  get lastError() {
    return this._lastError;
  }

  /** Clock ms (performance.now()) when the current session was welcomed. */
  get connectedAt() {
    return this._connectedAt;
  }

  /** Sessions opened so far (1 + reconnects). */
  get sessions() {
    return this._sessions;
  }

  /** Number of the last input sent (0: none); continues across resumes. */
  get inputSeq() {
    return this._seq;
  }

  /** Number of the last reliable App message sent (0: none); continues across resumes. */
  get appSeq() {
    return this._outbox.seq;
  }

  /**
   * How the current session's transport was chosen: one entry per
   * transport tried, with ms from its start to each stage reached and the
   * error of a failed one. Later stages of an abandoned probe appear as it
   * runs on.
   * @returns {AttemptReport[]}
   */
  get attempts() {
    return this._attempts.map((a) => a.report());
  }

  /** Counters, reset when a fresh player joins (kept across resumes). */
  get stats() {
    return this._stats;
  }

  /**
   * Sends one input (the game's bytes, at most Welcome.maxInput) as the next
   * number, with the previous ones up to INPUT_REDUNDANCY in all, newest
   * first, as many as fit Welcome.maxMessage. Call it once per tick. Returns
   * the input's number, or 0 when there is no session to send on.
   * @param {Uint8Array} bytes
   * @returns {number}
   */
  sendInput(bytes) {
    requireBytes(bytes, 'an input');
    const w = this._requireWelcome();
    if (bytes.length > w.maxInput) throw new RangeError(`an input is at most ${w.maxInput} bytes (Welcome.max_input), got ${bytes.length}`);
    if (inputMessageSize([bytes]) > w.maxMessage) throw new RangeError(`an Input of ${bytes.length} bytes exceeds Welcome.max_message (${w.maxMessage})`);
    const link = this._link;
    if (!link || link.closed) return 0;
    const seq = ++this._seq;
    // A copy: the caller may reuse its buffer for the next frame.
    this._inputs.push({ seq, bytes: bytes.slice() });
    if (this._inputs.length > this._options.inputHistory) this._inputs.splice(0, this._inputs.length - this._options.inputHistory);
    /** @type {Uint8Array[]} */
    const carried = [];
    let size = inputMessageSize([]);
    // Repeat only consecutive numbers: inputs[i] must be newest_seq - i (PROTOCOL.md §4).
    for (let i = this._inputs.length - 1; i >= 0 && carried.length < INPUT_REDUNDANCY; i--) {
      const input = this._inputs[i];
      if (input.seq !== seq - carried.length || size + 1 + input.bytes.length > w.maxMessage) break;
      carried.push(input.bytes);
      size += 1 + input.bytes.length;
    }
    // InputAck asks for deltas and acknowledges the newest whole state (§5.1).
    link.sendUnreliable(
      this._options.deltas === false ? encodeInput(seq, carried) : encodeInputAck(this._states.newest, seq, carried),
    );
    this._stats.inputsSent++;
    return seq;
  }

  /**
   * Acknowledges the newest snapshot without an input (an InputAck carrying
   * none): a client that sends no inputs calls this once per frame to get
   * snapshots as deltas. Does nothing with `deltas: false` or no session.
   */
  sendAck() {
    const link = this._link;
    if (this._options.deltas === false || !link || link.closed || !this._welcome) return;
    link.sendUnreliable(encodeInputAck(this._states.newest, this._seq, []));
  }

  /**
   * Inputs sent with numbers above `ackSeq`, oldest first: what the server
   * had not handed to the game when it took the snapshot (for prediction).
   * @param {number} ackSeq
   * @returns {SentInput[]}
   */
  unackedInputs(ackSeq) {
    return this._inputs.filter((i) => i.seq > ackSeq);
  }

  /**
   * Sends the game a message. Reliable (default): App 0x06, numbered, kept
   * and replayed after a resume, so delivered exactly once (PROTOCOL.md
   * §7.2); sent while reconnecting it waits for the resume. Unreliable:
   * AppUnreliable 0x07, a datagram on WebTransport, dropped while
   * disconnected. Returns the reliable message's number, 0 for unreliable.
   * Throws RangeError when the message would exceed Welcome.maxMessage.
   * @param {Uint8Array} payload
   * @param {{ reliable?: boolean }} [options]
   * @returns {number}
   */
  send(payload, { reliable = true } = {}) {
    requireBytes(payload, 'a message');
    const w = this._requireWelcome();
    const msg = encodeApp(payload, reliable);
    if (msg.length > w.maxMessage) throw new RangeError(`a message of ${msg.length} bytes exceeds Welcome.max_message (${w.maxMessage})`);
    const link = this._link && !this._link.closed ? this._link : null;
    if (!reliable) {
      if (!link) return 0;
      link.sendUnreliable(msg);
      this._stats.appUnreliableSent++;
      return 0;
    }
    if (this._state === 'closed') throw new Error('the client is closed');
    const seq = this._outbox.push(payload.slice());
    if (link) {
      link.sendReliable(msg);
      this._outbox.markWritten(seq);
      this._stats.appSent++;
    }
    return seq;
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

  /** @internal */
  _requireWelcome() {
    if (!this._welcome) throw new Error('not joined yet');
    return this._welcome;
  }

  /**
   * @internal
   * @param {ClientState} state
   * @param {Partial<StatusEvent>} [extra]
   */
  _status(state, extra = {}) {
    this._state = state;
    call(this._options.onStatus, {
      state,
      transport: this._transport,
      fallbackReason: this._fallbackReason,
      welcome: this._welcome,
      client: this,
      ...extra,
    });
  }

  /** @internal Opens the first session; connect() calls it. */
  async _start() {
    this._status('connecting');
    try {
      await this._connectOnce();
    } catch (e) {
      this._closing = true;
      if (e instanceof RallyError) this._lastError = { type: 'error', code: e.code, codeName: e.codeName, reason: e.reason };
      this._status('closed', { reason: reasonOf(e) });
      throw e;
    }
  }

  /** @internal */
  async _connectOnce() {
    /** @type {import('./link.js').Link | null} */
    let adopted = null;
    // After a drop, the first attempts resume the player on the transport
    // it had, while the server still keeps it (one Resume at a time: two
    // racing transports would take the player from each other); later
    // attempts join afresh with `auto` rules.
    const w = this._welcome;
    const resuming =
      this._resumeToken !== null &&
      w !== null &&
      this._reconnectAttempt > 0 &&
      this._reconnectAttempt <= RESUME_ATTEMPTS &&
      (this._droppedAt === null || clockMs() - this._droppedAt < w.resumeWindowMs);
    const pinned = resuming && this._transport !== null && this._options.transport === 'auto';
    const options = pinned ? { ...this._options, transport: /** @type {TransportKind} */ (this._transport) } : this._options;
    const previousReason = this._fallbackReason;
    /** @type {{ hello: Uint8Array, resume: Uint8Array | null }} */
    const greeting = {
      hello: this._hello,
      resume: resuming && this._resumeToken ? encodeResume(this._resumeToken, this._reliableSeq) : null,
    };
    let ep = this._endpoints;
    let nodeUrl = this._endpoints.origin;
    if (this._options.locate !== false) {
      // Where the room lives (PROTOCOL.md §13.2): in a cluster its node,
      // else this server (whose answer also carries the certificate hashes).
      const bases = [this._endpoints.origin, ...this._entries.filter((u) => u !== this._endpoints.origin)];
      for (const base of bases) {
        const at = await locateRoom(base, this._options.room, LOCATE_TIMEOUT_MS);
        if (!at) continue;
        if (at.nodes.length) this._entries = at.nodes;
        nodeUrl = at.here ? base : at.url;
        ep = at.here && base === this._endpoints.origin ? { ...ep, certHashes: at.certHashes } : { ...endpoints(nodeUrl, at.here ? undefined : at.wtUrl), certHashes: at.certHashes };
        break;
      }
      // The room was placed anew on another node (its node died): the
      // player there is new too.
      if (greeting.resume && this._nodeUrl !== null && nodeUrl !== this._nodeUrl) greeting.resume = null;
    }
    const onReason = (/** @type {string} */ reason) => {
      // A late verdict of the abandoned WebTransport probe (e.g. 'timeout').
      if (adopted !== null && this._link === adopted) {
        this._fallbackReason = reason;
        this._status(this._state, { fallbackUpdated: true });
      }
    };
    /** @type {import('./race.js').Established} */
    let r;
    for (let hops = 0; ; hops++) {
      try {
        r = await establish(ep, options, greeting, onReason);
        break;
      } catch (e) {
        if (!(e instanceof RedirectError) || hops >= MAX_REDIRECTS) throw e;
        const to = e.redirect;
        nodeUrl = to.url;
        ep = { ...endpoints(to.url, to.wtUrl), certHashes: to.certHashes.map(bytesToHex) };
        greeting.resume = null;
      }
    }
    this._nodeUrl = nodeUrl;
    if (this._closing) {
      r.attempt.abandoned = true;
      r.link.leave();
      throw new Error('closed');
    }
    // Resumed on the transport the race chose before: the reason it was
    // chosen still holds (not "WebSocket requested").
    if (pinned && r.transport === this._transport) r.fallbackReason = previousReason;
    this._adopt(r);
    adopted = r.link;
  }

  /**
   * Takes over a welcomed link.
   * @internal
   * @param {import('./race.js').Established} r
   */
  _adopt(r) {
    const w = r.welcome;
    let lost = 0;
    /** @type {Numbered[]} */
    let resend = [];
    if (r.resumed) {
      // A resumed player keeps its input and App numbering: the server's
      // acknowledgements carry on from before the drop.
      ({ resend, lost } = this._outbox.resume(w.clientSeq));
    } else {
      lost = this._outbox.restart();
      this._seq = 0;
      this._inputs = [];
      this._lastSnapshot = null;
      this._stats = freshStats();
    }
    this._resumed = r.resumed;
    this._resumeToken = w.resumeToken;
    this._reliableSeq = w.reliableSeq;
    this._link = r.link;
    this._transport = r.transport;
    this._fallbackReason = r.fallbackReason;
    this._certHashUsed = r.certHashUsed;
    this._attempts = r.attempts;
    this._welcome = w;
    this._connectedAt = clockMs();
    this._sessions++;
    this._reconnectAttempt = 0;
    this._droppedAt = null;
    this._lastTick = w.tick;
    // Deltas start afresh on every session (PROTOCOL.md §5.1).
    this._states = new States(this._options.applyDelta);
    const link = r.link;
    link.onMessage = (msg, channel) => this._receive(msg, channel);
    link.onClose = (info) => this._linkClosed(link, info);
    // Replayed messages go before anything sent from here on (PROTOCOL.md §7.2).
    for (const m of resend) {
      link.sendReliable(encodeApp(m.payload));
      this._outbox.markWritten(m.seq);
    }
    this._stats.appResent += resend.length;
    this._startPing();
    this._status('connected');
    if (lost > 0) {
      this._stats.appLost += lost;
      call(this._options.onLost, lost);
    }
    for (const [msg, channel] of r.backlog) this._receive(msg, channel);
    r.backlog.length = 0;
    if (r.attempt.closeInfo) this._linkClosed(link, r.attempt.closeInfo);
  }

  /**
   * @internal
   * @param {ServerMessage} msg
   * @param {Channel} channel
   */
  _receive(msg, channel) {
    this._heardAt = clockMs();
    if (isNumbered(msg)) this._reliableSeq = (this._reliableSeq + 1) >>> 0;
    const o = this._options;
    switch (msg.type) {
      case 'snapshot':
        this._states.keep(msg.tick, msg.payload);
        this._receiveSnapshot(msg, channel);
        break;
      case 'snapshot_delta': {
        // Applied only to the very state it was made against; otherwise
        // ignored, and the next snapshot will do (PROTOCOL.md §5.1).
        const payload = this._states.apply(msg);
        if (payload === null) {
          this._stats.deltasIgnored++;
          break;
        }
        this._stats.deltasApplied++;
        const { ackSeq, tick, serverTimeUs } = msg;
        this._receiveSnapshot({ type: 'snapshot', ackSeq, tick, serverTimeUs, payload }, channel);
        break;
      }
      case 'pong':
        // client_time_us 0: the server's heartbeat (PROTOCOL.md §7.3), a sign of life only.
        if (msg.clientTimeUs === 0) break;
        this._stats.pongs++;
        this._rtt.sample((nowUs() - msg.clientTimeUs) / 1000);
        break;
      case 'app':
        this._stats.appReceived++;
        call(o.onMessage, msg.payload, { reliable: true, channel });
        break;
      case 'app_unreliable':
        this._stats.appUnreliableReceived++;
        call(o.onMessage, msg.payload, { reliable: false, channel });
        break;
      case 'error':
        this._lastError = msg;
        if (!this._mayRetry(msg.code)) this._noRetry = true;
        call(o.onEvent, msg);
        break;
      case 'player_joined':
      case 'player_left':
        call(o.onEvent, msg);
        break;
      case 'welcome':
        // One Welcome per session; a second one means nothing.
        break;
    }
  }

  /**
   * @internal
   * @param {SnapshotMsg} s
   * @param {Channel} channel
   */
  _receiveSnapshot(s, channel) {
    const st = this._stats;
    st.snapshotsReceived++;
    if (channel === 'datagram') st.datagramSnapshots++;
    else if (channel === 'stream') st.streamSnapshots++;
    else if (channel === 'http') st.httpSnapshots++;
    else st.websocketSnapshots++;
    // Latest-only: anything not newer than what was applied is stale
    // (datagrams reorder). Tick arithmetic is modulo 2^32.
    if (this._lastSnapshot !== null && this._lastTick !== null) {
      const ahead = (s.tick - this._lastTick) >>> 0;
      if (ahead === 0 || ahead >= 0x80000000) {
        st.snapshotsStale++;
        return;
      }
      const every = this._welcome?.snapshotEvery || 1;
      const missed = Math.round(ahead / every) - 1;
      if (missed > 0) st.snapshotsLost += missed;
    }
    const snapshot = { tick: s.tick, ackSeq: s.ackSeq, serverTimeUs: s.serverTimeUs, payload: s.payload };
    this._lastTick = s.tick;
    this._lastSnapshot = snapshot;
    st.snapshotsApplied++;
    call(this._options.onSnapshot, snapshot, { channel });
  }

  /** @internal */
  _startPing() {
    this._stopPing();
    const ping = () => {
      if (!this._link || this._link.closed) return;
      this._link.sendUnreliable(encodePing(nowUs()));
      this._stats.pingsSent++;
    };
    ping();
    this._pingTimer = setInterval(ping, this._options.pingIntervalMs);
    // The silence watchdog (PROTOCOL.md §7.3): the server sends something
    // at least every heartbeat (1 s) and answers our pings; a session that
    // hears nothing for watchdogMs is dead or frozen even if no close came
    // (a killed host, a stopped process, a cut path): drop it and reconnect.
    const windowMs = this._options.watchdogMs;
    const link = this._link;
    if (windowMs > 0 && link) {
      this._heardAt = clockMs();
      this._watchdogTimer = setInterval(() => {
        if (link !== this._link || link.closed) return;
        const silentMs = clockMs() - this._heardAt;
        if (silentMs < windowMs) return;
        this._linkClosed(link, { code: null, reason: `the server was silent for ${Math.round(silentMs)} ms` });
        link.close();
      }, Math.max(10, windowMs / 8));
    }
  }

  /** @internal */
  _stopPing() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this._watchdogTimer !== null) clearInterval(this._watchdogTimer);
    this._watchdogTimer = null;
  }

  /**
   * Whether a new session could succeed after error `code`: not after those
   * a new Hello would repeat (NO_RETRY_CODES), nor after token_expired unless
   * `token` is a function that can mint a fresh one.
   * @internal
   * @param {number} code
   */
  _mayRetry(code) {
    if (code === ErrorCode.token_expired) return typeof this._options.token === 'function';
    return mayRetry(code);
  }

  /**
   * @internal
   * @param {import('./link.js').Link} link
   * @param {import('./link.js').CloseInfo} info
   */
  _linkClosed(link, info) {
    if (link !== this._link) return;
    this._link = null;
    this._droppedAt = clockMs();
    this._stopPing();
    const code = codeFromClose(info.code);
    if (code && !this._mayRetry(code)) this._noRetry = true;
    if (this._closing) return;
    if (this._noRetry || this._options.reconnect === false) {
      const e = this._lastError;
      this._status('closed', { reason: e ? `${e.codeName}: ${e.reason}` : info.reason });
      return;
    }
    this._scheduleReconnect(info.reason || 'connection lost');
  }

  /**
   * @internal
   * @param {string} reason
   */
  _scheduleReconnect(reason) {
    const delayMs = backoffDelay(this._reconnectAttempt, {
      baseMs: this._options.reconnectBaseMs,
      maxMs: this._options.reconnectMaxMs,
    });
    this._reconnectAttempt++;
    this._status('reconnecting', { attempt: this._reconnectAttempt, delayMs, reason });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this._closing) return;
      this._connectOnce().catch((e) => {
        if (this._closing) return;
        if (e instanceof RallyError && !this._mayRetry(e.code)) {
          this._lastError = { type: 'error', code: e.code, codeName: e.codeName, reason: e.reason };
          this._status('closed', { reason: e.message });
          return;
        }
        this._scheduleReconnect(reasonOf(e));
      });
    }, delayMs);
  }
}

/**
 * Connects to the Rally server at `url` (its http(s) origin; default: the
 * page's). Resolves with the client once the first session is welcomed;
 * rejects when neither transport could join. After that, drops reconnect
 * with backoff, resuming the player while the server keeps it.
 * @param {string | undefined} url
 * @param {ConnectOptions} options
 * @returns {Promise<RallyClient>}
 */
export async function connect(url, options) {
  const client = new RallyClient(url, options);
  await client._start();
  return client;
}

export default connect;
