//! The live sessions of a server: who is connected, over what, from where,
//! with which round-trip time, and how much each has sent and received.
//!
//! The registry is touched when a session opens and ends, and when it is
//! read (a `/metrics` scrape, an admin listing); never per message. Per
//! message, a session bumps its own [`SessionInfo`] counters: atomics that
//! only its task and its room's fan-out write, so no counter shared by all
//! sessions sits on the send path. Per-transport totals are summed at
//! scrape time over the live sessions plus what ended sessions left
//! ([`LiveSessions::totals`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::kind::TransportKind;

/// `rtt_us` / `jitter_us` before the first sample.
const UNKNOWN: u64 = u64::MAX;

/// One round-trip estimate of a session's path, as its transport keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRtt {
    /// The smoothed round-trip time (QUIC's `smoothed_rtt`, TCP's `srtt`).
    pub rtt: Duration,
    /// The transport's own variation estimate, when it keeps one (TCP's
    /// `rttvar`); without it the session derives jitter from successive
    /// samples.
    pub var: Option<Duration>,
}

/// The player a session carries, once it has joined or resumed.
#[derive(Debug, Clone)]
struct Player {
    room: String,
    name: String,
    id: u32,
}

/// One live session, shared by its task, its room's fan-out (through the
/// counting sink) and the registry.
#[derive(Debug)]
pub struct SessionInfo {
    id: u64,
    transport: TransportKind,
    remote: Option<SocketAddr>,
    opened_at_unix_ms: u64,
    player: OnceLock<Player>,
    rtt_us: AtomicU64,
    jitter_us: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSnapshot {
    pub id: u64,
    pub transport: TransportKind,
    /// The peer's address (the TCP or QUIC peer; a proxy's when behind one).
    pub remote: Option<String>,
    pub opened_at_unix_ms: u64,
    /// `None` until the session's `Hello` or `Resume` is accepted.
    pub room: Option<String>,
    pub player_id: Option<u32>,
    pub player_name: Option<String>,
    /// The latest round-trip time, `None` before the first sample.
    pub rtt_us: Option<u64>,
    pub jitter_us: Option<u64>,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Bytes of protocol messages (PROTOCOL.md §3), without any transport
    /// framing.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn known(v: u64) -> Option<u64> {
    (v != UNKNOWN).then_some(v)
}

impl SessionInfo {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// Records the player this session carries (once).
    pub fn set_player(&self, room: &str, name: &str, id: u32) {
        let _ = self.player.set(Player {
            room: room.to_string(),
            name: name.to_string(),
            id,
        });
    }

    pub fn has_player(&self) -> bool {
        self.player.get().is_some()
    }

