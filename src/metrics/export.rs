//! `GET /metrics`: every counter of a server in the OpenMetrics text format
//! (which Prometheus scrapes), encoded by `prometheus-client`.
//!
//! Nothing is copied into the crate's own metric types: the counters stay
//! Rally's atomics ([`Metrics`], [`LiveSessions`]) and a collector reads
//! them when a scrape asks. Label values come from fixed sets (transports,
//! error codes, fallback reasons, lease operations), never from a client.
//! The names are listed in README.md ("Metrics") and queried by
//! `docs/grafana-dashboard.json`.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{lease_ops, FallbackReason, Histogram, Metrics};
use crate::kind::TransportKind;
use crate::protocol::ErrorCode;
use crate::session::live::Totals;
use crate::shared::Shared;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The transports and their label values, in the order of
/// [`LiveSessions::totals`](crate::session::live::LiveSessions::totals).
const TRANSPORTS: [(TransportKind, &str); 3] = [
    (TransportKind::WebTransport, "wt"),
    (TransportKind::WebSocket, "ws"),
    (TransportKind::Http, "http"),
];

/// The server's metrics now, as OpenMetrics text.
pub fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(shared.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail, and no collector below returns an
    // error of its own.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

struct Scrape(Arc<Shared>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

/// One metric family at a time.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    /// A counter (the encoder adds `_total` to `name`), one sample per
    /// label set.
    fn counter<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'l str, &'l str)>, u64)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counter1(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        self.counter(name, help, [(vec![], v)])
    }

    fn gauge<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'l str, &'l str)>, u64)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn histogram<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'l str, &'l str)>, &'l Histogram)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in samples {
            let v = h.read();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(v.sum_seconds, v.count, &v.buckets, None)?;
        }
        Ok(())
    }
}

