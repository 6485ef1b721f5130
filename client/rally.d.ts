// Types for rally.js, the Rally browser client (PROTOCOL.md v1).

export type TransportKind = 'webtransport' | 'websocket';
export type TransportChoice = 'auto' | TransportKind;
/** Where a message arrived: a WebTransport datagram or stream, or a WebSocket message. */
export type Channel = 'datagram' | 'stream' | 'websocket';

export declare const PROTOCOL_VERSION: 1;
export declare const MsgType: Readonly<{
  HELLO: 0x01; INPUT: 0x02; PING: 0x03; LEAVE: 0x04;
  WELCOME: 0x81; PLAYER_JOINED: 0x82; PLAYER_LEFT: 0x83; SNAPSHOT: 0x84; PONG: 0x85; ERROR: 0x86;
}>;
/** Button bits of an input: combine with `|`. */
export declare const Buttons: Readonly<{ UP: 1; DOWN: 2; LEFT: 4; RIGHT: 8; ALL: 15 }>;
export declare const ERROR_NAMES: Readonly<Record<number, string>>;
/** Error codes after which the client does not reconnect (unsupported_version, invalid_name). */
export declare const NO_RETRY_CODES: readonly number[];
export declare const MAX_CLIENT_MESSAGE: 256;
export declare const INPUT_REDUNDANCY: 4;
export declare const MAX_ROOM_BYTES: 32;
export declare const MAX_NAME_BYTES: 24;

export interface Timing {
  /** Head start of WebTransport before WebSocket is also tried (default 300). */
  headStartMs: number;
  /** WebTransport attempt timeout, cert-hash fetch and handshake included (default 2500). */
  webTransportTimeoutMs: number;
  /** WebSocket attempt timeout (default 10000). */
  webSocketTimeoutMs: number;
  /** A remembered "WebSocket won" skips WebTransport for this long (default 10 min). */
  reprobeAfterMs: number;
  /** Ping period (default 250). */
  pingIntervalMs: number;
  /** First reconnect delay before jitter (default 500). */
  reconnectBaseMs: number;
  /** Reconnect delay cap (default 10000). */
  reconnectMaxMs: number;
  /** Inputs kept for prediction replay (default 256). */
  inputHistory: number;
}
export declare const DEFAULTS: Readonly<Timing>;

export interface Welcome {
  type: 'welcome';
  version: number;
  playerId: number;
  tickHz: number;
  snapshotEvery: number;
  arenaW: number;
  arenaH: number;
  /** Arena units per second of held input; one input moves speed / tickHz. */
  speed: number;
  tick: number;
}

export interface PlayerState { id: number; x: number; y: number }

export interface Snapshot {
  type: 'snapshot';
  /** Your last input the server applied (0: none yet). */
  ackSeq: number;
  tick: number;
  /** Server wall clock, microseconds since the Unix epoch. */
  serverTimeUs: number;
  /** Ordered by id. */
  players: PlayerState[];
}

export interface PlayerJoined { type: 'player_joined'; playerId: number; name: string }
export interface PlayerLeft { type: 'player_left'; playerId: number }
export interface Pong { type: 'pong'; clientTimeUs: number; serverTimeUs: number }
export interface ErrorMsg { type: 'error'; code: number; codeName: string; reason: string }
export type ServerMessage = Welcome | PlayerJoined | PlayerLeft | Snapshot | Pong | ErrorMsg;
/** What onEvent receives: roster changes and server errors. */
export type RallyEvent = PlayerJoined | PlayerLeft | ErrorMsg;

export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface StatusEvent {
  state: ClientState;
  transport: TransportKind | null;
  fallbackReason: string | null;
  welcome: Welcome | null;
  client: RallyClient;
  /** 'reconnecting': attempt number (1-based) and the delay before it. */
  attempt?: number;
  delayMs?: number;
  /** 'reconnecting' / 'closed': why. */
  reason?: string;
  /** Set when only fallbackReason changed (the abandoned WebTransport probe finished). */
  fallbackUpdated?: boolean;
}

export interface ConnectOptions extends Partial<Timing> {
  /** Default 'auto': WebTransport first, WebSocket after a head start, first Welcome wins. */
  transport?: TransportChoice;
  /** 1-32 bytes of A-Z a-z 0-9 _ - */
  room: string;
  /** 1-24 bytes of UTF-8, no control characters. */
  name: string;
  /** Default `https://HOST:PORT/rally` of `url`. */
  webTransportUrl?: string;
  /**
   * SHA-256 of the server certificate as 64 hex digits; `false` never pins.
   * Default: fetched from `/cert-hash` when `url` is http (development).
   */
  certificateHash?: string | string[] | false;
  /**
   * Join token (PROTOCOL.md §9), sent as `?token=` on both session URLs. A
   * function is called before every attempt, so it can mint a fresh token;
   * with a fixed string, token_expired ends the client instead of retrying.
   */
  token?: string | (() => string | null | Promise<string | null>);
  /** Reconnect after unexpected drops (default true). */
  reconnect?: boolean;
  /** Called for every applied snapshot (stale, reordered ones are dropped). */
  onSnapshot?: (snapshot: Snapshot, info: { channel: Channel }) => void;
  onEvent?: (event: RallyEvent) => void;
  onStatus?: (status: StatusEvent) => void;
}

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
  inputsSent: number;
  pingsSent: number;
  pongs: number;
}