    #[inline]
    pub fn count_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    #[inline]
    pub fn count_out(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// Takes a round-trip sample. Jitter is the transport's variation when
    /// it has one, else the mean deviation of successive samples, smoothed
    /// as RFC 3550 §6.4.1 smooths interarrival jitter (gain 1/16). Only the
    /// session's task calls this.
    pub fn record_rtt(&self, sample: PathRtt) {
        let rtt = sample.rtt.as_micros().min(UNKNOWN as u128 - 1) as u64;
        let jitter = match sample.var {
            Some(var) => var.as_micros().min(UNKNOWN as u128 - 1) as u64,
            None => match (
                known(self.rtt_us.load(Relaxed)),
                known(self.jitter_us.load(Relaxed)),
            ) {
                (None, _) => 0,
                (Some(prev), j) => {
                    let d = rtt.abs_diff(prev) as i64;
                    let j = j.unwrap_or(0) as i64;
                    (j + (d - j) / 16) as u64
                }
            },
        };
        self.rtt_us.store(rtt, Relaxed);
        self.jitter_us.store(jitter, Relaxed);
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        let player = self.player.get();
        SessionSnapshot {
            id: self.id,
            transport: self.transport,
            remote: self.remote.map(|a| a.to_string()),
            opened_at_unix_ms: self.opened_at_unix_ms,
            room: player.map(|p| p.room.clone()),
            player_id: player.map(|p| p.id),
            player_name: player.map(|p| p.name.clone()),
            rtt_us: known(self.rtt_us.load(Relaxed)),
            jitter_us: known(self.jitter_us.load(Relaxed)),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

/// Messages and bytes of one transport's sessions, live and ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Live sessions of this transport that carry a player.
    pub players: u64,
}

impl Totals {
    fn add(&mut self, s: &SessionInfo) {
        self.messages_in += s.messages_in.load(Relaxed);
        self.messages_out += s.messages_out.load(Relaxed);
        self.bytes_in += s.bytes_in.load(Relaxed);
        self.bytes_out += s.bytes_out.load(Relaxed);
    }
}

fn slot(kind: TransportKind) -> usize {
    match kind {
        TransportKind::WebTransport => 0,
        TransportKind::WebSocket => 1,
        TransportKind::Http => 2,
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<u64, Arc<SessionInfo>>,
    /// What the ended sessions of each transport sent and received.
    ended: [Totals; 3],
}

/// Every live session of a server, by id.
#[derive(Debug, Default)]
pub struct LiveSessions {
    next_id: AtomicU64,
    // std Mutex: an insert, a remove or a walk over the map, never held
    // across .await, never taken per message.
    inner: Mutex<Inner>,
}

impl LiveSessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned map is still whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new session; it stays listed until the returned guard
    /// is dropped.
    pub fn open(
        self: &Arc<Self>,
        transport: TransportKind,
        remote: Option<SocketAddr>,
    ) -> LiveSession {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let opened_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let info = Arc::new(SessionInfo {
            id,
            transport,
            remote,
            opened_at_unix_ms,
            player: OnceLock::new(),
            rtt_us: AtomicU64::new(UNKNOWN),
            jitter_us: AtomicU64::new(UNKNOWN),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        self.lock().live.insert(id, info.clone());
        LiveSession {
            info,
            registry: self.clone(),
        }
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<SessionSnapshot> {
        let mut out: Vec<_> = self.lock().live.values().map(|s| s.snapshot()).collect();
        out.sort_by_key(|s| s.id);
        out
    }

    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per transport (WebTransport, WebSocket, HTTP): messages and bytes
    /// of every session so far, and the players live now. Monotonic: a
    /// session's counts move from the live sum to the ended one under the
    /// same lock.
    pub fn totals(&self) -> [Totals; 3] {
        let inner = self.lock();
        let mut out = inner.ended;
        for t in &mut out {
            t.players = 0;
        }
        for s in inner.live.values() {
            let t = &mut out[slot(s.transport)];
            t.add(s);
            t.players += s.has_player() as u64;
        }
        out
    }

    pub fn totals_for(&self, kind: TransportKind) -> Totals {
        self.totals()[slot(kind)]
    }
}

/// A session's place in [`LiveSessions`]; dropping it ends the listing.
pub struct LiveSession {
    info: Arc<SessionInfo>,
    registry: Arc<LiveSessions>,
}

impl LiveSession {
    pub fn info(&self) -> &Arc<SessionInfo> {
        &self.info
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner.live.remove(&self.info.id).is_some() {
            inner.ended[slot(self.info.transport)].add(&self.info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_while_open_and_their_counts_outlive_them() {
        let live = Arc::new(LiveSessions::default());
        let a = live.open(
            TransportKind::WebSocket,
            Some("127.0.0.1:5000".parse().unwrap()),
        );
        let b = live.open(TransportKind::WebTransport, None);
        a.info().set_player("lobby", "ann", 3);
        a.info().count_in(10);
        a.info().count_out(100);
        a.info().count_out(50);
        b.info().count_in(7);
        let list = live.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].room.as_deref(), Some("lobby"));
        assert_eq!(list[0].player_name.as_deref(), Some("ann"));
        assert_eq!(list[0].player_id, Some(3));
        assert_eq!(list[0].remote.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!((list[0].messages_out, list[0].bytes_out), (2, 150));
        assert_eq!(list[1].room, None);
        assert_eq!(list[1].rtt_us, None);
        let ws = live.totals_for(TransportKind::WebSocket);
        assert_eq!((ws.messages_in, ws.bytes_in, ws.players), (1, 10, 1));
        drop(a);
        assert_eq!(live.len(), 1);
        let ws_after = live.totals_for(TransportKind::WebSocket);
        assert_eq!(ws_after.bytes_out, 150, "counts survive the session");
        assert_eq!(ws_after.players, 0);
        assert_eq!(live.totals_for(TransportKind::WebTransport).bytes_in, 7);
    }

    #[test]
    fn jitter_is_the_transports_variation_or_the_smoothed_change_of_samples() {
        let live = Arc::new(LiveSessions::default());
        let s = live.open(TransportKind::WebSocket, None);
        let ms = Duration::from_millis;
        s.info().record_rtt(PathRtt {
            rtt: ms(20),
            var: Some(ms(3)),
        });
        let snap = s.info().snapshot();
        assert_eq!((snap.rtt_us, snap.jitter_us), (Some(20_000), Some(3_000)));

        let q = live.open(TransportKind::WebTransport, None);
        let sample = |rtt| PathRtt { rtt, var: None };
        q.info().record_rtt(sample(ms(20)));
        assert_eq!(q.info().snapshot().jitter_us, Some(0));
        q.info().record_rtt(sample(ms(36)));
        // |36 - 20| ms / 16
        assert_eq!(q.info().snapshot().jitter_us, Some(1_000));
        q.info().record_rtt(sample(ms(36)));
        // 1000 + (0 - 1000) / 16
        assert_eq!(q.info().snapshot().jitter_us, Some(938));
    }
}
