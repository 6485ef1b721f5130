//! The names the layers share: which transport a session uses and which
//! channel a message travelled on. A leaf: it imports nothing of Rally's, so
//! `metrics`, `session`, `transport` and `client` can all use it without
//! importing each other.

/// The transport under a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    WebTransport,
    WebSocket,
    /// HTTP streaming: a response body down, `POST`s up (PROTOCOL.md §11).
    Http,
}

impl TransportKind {
    /// Stable lower-case name, used in logs, JSON and metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::WebTransport => "webtransport",
            TransportKind::WebSocket => "websocket",
            TransportKind::Http => "http",
        }
    }
}

/// Which channel a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Ordered and complete: the WebTransport stream, or any WebSocket message.
    Reliable,
    /// May be lost or reordered: WebTransport datagrams.
    Unreliable,
}