export interface AttemptReport {
  transport: TransportKind;
  /** WebTransport: the /cert-hash digest was fetched (or not). */
  'cert-hash'?: number;
  'no-cert-hash'?: number;
  open?: number;
  'hello-sent'?: number;
  welcomed?: number;
  failed?: number;
  abandoned?: number;
  error?: string;
}

export declare class RallyClient {
  readonly state: ClientState;
  /** Transport of the current session. */
  readonly transport: TransportKind | null;
  /** Why WebTransport is not in use (null when it is). */
  readonly fallbackReason: string | null;
  /** Whether the WebTransport session pinned the /cert-hash digest. */
  readonly certHashUsed: boolean;
  readonly welcome: Welcome | null;
  readonly playerId: number | null;
  /** Smoothed RTT in ms (null before the first Pong). */
  readonly rtt: number | null;
  /** RTT jitter in ms. */
  readonly jitter: number;
  /** Newest applied snapshot of this session. */
  readonly lastSnapshot: Snapshot | null;
  /** Last Error the server sent, if any. */
  readonly lastError: ErrorMsg | null;
  /** performance.now() when the current session was welcomed. */
  readonly connectedAt: number | null;
  /** Sessions opened so far (1 + reconnects). */
  readonly sessions: number;
  /** Sequence number of the last input sent in this session. */
  readonly inputSeq: number;
  /**
   * How the current session's transport was chosen: per attempt, ms from its
   * start to each stage reached, and the error of a failed one.
   */
  readonly attempts: AttemptReport[];
  /** Counters of the current session. */
  readonly stats: ClientStats;
  /** Sends one frame's buttons (with the previous 3 for redundancy); returns its seq, or 0 when offline. */
  sendInput(buttons: number): number;
  /** Inputs of this session with seq > ackSeq, oldest first (for prediction). */
  unackedInputs(ackSeq: number): { seq: number; buttons: number }[];
  /** Sends Leave and closes; no reconnect follows. */
  close(): Promise<void>;
}

/** Resolves once the first session is welcomed; rejects if neither transport could join. */
export declare function connect(url: string | undefined, options: ConnectOptions): Promise<RallyClient>;
export default connect;

// Codec and helpers (pure; exported for tests and other tools).
export declare class DecodeError extends Error {}
export declare class RallyError extends Error {
  code: number;
  codeName: string;
  reason: string;
}
export declare function checkRoom(room: string): string | null;
export declare function checkName(name: string): string | null;
export declare function truncateUtf8(s: string, maxBytes: number): string;
export declare function encodeHello(room: string, name: string, version?: number): Uint8Array;
export declare function encodeInput(newestSeq: number, buttonsNewestFirst: number[]): Uint8Array;
export declare function encodePing(clientTimeUs: number | bigint): Uint8Array;
export declare function encodeLeave(): Uint8Array;
export declare function encodeFrame(message: Uint8Array): Uint8Array;
export declare function decodeServerMessage(data: Uint8Array | ArrayBuffer | ArrayBufferView): ServerMessage;
export declare class FrameDecoder {
  push(chunk: Uint8Array | ArrayBuffer): Uint8Array[];
  readonly pending: number;
}
export declare function hexToBytes(hex: string): Uint8Array | null;
export declare function endpoints(url: string, webTransportUrl?: string): {
  origin: string; webTransportUrl: string; webSocketUrl: string; certHashUrl: string; useCertHash: boolean;
};
/** Digests to pin from a /cert-hash body: every sha-256 entry of `hashes`, else the top-level one. */
export declare function certHashesFromJson(body: unknown): { bytes: Uint8Array; notAfterUnix: number | null }[];
/** `url` with `?token=` set (unchanged when token is empty). */
export declare function withToken(url: string, token: string | null | undefined): string;
export declare function planAuto(args: {
  hasWebTransport: boolean;
  memory: { winner: TransportKind; at: number; reason?: string | null } | null;
  now: number;
  reprobeAfterMs?: number;
  secureContext?: boolean;
}): { webTransport: boolean; reason: string | null };
export declare function backoffDelay(attempt: number, opts?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
export declare function mayRetry(code: number): boolean;
export declare function codeFromClose(closeCode: number): number | null;
export declare class RttEstimator {
  rtt: number | null;
  jitter: number;
  samples: number;
  sample(ms: number): void;
}
