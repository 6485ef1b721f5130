// Types for rally.js, the Rally browser client (PROTOCOL.md v2).
//
// Written by hand, for people; tests/browser/run.sh proves it says exactly
// what the code does: it compares every export of this file with the
// declarations tsc derives from rally.js and fails on any difference.
//
// The message-type table, the numbered events and the error names are
// generated from the server's table into wire.js; this file re-exports them
// rather than restating them.

import type { ERROR_NAMES } from './wire.js';
export { PROTOCOL_VERSION, MsgType, NUMBERED, ERROR_NAMES } from './wire.js';

// ---------------------------------------------------------------------------
// Messages (PROTOCOL.md §5)
// ---------------------------------------------------------------------------

/** An error's name, as wire.js lists them (PROTOCOL.md §6). */
export type ErrorName = (typeof ERROR_NAMES)[keyof typeof ERROR_NAMES];

export interface Welcome {
  type: 'welcome';
  version: number;
  playerId: number;
  tickHz: number;
  /** A snapshot is sent every this many ticks. */
  snapshotEvery: number;
  /** The room's tick when the server welcomed you. */
  tick: number;
  resumeToken: Uint8Array;
  resumeWindowMs: number;
  /** Number of the last numbered event before this Welcome. */
  reliableSeq: number;
  /** Number of your reliable App messages the game has received (PROTOCOL.md §7.2). */
  clientSeq: number;
  /** Largest message the server accepts from you, in bytes. */
  maxMessage: number;
  /** Largest input the server accepts from you, in bytes. */
  maxInput: number;
  /** The game this server runs, e.g. 'dots'. */
  game: string;
  /** The game's welcome bytes (sent again on every resume). */
  app: Uint8Array;
}
export interface PlayerJoined { type: 'player_joined'; playerId: number; name: string }
export interface PlayerLeft { type: 'player_left'; playerId: number }
export interface SnapshotMsg { type: 'snapshot'; ackSeq: number; tick: number; serverTimeUs: number; payload: Uint8Array }
/** A snapshot as a delta against an earlier one (PROTOCOL.md §5.1); RallyClient makes it whole before onSnapshot. */
export interface SnapshotDeltaMsg {
  type: 'snapshot_delta';
  ackSeq: number;
  tick: number;
  serverTimeUs: number;
  baseTick: number;
  codec: number;
  delta: Uint8Array;
}
export interface Pong { type: 'pong'; clientTimeUs: number; serverTimeUs: number }
export interface ErrorMsg { type: 'error'; code: number; codeName: string; reason: string }
export interface AppMsg { type: 'app'; payload: Uint8Array }
export interface AppUnreliableMsg { type: 'app_unreliable'; payload: Uint8Array }
/** Cluster mode: the room lives on another node (PROTOCOL.md §13). */
export interface RedirectMsg { type: 'redirect'; room: string; node: string; url: string; wtUrl: string; certHashes: Uint8Array[] }
export type ServerMessage = Welcome | PlayerJoined | PlayerLeft | SnapshotMsg | SnapshotDeltaMsg | Pong | ErrorMsg | AppMsg | AppUnreliableMsg | RedirectMsg;

/** A snapshot as onSnapshot gets it: the header, and the game's bytes. */
export interface Snapshot {
  tick: number;
  /** Your last input the server handed to the game (0: none yet). */
  ackSeq: number;
  /** Server wall clock at that tick, microseconds since the Unix epoch. */
  serverTimeUs: number;
  /** The game's state as you may see it. */
  payload: Uint8Array;
}

/** What onEvent receives: roster changes and server errors. */
export type RallyEvent = PlayerJoined | PlayerLeft | ErrorMsg;

// ---------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------

/** WebTransport (HTTP/3), WebSocket, or HTTP streaming (PROTOCOL.md §11). */
export type TransportKind = 'webtransport' | 'websocket' | 'http';
export type TransportChoice = 'auto' | TransportKind;
/**
 * Where a message arrived: a WebTransport datagram or stream, a WebSocket
 * message, or the body of an HTTP streaming session.
 */
