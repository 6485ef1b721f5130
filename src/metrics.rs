//! Process-wide counters, labelled by transport where it matters. Plain
//! atomics: they are bumped on hot paths and read rarely (`/health`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::kind::TransportKind;
use crate::protocol::ErrorCode;

#[derive(Debug, Default)]
pub struct PerTransport {
    pub sessions_opened: AtomicU64,
    pub sessions_active: AtomicU64,
    pub messages_in: AtomicU64,
    pub snapshots_sent: AtomicU64,
    /// WebTransport only: snapshots sent on the stream, because they were too
    /// big for a datagram or because `--wt-snapshots stream` asks for it.
    pub snapshots_on_stream: AtomicU64,
    /// Snapshots a slow peer never got because a newer one replaced them.
    pub snapshots_skipped: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub wt: PerTransport,
    pub ws: PerTransport,
    pub http: PerTransport,
    /// Inputs dropped because a room's command queue was full (not those
    /// over the per-tick budget, which the clients' redundancy re-sends).
    pub inputs_dropped: AtomicU64,
    /// Client messages dropped by the per-session rate limit.
    pub messages_rate_dropped: AtomicU64,
    /// Connections refused by the total or per-IP connection limit.
    pub connections_refused: AtomicU64,
    /// Sessions refused for their Origin (403) or join token (401).
    pub sessions_forbidden: AtomicU64,
    /// Sessions ended by an error, indexed by `ErrorCode as usize`.
    pub errors: [AtomicU64; ErrorCode::ALL.len() + 1],
    /// Refused WebTransport CONNECTs (wrong path).
    pub connect_refused: AtomicU64,
    pub http_requests: AtomicU64,
    /// Game callbacks that panicked (each closed its room).
    pub game_panics: AtomicU64,
    /// Room ticks that ran past the start of the next one.
    pub ticks_overrun: AtomicU64,
    /// Snapshots not sent because the game wrote more than a frame holds.
    pub snapshots_too_large: AtomicU64,
    /// Application messages the game sent that were too large for a frame
    /// (not sent).
    pub app_messages_too_large: AtomicU64,
    /// Unreliable application messages dropped for a slow session (a newer
    /// one took their place).
    pub app_unreliable_dropped: AtomicU64,
    /// Unreliable client messages (inputs, `AppUnreliable`) dropped because
    /// their room's queue was full.
    pub app_messages_dropped: AtomicU64,
}

impl Metrics {
    pub fn transport(&self, kind: TransportKind) -> &PerTransport {
        match kind {
            TransportKind::WebTransport => &self.wt,
            TransportKind::WebSocket => &self.ws,
            TransportKind::Http => &self.http,
        }
    }

    pub fn count_error(&self, code: ErrorCode) {
        self.errors[code.as_u16() as usize].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let t = |p: &PerTransport| {
            serde_json::json!({
                "sessions_opened": p.sessions_opened.load(Relaxed),
                "sessions_active": p.sessions_active.load(Relaxed),
                "messages_in": p.messages_in.load(Relaxed),
                "snapshots_sent": p.snapshots_sent.load(Relaxed),
                "snapshots_on_stream": p.snapshots_on_stream.load(Relaxed),
                "snapshots_skipped": p.snapshots_skipped.load(Relaxed),
            })
        };
        let errors: serde_json::Map<_, _> = ErrorCode::ALL
            .iter()
            .map(|&c| {
                let n = self.errors[c.as_u16() as usize].load(Relaxed);
                (c.name().to_string(), n.into())
            })
            .collect();
        serde_json::json!({
            "webtransport": t(&self.wt),
            "websocket": t(&self.ws),
            "http": t(&self.http),
            "inputs_dropped": self.inputs_dropped.load(Relaxed),
            "messages_rate_dropped": self.messages_rate_dropped.load(Relaxed),
            "connections_refused": self.connections_refused.load(Relaxed),
            "sessions_forbidden": self.sessions_forbidden.load(Relaxed),
            "errors": errors,
            "connect_refused": self.connect_refused.load(Relaxed),
            "http_requests": self.http_requests.load(Relaxed),
            "game_panics": self.game_panics.load(Relaxed),
            "ticks_overrun": self.ticks_overrun.load(Relaxed),
            "snapshots_too_large": self.snapshots_too_large.load(Relaxed),
            "app_messages_too_large": self.app_messages_too_large.load(Relaxed),
            "app_unreliable_dropped": self.app_unreliable_dropped.load(Relaxed),
            "app_messages_dropped": self.app_messages_dropped.load(Relaxed),
        })
    }
}
