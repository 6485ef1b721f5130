//! The admin page's data: `GET /admin/api/state` (this node, the nodes,
//! rooms, players with their transport, RTT and jitter, and a short history
//! of server-wide samples for the page's charts). Off unless
//! `--admin-token` is set.
//!
//! Runtime glue, read-only: it reads the registries ([`LiveSessions`],
//! [`Rooms`], [`Metrics`]) and never changes them. The history is taken by
//! one sampler task ([`sample`]) once a second from counters that exist
//! anyway, so an admin page costs nothing per message; the page itself
//! (`client/admin.html`) holds no data.
//!
//! [`LiveSessions`]: crate::session::live::LiveSessions
//! [`Rooms`]: crate::room::Rooms

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::kind::TransportKind;
use crate::metrics::{Histogram, HistogramValue};
use crate::shared::Shared;

/// How often the sampler takes a sample.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Samples kept: five minutes at one a second.
pub const SERIES_LEN: usize = 300;

const TRANSPORTS: [TransportKind; 3] = [
    TransportKind::WebTransport,
    TransportKind::WebSocket,
    TransportKind::Http,
];

/// The admin token and the sampled history.
pub struct Admin {
    /// SHA-256 of the token: requests are compared digest to digest, so
    /// neither the content nor the length of the token leaks through time.
    digest: [u8; 32],
    // std Mutex: a push or a copy of at most SERIES_LEN samples, once a
    // second and per API request, never across .await.
    series: Mutex<VecDeque<Sample>>,
    /// Cluster mode: the other nodes as the sampler last read them from
    /// the registry (the API answers without waiting on Redis).
    cluster_nodes: Mutex<Vec<serde_json::Value>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin { .. }")
    }
}

/// One point of the charts' history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time of the sample, in milliseconds.
    pub t: u64,
    /// Sessions open now, by transport (`webtransport`, `websocket`, `http`).
    pub sessions: BTreeMap<&'static str, u64>,
    /// Protocol messages per second since the previous sample, all
    /// transports: received from clients, and sent to them.
    pub messages_in_per_sec: f64,
    pub messages_out_per_sec: f64,
    /// Tick duration percentiles over the ticks since the previous sample,
    /// in milliseconds; `None` when no room ticked.
    pub tick_p50_ms: Option<f64>,
    pub tick_p99_ms: Option<f64>,
    /// The process's CPU time over the interval, in percent of one core.
    pub cpu: Option<f64>,
}

impl Admin {
    pub fn new(token: &str) -> Admin {
        Admin {
            // Trimmed as the request's token is: HTTP strips a header
            // value's surrounding whitespace.
            digest: Sha256::digest(token.trim().as_bytes()).into(),
            series: Mutex::new(VecDeque::with_capacity(SERIES_LEN)),
            cluster_nodes: Mutex::new(Vec::new()),
        }
    }

    /// Whether `headers` carry `Authorization: Bearer TOKEN` with this
    /// token (RFC 6750 §2.1; the scheme is case-insensitive, RFC 9110
    /// §11.1).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = value.as_bytes().split_first_chunk::<7>() else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(token.trim_ascii()).into();
        digest.ct_eq(&self.digest).into()
    }

    fn push(&self, sample: Sample) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.len() == SERIES_LEN {
            series.pop_front();
        }
        series.push_back(sample);
    }

    /// The samples kept, oldest first.
    pub fn series(&self) -> Vec<Sample> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.iter().cloned().collect()
    }

    fn cpu(&self) -> Option<f64> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.back().and_then(|s| s.cpu)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sessions, rooms and players on this node now.
struct Counts {
    sessions: usize,
    rooms: usize,
    players: usize,
}

fn counts(shared: &Shared) -> Counts {
    let totals = shared.live.totals();
    Counts {
        sessions: shared.live.len(),
        rooms: shared.rooms.len(),
        players: totals.iter().map(|t| t.players as usize).sum(),
    }
}

/// This node's entry of [`nodes`].
fn local_node(shared: &Shared) -> serde_json::Value {
    let c = counts(shared);
    let cpu = shared.admin.as_ref().and_then(|a| a.cpu());
    serde_json::json!({
        "id": shared.node.id,
        "url": shared.node.url,
        "wt_url": shared.node.wt_url,
        "sessions": c.sessions,
        "rooms": c.rooms,
        "players": c.players,
        "cpu": cpu,
        "draining": shared.shutdown.is_cancelled(),
        "local": true,
    })
}