export type Channel = 'datagram' | 'stream' | 'websocket' | 'http';
/** A join token, or a function asked for a fresh one before every attempt. */
export type TokenSource = string | (() => string | null | Promise<string | null>);
export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface Timing {
  /** Head start of WebTransport before WebSocket is also tried (300). */
  headStartMs: number;
  /** WebTransport attempt timeout, cert-hash fetch and handshake included (2500). */
  webTransportTimeoutMs: number;
  /** WebSocket attempt timeout (10000). */
  webSocketTimeoutMs: number;
  /** Head start of WebSocket before HTTP streaming is also tried (2500). */
  httpHeadStartMs: number;
  /** HTTP streaming attempt timeout (10000). */
  httpTimeoutMs: number;
  /** A remembered WebSocket or HTTP streaming win skips the faster tiers for this long (10 min). */
  reprobeAfterMs: number;
  /** Ping period (250). */
  pingIntervalMs: number;
  /** First reconnect delay before jitter (500). */
  reconnectBaseMs: number;
  /** Reconnect delay cap (10000). */
  reconnectMaxMs: number;
  /** A session from which nothing at all (snapshots, Pongs, the server's heartbeat) arrives for this long is dropped and reconnected (2000; 0: off; PROTOCOL.md §7.3). */
  watchdogMs: number;
  /** Inputs kept for prediction replay (256). */
  inputHistory: number;
}
export declare const DEFAULTS: Readonly<Timing>;

export interface StatusEvent {
  state: ClientState;
  transport: TransportKind | null;
  fallbackReason: string | null;
  welcome: Welcome | null;
  client: RallyClient;
  /** 'reconnecting': attempt number (1-based). */
  attempt?: number;
  /** 'reconnecting': the delay before it. */
  delayMs?: number;
  /** 'reconnecting' / 'closed': why. */
  reason?: string;
  /** Set when only fallbackReason changed (a losing probe of a faster transport finished). */
  fallbackUpdated?: boolean;
}

export interface Handlers {
  /** Every applied snapshot; stale and reordered ones are dropped (latest-only). */
  onSnapshot?: (snapshot: Snapshot, info: { channel: Channel }) => void;
  /** The game's messages: App (reliable: true) and AppUnreliable (reliable: false). */
  onMessage?: (payload: Uint8Array, info: { reliable: boolean; channel: Channel }) => void;
  /** PlayerJoined, PlayerLeft and Error. */
  onEvent?: (event: RallyEvent) => void;
  /** Connection state changes. */
  onStatus?: (status: StatusEvent) => void;
  /**
   * `count` reliable messages sent with send() will never reach the game:
   * after a resume, those the server had not received and the client no
   * longer kept (it keeps the last 256); after a fresh join that replaced a
   * lost player, those sent while disconnected. (Messages written to a
   * session before it dropped, when no resume follows, may or may not have
   * reached the old player's game: nobody can tell.)
   */
  onLost?: (count: number) => void;
}

export type ConnectOptions = Partial<Timing> & Handlers & {
  /** 1-32 bytes of A-Z a-z 0-9 _ - */
  room: string;
  /** 1-24 bytes of UTF-8, no control characters, not only whitespace. */
  name: string;
  /** The game's join bytes for Hello (default: none). */
  app?: Uint8Array;
  /**
   * Default 'auto': WebTransport first, WebSocket after a head start, HTTP
   * streaming after another (or when both failed); the first Welcome wins.
   * The others force one transport.
   */
  transport?: TransportChoice;
  /** Default `https://HOST:PORT/rally` of the server's origin. */
  webTransportUrl?: string;
  /**
   * SHA-256 of the server certificate as 64 hex digits; `false` never pins.
   * Default: every digest /cert-hash lists, when the origin is http (development).
   */
  certificateHash?: string | string[] | false;
  /**
   * Join token (PROTOCOL.md §9), sent as `?token=` on both session URLs. A
   * function is called before every attempt, so it can mint a fresh token;
   * with a fixed string, token_expired ends the client instead of retrying.
   */
  token?: TokenSource;
  /** Reconnect after unexpected drops (default true). */
  reconnect?: boolean;
  /**
   * Ask the server where the room lives (`GET /rooms/NAME`) before each
   * connect, and go there: in a cluster, the room's node (default true).
   * Either way a node's `Redirect` is followed, up to 3 times.
   */
  locate?: boolean;
  /**
   * Take snapshots as deltas against a state this client has (default
   * true): inputs go as InputAck, acknowledging the newest snapshot, and
   * deltas are made whole before onSnapshot. false: whole snapshots.
   */
  deltas?: boolean;
  /** The game's own delta decoder, for a game that encodes its deltas itself (codec 1). */
  applyDelta?: ApplyDelta;
};

