//! How a session ends, as its peer sees it: the one place that maps every
//! ending to the `Error` message sent first and the close code and reason
//! of each transport (PROTOCOL.md §6).

use super::error::ErrorCode;
use super::message::{Redirect, ServerMsg};
use crate::kind::TransportKind;

/// An ending the server tells the peer about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent `Leave`.
    Bye,
    /// An error: `Error` with the code, then close code 4000 + code.
    Error(ErrorCode, String),
    /// The server is stopping: `Error shutting_down`, then WebSocket 1001
    /// (RFC 6455 §7.4.1 "going away") or WebTransport 4010.
    Shutdown,
    /// Nothing arrived for the idle timeout: no `Error` (the peer is most
    /// likely gone); WebSocket 4019. WebTransport sessions end by QUIC's
    /// own idle timeout, which closes silently (RFC 9000 §10.1).
    Idle,
    /// Cluster mode: the room is on another node. `Redirect` (naming the
    /// node) instead of `Error`, then close 4020 `moved`.
    Moved(Box<Redirect>),
}

/// A transport's close: code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode {
    /// WebSocket close code, or WebTransport (QUIC application) error code.
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    pub fn error(code: ErrorCode, reason: impl Into<String>) -> Close {
        Close::Error(code, reason.into())
    }

    /// The error code this ending is counted under, if it is an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Close::Bye => None,
            Close::Error(code, _) => Some(*code),
            Close::Shutdown => Some(ErrorCode::ShuttingDown),
            Close::Idle => Some(ErrorCode::IdleTimeout),
            Close::Moved(_) => Some(ErrorCode::Moved),
        }
    }

    /// The `Error` message sent on the reliable channel before closing.
    pub fn message(&self) -> Option<ServerMsg> {
        let (code, reason) = match self {
            Close::Bye | Close::Idle => return None,
            Close::Moved(r) => return Some(ServerMsg::Redirect((**r).clone())),
            Close::Error(code, reason) => (*code, reason.clone()),
            Close::Shutdown => (ErrorCode::ShuttingDown, "server shutting down".into()),
        };
        Some(ServerMsg::Error {
            code: code.as_u16(),
            reason,
        })
    }

    /// The close the transport sends, if any. HTTP streaming has none: its
    /// stream just ends (after the `Error`, PROTOCOL.md §11.4).
    pub fn close_code(&self, kind: TransportKind) -> Option<CloseCode> {
        use TransportKind::{Http, WebSocket as Ws, WebTransport as Wt};
        let (code, reason) = match (self, kind) {
            (_, Http) => return None,
            (Close::Bye, Ws) => (1000, "bye"),
            (Close::Bye, Wt) => (0, "bye"),
            (Close::Shutdown, Ws) => (1001, "server shutting down"),
            (Close::Idle, Wt) => return None,
            (Close::Error(code, _), _) => (code.close_code(), code.name()),
            (Close::Shutdown | Close::Idle | Close::Moved(_), _) => {
                let code = self.code().unwrap_or(ErrorCode::Internal);
                (code.close_code(), code.name())
            }
        };
        Some(CloseCode { code, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransportKind::{WebSocket as Ws, WebTransport as Wt};

    fn close(c: &Close, kind: TransportKind) -> Option<(u16, &'static str)> {
        c.close_code(kind).map(|c| (c.code, c.reason))
    }

    #[test]
    fn every_ending_maps_to_the_documented_message_and_close() {
        assert_eq!(close(&Close::Bye, Ws), Some((1000, "bye")));
        assert_eq!(close(&Close::Bye, Wt), Some((0, "bye")));
        assert_eq!(Close::Bye.message(), None);

        let e = Close::error(ErrorCode::RoomFull, "full");
        assert_eq!(close(&e, Ws), Some((4007, "room_full")));
        assert_eq!(close(&e, Wt), Some((4007, "room_full")));
        assert_eq!(
            e.message(),
            Some(ServerMsg::Error {
                code: 7,
                reason: "full".into()
            })
        );

        assert_eq!(
            close(&Close::Shutdown, Ws),
            Some((1001, "server shutting down"))
        );
        assert_eq!(close(&Close::Shutdown, Wt), Some((4010, "shutting_down")));
        assert!(matches!(
            Close::Shutdown.message(),
            Some(ServerMsg::Error { code: 10, .. })
        ));

        assert_eq!(close(&Close::Idle, Ws), Some((4019, "idle_timeout")));
        assert_eq!(close(&Close::Idle, Wt), None);
        assert_eq!(Close::Idle.message(), None);
    }
}
