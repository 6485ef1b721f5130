//! Process-wide counters, labelled by transport where it matters. Plain
//! atomics: they are bumped on hot paths and read rarely (`/health`, and
//! `/metrics` through [`export`]).
//!
//! Nothing here takes a lock or looks anything up per message: a session
//! holds its transport's [`PerTransport`] by reference, histograms are
//! fixed arrays of atomics ([`Histogram`]), and what is summed over
//! sessions is summed at scrape time (`session::live`).

pub mod export;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::kind::TransportKind;
use crate::protocol::ErrorCode;

/// Bucket bounds, in seconds, of round-trip times: 1 ms to 2.5 s.
pub const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
];
/// Bucket bounds, in seconds, of a room tick's duration and lateness: 10 µs
/// to 100 ms (a 60 Hz tick is 16.7 ms).
pub const TICK_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.0167, 0.025,
    0.05, 0.1,
];
/// Bucket bounds, in seconds, of the time from accept to `Welcome`: 1 ms to 10 s.
pub const CONNECT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with fixed buckets, lock-free: an observation
/// is three relaxed atomic adds (its bucket, the count, the sum). Read at
/// scrape time, where a bucket and the count may be one observation apart;
/// the exposition makes them consistent (see [`Histogram::read`]).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every
    /// bound (`+Inf`).
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// What a [`Histogram`] holds at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    pub sum_seconds: f64,
    pub count: u64,
    /// `(upper bound, observations in this bucket)`, not cumulative; the
    /// last bound is `f64::MAX` (`+Inf`).
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // A dozen bounds: a linear scan beats a binary search.
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The count is the sum of the buckets read, so `+Inf` always equals
    /// `_count` in the exposition.
    pub fn read(&self) -> HistogramValue {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        HistogramValue {
            sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// Why a client is not on a faster transport, as it reports it with
/// `fallback=REASON` on its session URL (PROTOCOL.md §1.1). A fixed set, so
/// a client cannot grow the metric's label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FallbackReason {
    /// The browser has no WebTransport API (or the page is not a secure
    /// context).
    WtUnavailable,
    /// WebTransport was tried and failed (handshake refused, certificate,
    /// UDP blocked and the attempt ended with an error).
    WtFailed,
    /// WebTransport was not ready in time: the fallback connected first.
    WtTimeout,
    /// WebSocket was tried and failed too (reported on HTTP streaming).
    WsFailed,
    /// The client remembered an earlier fallback for this server and did
    /// not try the faster transport.
    Remembered,
    /// Any other value.
    Other,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 6] = [
        FallbackReason::WtUnavailable,
        FallbackReason::WtFailed,
        FallbackReason::WtTimeout,
        FallbackReason::WsFailed,
        FallbackReason::Remembered,
        FallbackReason::Other,
    ];

    /// The wire value and metric label.
    pub fn name(self) -> &'static str {
        match self {
            FallbackReason::WtUnavailable => "wt_unavailable",
            FallbackReason::WtFailed => "wt_failed",
            FallbackReason::WtTimeout => "wt_timeout",
            FallbackReason::WsFailed => "ws_failed",
            FallbackReason::Remembered => "remembered",
            FallbackReason::Other => "other",
        }
    }

    /// The reason in a session URL's query string (`fallback=REASON`), if
    /// there is one; an unknown value is [`FallbackReason::Other`].
    pub fn from_query(query: Option<&str>) -> Option<FallbackReason> {
        let value = query?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == "fallback").then_some(v)
        })?;
        Some(
            FallbackReason::ALL
                .into_iter()
                .find(|r| r.name() == value)
                .unwrap_or(FallbackReason::Other),
        )
    }
}

/// Most distinct cluster lease operation names counted; later ones are
/// counted as `other`, so a bug cannot grow the label set without bound.
const MAX_LEASE_OPS: usize = 16;