/** A game's own delta decoder: the payload from the baseline's payload and the delta, or null. */
export type ApplyDelta = (base: Uint8Array, delta: Uint8Array) => Uint8Array | null;

export interface ClientStats {
  snapshotsReceived: number;
  snapshotsApplied: number;
  /** Received but not newer than the newest applied (reordered or duplicate). */
  snapshotsStale: number;
  /** Ticks skipped in the applied sequence, in units of snapshotEvery. */
  snapshotsLost: number;
  datagramSnapshots: number;
  streamSnapshots: number;
  websocketSnapshots: number;
  httpSnapshots: number;
  inputsSent: number;
  pingsSent: number;
  pongs: number;
  /** Reliable App messages written (replays excluded). */
  appSent: number;
  /** Reliable App messages sent again after a resume. */
  appResent: number;
  /** Reliable App messages reported through onLost. */
  appLost: number;
  appUnreliableSent: number;
  /** Server App messages (reliable). */
  appReceived: number;
  appUnreliableReceived: number;
  /** Snapshots that came as deltas and were made whole. */
  deltasApplied: number;
  /** Deltas not applied (no baseline, or undecodable): the next snapshot does. */
  deltasIgnored: number;
}

/** One transport attempt: ms from its start to each stage reached, and the error of a failed one. */
export interface AttemptReport {
  transport: TransportKind;
  /** WebTransport: the /cert-hash digests were fetched (or not). */
  'cert-hash'?: number;
  'no-cert-hash'?: number;
  open?: number;
  'hello-sent'?: number;
  welcomed?: number;
  failed?: number;
  abandoned?: number;
  error?: string;
}

/** An input you sent: its number and the game's bytes. */
export interface SentInput { seq: number; bytes: Uint8Array }

export declare class RallyClient {
  /** Use connect(). */
  constructor(url: string | undefined, options: ConnectOptions);
  readonly state: ClientState;
  /** Transport of the current (or last) session. */
  readonly transport: TransportKind | null;
  /** Why the faster transports are not in use (null on WebTransport). */
  readonly fallbackReason: string | null;
  /** Whether the WebTransport session pinned the /cert-hash digest. */
  readonly certHashUsed: boolean;
  /** The origin of the node the player is on (in a cluster, the room's node; PROTOCOL.md §13). */
  readonly nodeUrl: string | null;
  /** The current session's Welcome (the last one while reconnecting). */
  readonly welcome: Welcome | null;
  readonly playerId: number | null;
  /** True when the current session took the player back after a drop; false after a fresh join. */
  readonly resumed: boolean;
  /** Smoothed RTT in ms (null before the first Pong). */
  readonly rtt: number | null;
  /** RTT jitter in ms. */
  readonly jitter: number;
  /** Newest applied snapshot. */
  readonly lastSnapshot: Snapshot | null;
  /** Last Error the server sent, if any. */
  readonly lastError: ErrorMsg | null;
  /** performance.now() when the current session was welcomed. */
  readonly connectedAt: number | null;
  /** Sessions opened so far (1 + reconnects). */
  readonly sessions: number;
  /** Number of the last input sent (0: none); continues across resumes. */
  readonly inputSeq: number;
  /** Number of the last reliable message sent (0: none); continues across resumes. */
  readonly appSeq: number;
  /** How the current session's transport was chosen. */
  readonly attempts: AttemptReport[];
  /** Counters, reset when a fresh player joins (kept across resumes). */
  readonly stats: ClientStats;
  /**
   * Sends one input (at most welcome.maxInput bytes, else RangeError) as the
   * next number, with up to 3 previous ones for redundancy. Call it once per
   * tick. Returns its number, or 0 when there is no session to send on.
   */
  sendInput(bytes: Uint8Array): number;
  /**
   * Acknowledges the newest snapshot without an input, for a client that
   * sends none (a spectator): call it once per frame to get deltas.
   */
  sendAck(): void;
  /** Inputs sent with numbers above ackSeq, oldest first (for prediction). */
  unackedInputs(ackSeq: number): SentInput[];
  /**
   * Sends the game a message: reliable (default; App, numbered, replayed
   * after a resume, delivered exactly once; returns its number) or not
   * (AppUnreliable, a datagram on WebTransport, newest-wins on the other
   * transports; returns 0). RangeError when
   * the message exceeds welcome.maxMessage.
   */
  send(payload: Uint8Array, options?: { reliable?: boolean }): number;
  /** Sends Leave and closes; no reconnect follows. */
  close(): Promise<void>;
}