/// Every node the admin page lists, each `{id, url, wt_url, sessions,
/// rooms, players, cpu, draining, local}` (`cpu` in percent of one core or
/// null): this node, then in cluster mode the others as the registry had
/// them at the last sample (PROTOCOL.md §13.1).
pub fn nodes(shared: &Shared) -> Vec<serde_json::Value> {
    let mut nodes = vec![local_node(shared)];
    if let Some(admin) = &shared.admin {
        let others = admin
            .cluster_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        nodes.extend(others.iter().filter(|n| n["local"] != true).cloned());
    }
    nodes
}

/// Cluster mode: reads the other nodes from the registry for [`nodes`].
async fn refresh_cluster_nodes(shared: &Arc<Shared>, admin: &Admin) {
    if shared.cluster.is_none() {
        return;
    }
    let mut list = crate::cluster::http::nodes_json(shared).await;
    for n in &mut list {
        // The registry counts cores; the page shows percent of one.
        if let Some(cores) = n["cpu"].as_f64() {
            n["cpu"] = ((cores * 1000.0).round() / 10.0).into();
        }
    }
    *admin
        .cluster_nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = list;
}

/// The body of `GET /admin/api/state`.
pub fn state(shared: &Shared) -> serde_json::Value {
    let now = unix_ms();
    let sessions = shared.live.list();
    let game = shared.rooms.game_name();
    let mut per_room: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sessions {
        if let Some(room) = &s.room {
            *per_room.entry(room).or_default() += 1;
        }
    }
    let names = shared.rooms.names();
    let rooms: Vec<_> = names
        .iter()
        .map(|name| {
            serde_json::json!({
                "name": name,
                "players": per_room.get(name.as_str()).copied().unwrap_or(0),
                "game": game,
            })
        })
        .collect();
    let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
    let players: Vec<_> = sessions
        .iter()
        .filter(|s| s.player_id.is_some())
        .map(|s| {
            serde_json::json!({
                "session": s.id,
                "room": s.room,
                "id": s.player_id,
                "name": s.player_name,
                "transport": s.transport,
                "rtt_ms": ms(s.rtt_us),
                "jitter_ms": ms(s.jitter_us),
                "remote": s.remote,
                "connected_for_s": now.saturating_sub(s.opened_at_unix_ms) as f64 / 1000.0,
                "messages_in": s.messages_in,
                "messages_out": s.messages_out,
            })
        })
        .collect();
    let mut node = local_node(shared);
    if let Some(obj) = node.as_object_mut() {
        obj.insert(
            "cert_sha256".into(),
            shared.certs.current().sha256_hex().into(),
        );
        obj.insert("game".into(), game.into());
        obj.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    let series = shared
        .admin
        .as_ref()
        .map(|a| a.series())
        .unwrap_or_default();
    serde_json::json!({
        "now": now,
        "sample_period_ms": SAMPLE_PERIOD.as_millis() as u64,
        "node": node,
        "nodes": nodes(shared),
        "rooms": rooms,
        "players": players,
        "series": series,
    })
}

/// The `q` quantile (0..=1) of the observations between two reads of one
/// histogram, interpolated linearly inside the bucket that holds it (as
/// Prometheus' `histogram_quantile`); observations above the last bound
/// report that bound. `None` without observations in between.
pub fn quantile(prev: &HistogramValue, now: &HistogramValue, q: f64) -> Option<f64> {
    let counts: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(i, &(bound, n))| {
            let before = prev.buckets.get(i).map_or(0, |&(_, p)| p);
            (bound, n.saturating_sub(before))
        })
        .collect();
    let total: u64 = counts.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    let last_finite = counts
        .iter()
        .rev()
        .map(|&(b, _)| b)
        .find(|&b| b < f64::MAX)
        .unwrap_or(0.0);
    for &(bound, n) in &counts {
        if n > 0 && (below + n) as f64 >= rank {
            if bound == f64::MAX {
                return Some(last_finite);
            }
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (bound - lower) * within);
        }
        below += n;
        lower = bound;
    }
    Some(last_finite)
}