/// Cluster lease operations: `(op, ok, error)` counts. Process-wide, like
/// the cluster's Redis connection that makes them; a mutex, as an
/// operation is a network round trip to Redis, not a per-message event.
// std Mutex: a short scan of at most MAX_LEASE_OPS entries, never across
// .await.
static LEASE_OPS: Mutex<Vec<(&'static str, u64, u64)>> = Mutex::new(Vec::new());

/// Counts one cluster lease operation (room ownership in Redis, DESIGN.md
/// "Scale") and whether it succeeded; exported as
/// `rally_cluster_lease_ops_total{op, result="ok"|"error"}`. `op` is a
/// short lowercase name (`claim`, `renew`, `release`, ...): anything else,
/// or a name beyond the first 16, is counted as `other`.
pub fn lease_op(op: &str, ok: bool) {
    let valid =
        !op.is_empty() && op.len() <= 32 && op.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let op = if valid { op } else { "other" };
    let mut ops = LEASE_OPS.lock().unwrap_or_else(|e| e.into_inner());
    let i = match ops.iter().position(|(name, ..)| *name == op) {
        Some(i) => i,
        None => {
            let name = if ops.len() < MAX_LEASE_OPS {
                op
            } else {
                "other"
            };
            match ops.iter().position(|(n, ..)| *n == name) {
                Some(i) => i,
                None => {
                    // At most MAX_LEASE_OPS + 1 names are ever leaked.
                    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
                    ops.push((name, 0, 0));
                    ops.len() - 1
                }
            }
        }
    };
    if ok {
        ops[i].1 += 1;
    } else {
        ops[i].2 += 1;
    }
}

/// Every lease operation counted so far: `(op, ok, error)`.
pub fn lease_ops() -> Vec<(&'static str, u64, u64)> {
    let mut ops = LEASE_OPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ops.sort_by_key(|(name, ..)| *name);
    ops
}

#[derive(Debug)]
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
    /// Snapshots the room wrote to the transport itself, from its tick
    /// (a WebSocket frame on plain TCP, a WebTransport datagram), without
    /// waking the session; included in `snapshots_sent`.
    pub snapshots_direct: AtomicU64,
    /// Players resumed on this transport whose last session was on the
    /// same transport.
    pub resumes_same: AtomicU64,
    /// Players resumed on this transport whose last session was on another.
    pub resumes_other: AtomicU64,
    /// Fresh joins whose client reported why it is not on a faster
    /// transport, by [`FallbackReason`].
    pub fallbacks: [AtomicU64; FallbackReason::ALL.len()],
    /// Round-trip time samples of this transport's sessions, one per
    /// session per second (the transport's own estimate).
    pub rtt: Histogram,
    /// From the accept of the connection (or the request, on a connection
    /// that served others first) to the session's `Welcome` written.
    pub connect: Histogram,
}

impl Default for PerTransport {
    fn default() -> Self {
        PerTransport {
            sessions_opened: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_on_stream: AtomicU64::new(0),
            snapshots_skipped: AtomicU64::new(0),
            snapshots_direct: AtomicU64::new(0),
            resumes_same: AtomicU64::new(0),
            resumes_other: AtomicU64::new(0),
            fallbacks: Default::default(),
            rtt: Histogram::new(RTT_BUCKETS),
            connect: Histogram::new(CONNECT_BUCKETS),
        }
    }
}