/**
 * Connects to the Rally server at `url` (its http(s) origin; default: the
 * page's). Resolves once the first session is welcomed; rejects when no
 * transport could join (a RallyError when the server refused).
 */
export declare function connect(url: string | undefined, options: ConnectOptions): Promise<RallyClient>;
export default connect;

// ---------------------------------------------------------------------------
// Helpers every game needs
// ---------------------------------------------------------------------------

export interface SnapshotBufferOptions {
  /** Server ticks per second (welcome.tickHz). */
  tickHz: number;
  /** Ticks between snapshots (welcome.snapshotEvery, default 1). */
  snapshotEvery?: number;
  /** Snapshot intervals in the delay before jitter (default 1). */
  intervals?: number;
  /** Multiple of the jitter estimate added to the delay (default 2). */
  jitterFactor?: number;
  /** Lower clamp of the delay (default 0). */
  minDelayMs?: number;
  /** Upper clamp of the delay (default 500). */
  maxDelayMs?: number;
  /** Most the rendered clock may run faster or slower than real time while adapting (default 0.1). */
  maxRateChange?: number;
  /** A transit this far from the estimate resets the mapping (default 1000). */
  resyncMs?: number;
  /** Snapshots kept at most (default 64). */
  capacity?: number;
}

export interface Sample<S> {
  /** The snapshot at or before the rendered moment. */
  from: S;
  /** The one after it (`from` itself when there is none). */
  to: S;
  /** How far from `from` to `to`, in [0, 1]. */
  t: number;
  /** The server tick being shown, rounded (u32): e.g. a shooter's view_tick. */
  tick: number;
}

/**
 * Renders snapshots behind the server by an adaptive delay: one snapshot
 * interval plus a multiple of the arrival jitter (RFC 3550's estimator,
 * quick to rise and slow to fall), clamped. Pure: pass arrival times and
 * `now` from any monotonic ms clock.
 */
export declare class SnapshotBuffer<S extends { tick: number }> {
  constructor(options: SnapshotBufferOptions);
  /** Accepted snapshots, stale ones ignored, samples past the newest, mapping resets. */
  stats: { accepted: number; stale: number; underruns: number; resyncs: number };
  /** Estimated arrival jitter (ms). */
  readonly jitterMs: number;
  /** The render delay aimed for now (ms). */
  readonly delayMs: number;
  /** Snapshots held. */
  readonly size: number;
  /** Adds a snapshot that arrived at `now`; false (ignored) when not newer than one accepted. */
  push(snapshot: S, now: number): boolean;
  /** The snapshots around the rendered moment at `now`, or null before the first. */
  sample(now: number): Sample<S> | null;
  /** Forgets everything (a new session's ticks are unrelated). */
  reset(): void;
}
export declare function lerp(a: number, b: number, t: number): number;
/** Interpolates angles (radians) the shorter way round. */
export declare function lerpAngle(a: number, b: number, t: number): number;

/**
 * Your predicted state: `apply` run over your inputs numbered above ackSeq,
 * oldest first, from `state` (your own state in that snapshot). `apply` is
 * the game's step for one input and must return a new state.
 */
export declare function predict<S>(
  state: S,
  ackSeq: number,
  client: { unackedInputs(ackSeq: number): SentInput[] },
  apply: (state: S, input: Uint8Array) => S,
): S;

// ---------------------------------------------------------------------------
// Codec, policies and building blocks (pure; for tests and other tools)
// ---------------------------------------------------------------------------

/** Error code by name (ErrorCode.resume_failed === 16), from ERROR_NAMES. */
export declare const ErrorCode: Readonly<Record<ErrorName, number>>;
/** Codes after which the client does not reconnect. */
export declare const NO_RETRY_CODES: readonly number[];
export declare const INPUT_REDUNDANCY = 4;
export declare const MAX_INPUTS_PER_MESSAGE = 8;
export declare const MAX_ROOM_BYTES = 32;
export declare const MAX_NAME_BYTES = 24;
/** Reliable messages kept for replay after a resume. */
export declare const APP_REPLAY_KEEP = 256;

export declare class DecodeError extends Error {
  constructor(message: string);
}
export declare class RallyError extends Error {
  constructor(code: number, reason?: string);
  code: number;
  codeName: string;
  reason: string;
}
/** Cluster mode: a `Redirect` answered Hello; connect() follows it. */
export declare class RedirectError extends RallyError {
  constructor(redirect: RedirectMsg);
  redirect: RedirectMsg;
}