/// Per transport: `(labels, value)` for each.
fn per_transport<'m>(
    m: &'m Metrics,
    f: impl Fn(&'m super::PerTransport, usize) -> u64 + 'm,
) -> impl Iterator<Item = (Vec<(&'static str, &'static str)>, u64)> + 'm {
    TRANSPORTS
        .iter()
        .enumerate()
        .map(move |(i, &(kind, label))| (vec![("transport", label)], f(m.transport(kind), i)))
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let shared = &self.0;
        let m = &*shared.metrics;
        let totals: [Totals; 3] = shared.live.totals();
        let mut out = Out(encoder);
        let o = &mut out;

        // Sessions.
        o.counter(
            "rally_sessions_opened",
            "Sessions opened, by transport.",
            per_transport(m, |t, _| t.sessions_opened.load(Relaxed)),
        )?;
        o.gauge(
            "rally_sessions_open",
            "Sessions open now, by transport.",
            per_transport(m, |t, _| t.sessions_active.load(Relaxed)),
        )?;
        o.gauge(
            "rally_players",
            "Sessions carrying a player now (joined or resumed), by transport.",
            per_transport(m, |_, i| totals[i].players),
        )?;
        o.gauge(
            "rally_rooms",
            "Rooms open now.",
            [(vec![], shared.rooms.len() as u64)],
        )?;
        o.histogram(
            "rally_connect_seconds",
            "From the connection's accept (or the request's arrival on a reused connection) to the session's Welcome sent, by transport.",
            TRANSPORTS
                .iter()
                .map(|&(k, l)| (vec![("transport", l)], &m.transport(k).connect)),
        )?;

        // Traffic: protocol messages (PROTOCOL.md §3), without framing.
        o.counter(
            "rally_messages_in",
            "Protocol messages received from clients, by transport.",
            per_transport(m, |_, i| totals[i].messages_in),
        )?;
        o.counter(
            "rally_messages_out",
            "Protocol messages sent to clients, by transport.",
            per_transport(m, |_, i| totals[i].messages_out),
        )?;
        o.counter(
            "rally_bytes_in",
            "Bytes of protocol messages received (no transport framing), by transport.",
            per_transport(m, |_, i| totals[i].bytes_in),
        )?;
        o.counter(
            "rally_bytes_out",
            "Bytes of protocol messages sent (no transport framing), by transport.",
            per_transport(m, |_, i| totals[i].bytes_out),
        )?;
        o.counter(
            "rally_snapshots_sent",
            "Snapshots sent, by transport.",
            per_transport(m, |t, _| t.snapshots_sent.load(Relaxed)),
        )?;
        o.counter(
            "rally_snapshots_skipped",
            "Snapshots a slow session never got because a newer one replaced them, by transport.",
            per_transport(m, |t, _| t.snapshots_skipped.load(Relaxed)),
        )?;
        o.counter(
            "rally_snapshots_direct",
            "Snapshots the room wrote to the transport itself without waking the session (included in rally_snapshots_sent), by transport.",
            per_transport(m, |t, _| t.snapshots_direct.load(Relaxed)),
        )?;
        o.counter(
            "rally_snapshots_on_stream",
            "WebTransport snapshots sent on the reliable stream rather than as datagrams.",
            per_transport(m, |t, _| t.snapshots_on_stream.load(Relaxed)),
        )?;
        o.histogram(
            "rally_rtt_seconds",
            "Round-trip time samples, one per session per second: QUIC's smoothed RTT (wt), the kernel's TCP_INFO srtt (ws, http).",
            TRANSPORTS
                .iter()
                .map(|&(k, l)| (vec![("transport", l)], &m.transport(k).rtt)),
        )?;

        // Errors, resumes, fallbacks.
        o.counter(
            "rally_errors",
            "Sessions ended by an error, by its code (PROTOCOL.md §6).",
            ErrorCode::ALL.iter().map(|&c| {
                (
                    vec![("code", c.name())],
                    m.errors[c.as_u16() as usize].load(Relaxed),
                )
            }),
        )?;
        let resumes = TRANSPORTS.iter().flat_map(|&(k, l)| {
            let t = m.transport(k);
            [
                (
                    vec![("transport", l), ("previous", "same")],
                    t.resumes_same.load(Relaxed),
                ),
                (
                    vec![("transport", l), ("previous", "other")],
                    t.resumes_other.load(Relaxed),
                ),
            ]
        });
        o.counter(
            "rally_resumes",
            "Players resumed, by the transport they resumed on and whether their previous session was on the same transport or another.",
            resumes,
        )?;
        let fallbacks = TRANSPORTS.iter().flat_map(|&(k, l)| {
            let t = m.transport(k);
            FallbackReason::ALL.into_iter().map(move |r| {
                (
                    vec![("transport", l), ("reason", r.name())],
                    t.fallbacks[r as usize].load(Relaxed),
                )
            })
        });
        o.counter(
            "rally_fallbacks",
            "Fresh joins whose client reported why it is not on a faster transport (fallback= on its session URL, PROTOCOL.md §1.1).",
            fallbacks,
        )?;

        // Rooms.
        o.histogram(
            "rally_tick_duration_seconds",
            "How long each room tick took (the game's tick, snapshots, fan-out).",
            [(vec![], &m.tick_duration)],
        )?;
        o.histogram(
            "rally_tick_lateness_seconds",
            "How late each room tick started after its due time.",
            [(vec![], &m.tick_lateness)],
        )?;
        o.counter1(
            "rally_ticks_overrun",
            "Room ticks that ran past the start of the next one.",
            m.ticks_overrun.load(Relaxed),
        )?;
        o.counter1(
            "rally_game_panics",
            "Game callbacks that panicked (each closed its room).",
            m.game_panics.load(Relaxed),
        )?;

        // Drops and refusals.
        o.counter1(
            "rally_inputs_dropped",
            "Inputs dropped because a room's command queue was full.",
            m.inputs_dropped.load(Relaxed),
        )?;
        o.counter1(
            "rally_messages_rate_dropped",
            "Client messages dropped by the per-session rate limit.",
            m.messages_rate_dropped.load(Relaxed),
        )?;
        o.counter1(
            "rally_app_messages_dropped",
            "Unreliable client messages dropped because their room's queue was full.",
            m.app_messages_dropped.load(Relaxed),
        )?;
        o.counter1(
            "rally_app_unreliable_dropped",
            "Unreliable application messages not sent to a slow session (a newer one took their place).",
            m.app_unreliable_dropped.load(Relaxed),
        )?;
        o.counter1(
            "rally_snapshot_deltas_encoded",
            "Snapshot deltas encoded: one per distinct client baseline per snapshot (shared views), one per recipient (per-player views).",
            m.snapshot_deltas_encoded.load(Relaxed),
        )?;
        o.counter1(
            "rally_snapshots_too_large",
            "Snapshots not sent because the game wrote more than a frame holds.",
            m.snapshots_too_large.load(Relaxed),
        )?;
        o.counter1(
            "rally_app_messages_too_large",
            "Application messages from the game too large for a frame (not sent).",
            m.app_messages_too_large.load(Relaxed),
        )?;
        o.counter1(
            "rally_connections_refused",
            "Connections refused by the total or per-IP connection limit.",
            m.connections_refused.load(Relaxed),
        )?;
        o.counter1(
            "rally_sessions_forbidden",
            "Sessions refused for their Origin (403) or join token (401).",
            m.sessions_forbidden.load(Relaxed),
        )?;
        o.counter1(
            "rally_admin_refused",
            "Admin API requests refused for a missing or wrong token (401).",
            m.admin_refused.load(Relaxed),
        )?;
        o.counter1(
            "rally_connect_refused",
            "WebTransport CONNECTs refused (wrong path).",
            m.connect_refused.load(Relaxed),
        )?;
        o.counter1(
            "rally_http_requests",
            "HTTP requests over TCP (HTTP/1.1 and HTTP/2).",
            m.http_requests.load(Relaxed),
        )?;

        // Cluster.
        o.counter(
            "rally_cluster_lease_ops",
            "Cluster lease operations on Redis, by operation and result (ok, error).",
            lease_ops().into_iter().flat_map(|(op, ok, err)| {
                [
                    (vec![("op", op), ("result", "ok")], ok),
                    (vec![("op", op), ("result", "error")], err),
                ]
            }),
        )?;
        Ok(())
    }
}
