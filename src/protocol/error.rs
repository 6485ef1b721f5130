//! Error codes a peer can see, and the one mapping from a code to the close
//! code used on both transports.

/// Why the server ended (or refused) a session. Sent in `ServerMsg::Error`
/// and, plus 4000, as the WebSocket close code and the WebTransport
/// (QUIC application) close code. Numbers are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// A message could not be decoded (truncated, bad field, trailing bytes).
    BadMessage = 1,
    /// `Hello` carried a protocol version this server does not speak.
    UnsupportedVersion = 2,
    /// The message type byte is not one the protocol defines.
    UnknownMessage = 3,
    /// A message or frame exceeded the size limit for its channel.
    MessageTooLarge = 4,
    /// A valid message arrived where the protocol does not allow it
    /// (e.g. `Input` before `Hello`, a second `Hello`, text on WebSocket).
    UnexpectedMessage = 5,
    /// Room or player name empty, too long or with forbidden characters.
    InvalidName = 6,
    /// The room has reached its player limit.
    RoomFull = 7,
    /// The server has reached its session limit.
    ServerFull = 8,
    /// The peer did not read fast enough: its connection accepted nothing
    /// for the slow-peer timeout, or it fell more than the replay window
    /// of reliable events behind.
    TooSlow = 9,
    /// The server is shutting down.
    ShuttingDown = 10,
    /// No `Hello` arrived within the handshake timeout.
    HelloTimeout = 11,
    /// A server-side fault; the peer did nothing wrong.
    Internal = 12,
    /// The peer sent messages faster than its rate limit allows, for long
    /// enough that dropping the excess was not enough.
    RateLimited = 13,
    /// The join token does not allow this room.
    Unauthorized = 14,
    /// The join token expired during the session.
    TokenExpired = 15,
    /// `Resume` named an unknown or expired player, or events it missed are
    /// no longer kept. Not fatal: the session stays open for a `Hello`.
    ResumeFailed = 16,
    /// Another session resumed this player; this one is closed.
    Replaced = 17,
    /// The game refused the join; the reason is the game's.
    JoinRefused = 18,
    /// Nothing arrived from the peer for the idle timeout. Sent only as a
    /// WebSocket close code; the player is kept for resume.
    IdleTimeout = 19,
    /// Cluster mode: the room lives on another node. Sent as `Redirect`
    /// (which names the node) rather than `Error`, then close 4020.
    Moved = 20,
    /// Cluster mode: the room cannot be placed now (the cluster's Redis is
    /// unreachable, or the room's node stopped answering and its lease has
    /// not expired yet). Retry after a backoff.
    Unavailable = 21,
}

impl ErrorCode {
    /// Offset added to every code to form the close code. WebSocket reserves
    /// 4000–4999 for applications (RFC 6455 §7.4.2); WebTransport uses the
    /// same number so one table serves both.
    pub const CLOSE_BASE: u16 = 4000;

    pub fn from_u16(v: u16) -> Option<Self> {
        use ErrorCode::*;
        Some(match v {
            1 => BadMessage,
            2 => UnsupportedVersion,
            3 => UnknownMessage,
            4 => MessageTooLarge,
            5 => UnexpectedMessage,
            6 => InvalidName,
            7 => RoomFull,
            8 => ServerFull,
            9 => TooSlow,
            10 => ShuttingDown,
            11 => HelloTimeout,
            12 => Internal,
            13 => RateLimited,
            14 => Unauthorized,
            15 => TokenExpired,
            16 => ResumeFailed,
            17 => Replaced,
            18 => JoinRefused,
            19 => IdleTimeout,
            20 => Moved,
            21 => Unavailable,
            _ => return None,
        })
    }

    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 21] = {
        use ErrorCode::*;
        [
            BadMessage,
            UnsupportedVersion,
            UnknownMessage,
            MessageTooLarge,
            UnexpectedMessage,
            InvalidName,
            RoomFull,
            ServerFull,
            TooSlow,
            ShuttingDown,
            HelloTimeout,
            Internal,
            RateLimited,
            Unauthorized,
            TokenExpired,
            ResumeFailed,
            Replaced,
            JoinRefused,
            IdleTimeout,
            Moved,
            Unavailable,
        ]
    };

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The close code on both transports: WebSocket close frame code and
    /// WebTransport session (QUIC application) error code.
    pub fn close_code(self) -> u16 {
        Self::CLOSE_BASE + self.as_u16()
    }

    /// Inverse of [`ErrorCode::close_code`].
    pub fn from_close_code(code: u64) -> Option<Self> {
        let v = code.checked_sub(Self::CLOSE_BASE as u64)?;
        Self::from_u16(u16::try_from(v).ok()?)
    }

    /// Whether a new session could succeed after this error: not after
    /// those a new `Hello` would meet again (a bad version or name, a token
    /// that does not allow the room, the game's refusal), nor after
    /// `replaced` (another session now owns the player). The browser
    /// client's `NO_RETRY_CODES` is the same list. `token_expired` helps
    /// only a client that can get a fresh token.
    pub fn retry_helps(self) -> bool {
        use ErrorCode::*;
        !matches!(
            self,
            UnsupportedVersion | InvalidName | Unauthorized | Replaced | JoinRefused
        )
    }

    /// Stable lower-case name, used in logs and metrics labels.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadMessage => "bad_message",
            UnsupportedVersion => "unsupported_version",
            UnknownMessage => "unknown_message",
            MessageTooLarge => "message_too_large",
            UnexpectedMessage => "unexpected_message",
            InvalidName => "invalid_name",
            RoomFull => "room_full",
            ServerFull => "server_full",
            TooSlow => "too_slow",
            ShuttingDown => "shutting_down",
            HelloTimeout => "hello_timeout",
            Internal => "internal",
            RateLimited => "rate_limited",
            Unauthorized => "unauthorized",
            TokenExpired => "token_expired",
            ResumeFailed => "resume_failed",
            Replaced => "replaced",
            JoinRefused => "join_refused",
            IdleTimeout => "idle_timeout",
            Moved => "moved",
            Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip_and_stay_in_the_application_range() {
        for v in 1..=21 {
            let code = ErrorCode::from_u16(v).unwrap();
            assert_eq!(code.as_u16(), v);
            let close = code.close_code();
            assert!((4000..5000).contains(&close));
            assert_eq!(ErrorCode::from_close_code(close as u64), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(22), None);
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.as_u16() as usize, i + 1);
        }
        assert_eq!(ErrorCode::from_close_code(1000), None);
    }

    #[test]
    fn the_errors_not_worth_a_retry_are_the_browser_clients() {
        // client/codec.js: NO_RETRY_CODES = Object.freeze((['name', ...]).map(...))
        let js = include_str!("../../client/codec.js");
        let at = js
            .find("NO_RETRY_CODES =")
            .expect("NO_RETRY_CODES in codec.js");
        let list = &js[at..];
        let list = &list[list.find("(['").expect("a list of names") + 2..];
        let list = &list[..list.find(']').unwrap()];
        let mut browser: Vec<&str> = list
            .split(',')
            .map(|n| n.trim().trim_matches('\''))
            .filter(|n| !n.is_empty())
            .collect();
        browser.sort_unstable();
        let mut native: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| !c.retry_helps())
            .map(|c| c.name())
            .collect();
        native.sort_unstable();
        assert_eq!(native, browser);
    }
}