export declare function checkRoom(room: unknown): string | null;
export declare function checkName(name: unknown): string | null;
export declare function truncateUtf8(s: string, maxBytes: number): string;
export declare function encodeHello(room: string, name: string, app?: Uint8Array, version?: number): Uint8Array;
/** Bytes of an Input message carrying these inputs. */
export declare function inputMessageSize(inputs: readonly Uint8Array[]): number;
export declare function encodeInput(newestSeq: number, inputsNewestFirst: readonly Uint8Array[]): Uint8Array;
/** InputAck (0x08): acknowledges snapshotTick, carries 0-8 inputs (PROTOCOL.md §4). */
export declare function encodeInputAck(snapshotTick: number, newestSeq: number, inputsNewestFirst: readonly Uint8Array[]): Uint8Array;
/** Makes the payload of a Rally delta (codec 0) from the baseline's; throws DecodeError (PROTOCOL.md §5.2). */
export declare function applyRallyDelta(base: Uint8Array, delta: Uint8Array): Uint8Array;
export declare function encodePing(clientTimeUs: number | bigint): Uint8Array;
export declare function encodeLeave(): Uint8Array;
export declare function encodeResume(token: Uint8Array, lastSeq: number): Uint8Array;
/** App (0x06), or AppUnreliable (0x07) when `reliable` is false. */
export declare function encodeApp(payload: Uint8Array, reliable?: boolean): Uint8Array;
export declare function encodeFrame(msg: Uint8Array): Uint8Array;
/** Strict: DecodeError on truncation, trailing bytes, unknown types, invalid UTF-8. */
export declare function decodeServerMessage(data: ArrayBuffer | ArrayBufferView): ServerMessage;
/** Whether the message counts for Resume.last_seq (wire.js NUMBERED). */
export declare function isNumbered(msg: ServerMessage): boolean;
/** Reassembles u16-length-prefixed frames from a byte stream. */
export declare class FrameDecoder {
  push(chunk: ArrayBuffer | ArrayBufferView): Uint8Array[];
  readonly pending: number;
}

/** A numbered reliable message. */
export interface Numbered { seq: number; payload: Uint8Array }
/** Numbering and replay of reliable messages (PROTOCOL.md §7.2); RallyClient uses one. */
export declare class AppOutbox {
  constructor(capacity?: number);
  /** Number of the newest message (0: none). */
  readonly seq: number;
  push(payload: Uint8Array): number;
  markWritten(seq: number): void;
  /** After a resume: what to send again and how many are lost. */
  resume(clientSeq: number): { resend: Numbered[]; lost: number };
  /** After a fresh join: restarts numbering; returns how many were never written. */
  restart(): number;
}

export interface Endpoints {
  origin: string;
  webTransportUrl: string;
  webSocketUrl: string;
  /** `http(s)://HOST:PORT/rally/http`, where HTTP streaming sessions open. */
  httpUrl: string;
  certHashUrl: string;
  useCertHash: boolean;
  /** Hex digests already known for this node (from /rooms): /cert-hash is not fetched. */
  certHashes?: string[];
}
export interface TransportMemory { winner: TransportKind; at: number; reason?: string | null }
export declare function endpoints(url: string, webTransportUrl?: string): Endpoints;
export declare function planAuto(args: {
  hasWebTransport: boolean;
  memory: TransportMemory | null;
  now: number;
  reprobeAfterMs: number;
  secureContext?: boolean;
}): { webTransport: boolean; webSocket: boolean; reason: string | null };
/** Digests to pin from a /cert-hash body: every sha-256 entry of `hashes`, else the top-level one. */
export declare function certHashesFromJson(body: unknown): { bytes: Uint8Array; notAfterUnix: number | null }[];
export declare function hexToBytes(hex: unknown): Uint8Array | null;
/** `url` with `?token=` set (unchanged when token is empty). */
export declare function withToken(url: string, token: string | null | undefined): string;
/** The Rally error code of a close code 4001-4999, else null. */
export declare function codeFromClose(closeCode: number | null | undefined): number | null;
export declare function backoffDelay(attempt: number, opts?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
export declare function mayRetry(code: number): boolean;
export declare class RttEstimator {
  rtt: number | null;
  jitter: number;
  samples: number;
  sample(ms: number): void;
}
