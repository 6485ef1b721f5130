// Generated from src/protocol/table.rs by `RALLY_BLESS=1 cargo test wire_js`;
// do not edit. The one source of the message-type table, the numbered
// events and the error codes (PROTOCOL.md §4-§6).

/** Protocol version this client speaks (Hello.version, Resume.version). */
export const PROTOCOL_VERSION = 2;

/** Message type bytes (PROTOCOL.md §4, §5). */
export const MsgType = Object.freeze({
  HELLO: 0x01,
  INPUT: 0x02,
  PING: 0x03,
  LEAVE: 0x04,
  RESUME: 0x05,
  APP: 0x06,
  APP_UNRELIABLE: 0x07,
  INPUT_ACK: 0x08,
  WELCOME: 0x81,
  PLAYER_JOINED: 0x82,
  PLAYER_LEFT: 0x83,
  SNAPSHOT: 0x84,
  PONG: 0x85,
  ERROR: 0x86,
  SERVER_APP: 0x87,
  SERVER_APP_UNRELIABLE: 0x88,
  REDIRECT: 0x89,
  SNAPSHOT_DELTA: 0x8a,
});

/** Server message types that are numbered reliable events (PROTOCOL.md §7.1). */
export const NUMBERED = Object.freeze([0x82, 0x83, 0x87]);

/** Error code → name (PROTOCOL.md §6). */
export const ERROR_NAMES = Object.freeze({
  1: 'bad_message',
  2: 'unsupported_version',
  3: 'unknown_message',
  4: 'message_too_large',
  5: 'unexpected_message',
  6: 'invalid_name',
  7: 'room_full',
  8: 'server_full',
  9: 'too_slow',
  10: 'shutting_down',
  11: 'hello_timeout',
  12: 'internal',
  13: 'rate_limited',
  14: 'unauthorized',
  15: 'token_expired',
  16: 'resume_failed',
  17: 'replaced',
  18: 'join_refused',
  19: 'idle_timeout',
  20: 'moved',
  21: 'unavailable',
});