#[derive(Debug)]
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
    /// Admin API requests refused for a missing or wrong token (401).
    pub admin_refused: AtomicU64,
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
    /// Snapshot deltas encoded (one per distinct baseline per snapshot of
    /// a shared view; one per recipient of a per-player view).
    pub snapshot_deltas_encoded: AtomicU64,
    /// Application messages the game sent that were too large for a frame
    /// (not sent).
    pub app_messages_too_large: AtomicU64,
    /// Unreliable application messages dropped for a slow session (a newer
    /// one took their place).
    pub app_unreliable_dropped: AtomicU64,
    /// Unreliable client messages (inputs, `AppUnreliable`) dropped because
    /// their room's queue was full.
    pub app_messages_dropped: AtomicU64,
    /// How long each room tick took (the game's tick, snapshots, fan-out).
    pub tick_duration: Histogram,
    /// How late each room tick started after its due time.
    pub tick_lateness: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            wt: PerTransport::default(),
            ws: PerTransport::default(),
            http: PerTransport::default(),
            inputs_dropped: AtomicU64::new(0),
            messages_rate_dropped: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            sessions_forbidden: AtomicU64::new(0),
            admin_refused: AtomicU64::new(0),
            errors: Default::default(),
            connect_refused: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
            game_panics: AtomicU64::new(0),
            ticks_overrun: AtomicU64::new(0),
            snapshots_too_large: AtomicU64::new(0),
            snapshot_deltas_encoded: AtomicU64::new(0),
            app_messages_too_large: AtomicU64::new(0),
            app_unreliable_dropped: AtomicU64::new(0),
            app_messages_dropped: AtomicU64::new(0),
            tick_duration: Histogram::new(TICK_BUCKETS),
            tick_lateness: Histogram::new(TICK_BUCKETS),
        }
    }
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

    /// A fresh join on `kind` whose client reported `reason`.
    pub fn count_fallback(&self, kind: TransportKind, reason: FallbackReason) {
        self.transport(kind).fallbacks[reason as usize].fetch_add(1, Relaxed);
    }

    /// A player resumed on `kind`; `previous` carried its last session.
    pub fn count_resume(&self, kind: TransportKind, previous: Option<TransportKind>) {
        let t = self.transport(kind);
        if previous.is_none_or(|p| p == kind) {
            t.resumes_same.fetch_add(1, Relaxed);
        } else {
            t.resumes_other.fetch_add(1, Relaxed);
        }
    }

    /// The `/health` counters (their JSON is read by tests and tools: keep
    /// its keys).
    pub fn snapshot(&self) -> serde_json::Value {
        let t = |p: &PerTransport| {
            serde_json::json!({
                "sessions_opened": p.sessions_opened.load(Relaxed),
                "sessions_active": p.sessions_active.load(Relaxed),
                "messages_in": p.messages_in.load(Relaxed),
                "snapshots_sent": p.snapshots_sent.load(Relaxed),
                "snapshots_on_stream": p.snapshots_on_stream.load(Relaxed),
                "snapshots_skipped": p.snapshots_skipped.load(Relaxed),
                "snapshots_direct": p.snapshots_direct.load(Relaxed),
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
            "snapshot_deltas_encoded": self.snapshot_deltas_encoded.load(Relaxed),
            "app_messages_too_large": self.app_messages_too_large.load(Relaxed),
            "app_unreliable_dropped": self.app_unreliable_dropped.load(Relaxed),
            "app_messages_dropped": self.app_messages_dropped.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_observation_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        let v = h.read();
        assert_eq!(v.count, 4);
        assert_eq!(v.buckets, vec![(0.001, 2), (0.01, 1), (f64::MAX, 1)]);
        assert!((v.sum_seconds - 3.0065).abs() < 1e-9);
    }

    #[test]
    fn fallback_reasons_are_a_fixed_set() {
        let r = |q: &str| FallbackReason::from_query(Some(q));
        assert_eq!(r("fallback=wt_failed"), Some(FallbackReason::WtFailed));
        assert_eq!(
            r("token=x&fallback=wt_unavailable"),
            Some(FallbackReason::WtUnavailable)
        );
        assert_eq!(r("fallback=rm%20-rf"), Some(FallbackReason::Other));
        assert_eq!(r("fallback="), Some(FallbackReason::Other));
        assert_eq!(r("token=x"), None);
        assert_eq!(FallbackReason::from_query(None), None);
        for reason in FallbackReason::ALL {
            assert_eq!(r(&format!("fallback={}", reason.name())), Some(reason));
        }
    }

    #[test]
    fn lease_op_names_are_bounded() {
        lease_op("claim", true);
        lease_op("claim", false);
        lease_op("claim", true);
        lease_op("Bad Name{}", true);
        let ops = lease_ops();
        let get = |op: &str| ops.iter().find(|(n, ..)| *n == op).map(|&(_, a, b)| (a, b));
        assert_eq!(get("claim"), Some((2, 1)));
        assert!(get("other").is_some_and(|(ok, _)| ok >= 1));
        for i in 0..40 {
            lease_op(&format!("op_{}", "x".repeat(i % 30)), true);
        }
        assert!(lease_ops().len() <= MAX_LEASE_OPS + 1);
    }

    #[test]
    fn resumes_are_told_apart_by_the_transport_before() {
        let m = Metrics::default();
        m.count_resume(TransportKind::WebSocket, Some(TransportKind::WebSocket));
        m.count_resume(TransportKind::WebSocket, Some(TransportKind::Http));
        m.count_resume(TransportKind::WebSocket, Some(TransportKind::WebTransport));
        assert_eq!(m.ws.resumes_same.load(Relaxed), 1);
        assert_eq!(m.ws.resumes_other.load(Relaxed), 2);
    }
}