/// The process's user + system CPU time.
fn cpu_time() -> Option<Duration> {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the pointer it is given,
    // which points at a live, writable value of that type.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// What the previous sample read, to take differences from.
struct Previous {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
    ticks: HistogramValue,
    cpu: Option<Duration>,
}

fn read(shared: &Shared, tick: &Histogram) -> Previous {
    let totals = shared.live.totals();
    Previous {
        at: Instant::now(),
        messages_in: totals.iter().map(|t| t.messages_in).sum(),
        messages_out: totals.iter().map(|t| t.messages_out).sum(),
        ticks: tick.read(),
        cpu: cpu_time(),
    }
}

fn take(shared: &Shared, prev: &Previous, now: &Previous) -> Sample {
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let ms = |s: Option<f64>| s.map(|s| s * 1000.0);
    let cpu = match (prev.cpu, now.cpu) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / secs * 100.0),
        _ => None,
    };
    Sample {
        t: unix_ms(),
        sessions: TRANSPORTS
            .iter()
            .map(|&k| {
                let open = shared.metrics.transport(k).sessions_active.load(Relaxed);
                (k.label(), open)
            })
            .collect(),
        messages_in_per_sec: rate(prev.messages_in, now.messages_in),
        messages_out_per_sec: rate(prev.messages_out, now.messages_out),
        tick_p50_ms: ms(quantile(&prev.ticks, &now.ticks, 0.5)),
        tick_p99_ms: ms(quantile(&prev.ticks, &now.ticks, 0.99)),
        cpu,
    }
}

/// The sampler: once a [`SAMPLE_PERIOD`], until shutdown, appends a
/// [`Sample`] to the admin history, so a freshly opened page has five
/// minutes of charts. Per sample: a walk over the live sessions' counters
/// and a read of the tick histogram; nothing per message.
pub async fn sample(shared: Arc<Shared>) {
    let Some(admin) = shared.admin.as_ref() else {
        return;
    };
    let span = tracing::info_span!("admin_sampler");
    async {
        let tick = &shared.metrics.tick_duration;
        let mut prev = read(&shared, tick);
        let mut interval = tokio::time::interval(SAMPLE_PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shared.shutdown.cancelled() => break,
            }
            let now = read(&shared, tick);
            admin.push(take(&shared, &prev, &now));
            prev = now;
            refresh_cluster_nodes(&shared, admin).await;
        }
        tracing::debug!("admin sampler stopped: shutting down");
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            http::HeaderValue::from_bytes(auth).unwrap(),
        );
        h
    }

    #[test]
    fn only_the_bearer_token_itself_is_authorized() {
        let admin = Admin::new("s3cret");
        assert!(admin.authorized(&headers(b"Bearer s3cret")));
        assert!(admin.authorized(&headers(b"bearer s3cret")));
        assert!(!admin.authorized(&HeaderMap::new()));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer ",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer",
            b"Bearer S3CRET",
            b"Bearer \xffs3cret",
        ] {
            assert!(!admin.authorized(&headers(wrong)), "{wrong:?}");
        }
    }

    fn value(buckets: &[(f64, u64)]) -> HistogramValue {
        HistogramValue {
            sum_seconds: 0.0,
            count: buckets.iter().map(|b| b.1).sum(),
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn quantiles_come_from_the_observations_between_two_reads() {
        let prev = value(&[(0.001, 10), (0.01, 0), (f64::MAX, 0)]);
        // Since `prev`: 4 in (0, 1 ms], 4 in (1, 10 ms].
        let now = value(&[(0.001, 14), (0.01, 4), (f64::MAX, 0)]);
        assert_eq!(quantile(&prev, &now, 0.5), Some(0.001));
        let p75 = quantile(&prev, &now, 0.75).unwrap();
        assert!((p75 - 0.0055).abs() < 1e-12, "{p75}");
        assert_eq!(quantile(&now, &now, 0.5), None, "no ticks in between");
        let over = value(&[(0.001, 10), (0.01, 0), (f64::MAX, 3)]);
        assert_eq!(
            quantile(&prev, &over, 0.99),
            Some(0.01),
            "+Inf reports the last bound"
        );
    }

    #[test]
    fn the_history_is_bounded() {
        let admin = Admin::new("t");
        for i in 0..SERIES_LEN as u64 + 5 {
            admin.push(Sample {
                t: i,
                sessions: BTreeMap::new(),
                messages_in_per_sec: 0.0,
                messages_out_per_sec: 0.0,
                tick_p50_ms: None,
                tick_p99_ms: None,
                cpu: None,
            });
        }
        let s = admin.series();
        assert_eq!(s.len(), SERIES_LEN);
        assert_eq!(s[0].t, 5, "the oldest went first");
    }
}
