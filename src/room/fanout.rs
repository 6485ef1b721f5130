//! The room's latest-only path to its players: snapshots and unreliable
//! application messages.
//!
//! One object owns it. For each message and player it tries the player's
//! [`DirectSink`] — the transport itself, written from the room's tick with
//! no task woken (a WebTransport datagram, a WebSocket frame on plain TCP)
//! — but only when the player's session has written every numbered event
//! due before it, so a join is never overtaken by the snapshot that shows
//! the player. Otherwise, or when the sink declines, the message waits for
//! the session: snapshots in a newest-wins slot, unreliable messages in a
//! short drop-oldest queue.
//!
//! Which players are caught up is read from the event log under one lock
//! per batch (a tick's snapshots, a callback's messages), not per player.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::events::EventLog;
use super::lock;
use crate::protocol::Close;

/// `AppUnreliable` messages a player's session may have waiting; a newer
/// one pushes out the oldest (PROTOCOL.md §5).
pub const LATEST_QUEUE: usize = 32;

/// A player's direct path for latest-only messages, given by its transport
/// when the session joins. The room calls it from its tick, so it must
/// never wait: it hands the message to the transport at once, or declines
/// (too big for a datagram now, the socket full, the connection gone) and
/// the message goes to the session instead. A `dyn` call per recipient:
/// one room holds players of both transports.
pub trait DirectSink: Send + Sync {
    /// Sends one message made of `head` (the recipient's own bytes, e.g. a
    /// snapshot's type and `ack_seq`) and `body` (shared by recipients),
    /// writing whatever it sends into `arena`, the batch's one buffer for
    /// all recipients. `false`: not sent.
    fn try_send(&self, arena: &mut BytesMut, head: &[u8], body: &[u8]) -> bool;

    /// Bytes `try_send` writes into the arena for a message of `len` bytes
    /// (none by default), so the room reserves the batch's buffer at once.
    fn arena_bytes(&self, _len: usize) -> usize {
        0
    }

    /// From now on nothing more is sent: the session is closing, and its
    /// `Error` and close must be its last messages.
    fn stop(&self) {}

    /// Whether what `try_send` sends is ordered and reliable with
    /// everything the session sends (a WebSocket frame, not a datagram):
    /// then a snapshot sent is one the client will have, and the next
    /// delta may be against it (PROTOCOL.md §5.1).
    fn ordered(&self) -> bool {
        false
    }
}

/// One snapshot as one recipient will get it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRef {
    pub tick: u32,
    pub ack_seq: u32,
    /// Shared part: `tick`, `server_time_us` and the payload (empty: none
    /// yet); for a delta, `SnapshotDelta`'s fields after `ack_seq`.
    pub body: Bytes,
    /// `body` is a `SnapshotDelta`'s.
    pub delta: bool,
    /// Snapshots put in this slot so far: a session that finds it more
    /// than one past the last it took knows how many were replaced unseen
    /// (those sent directly never pass through the slot).
    pub seq: u32,
}

/// A short drop-oldest queue of unreliable application messages for one
/// session. std `Mutex`: a push or a drain, never held across `.await`.
#[derive(Debug, Default)]
pub struct LatestQueue {
    queue: Mutex<VecDeque<Bytes>>,
}

impl LatestQueue {
    /// Adds a payload; `true` if an older one was dropped to make room.
    pub fn push(&self, payload: Bytes) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = q.len() >= LATEST_QUEUE && q.pop_front().is_some();
        q.push_back(payload);
        dropped
    }

    /// Takes everything waiting, oldest first.
    pub fn drain(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `Link::written` before the session has written `Welcome`.
pub(crate) const NOT_WELCOMED: u64 = u64::MAX;

/// A player's attachment to its current session, as the room holds it.
pub(crate) struct Link {
    pub slot: watch::Sender<SnapshotRef>,
    pub sink: Option<Arc<dyn DirectSink>>,
    /// Number of the last numbered event the session has written to its
    /// transport ([`NOT_WELCOMED`] before `Welcome`).
    pub written: Arc<AtomicU64>,
    pub latest: Arc<LatestQueue>,
    /// Set by the room before it drops the player on purpose.
    pub kicked: Arc<OnceLock<Close>>,
    pub attachment: u64,
    /// Tick of the newest snapshot written to an ordered channel of this
    /// attachment (0: none), by the session or by an ordered sink.
    pub delivered: Arc<AtomicU32>,
    /// What this attachment's client acknowledged.
    pub acks: Acks,
}

/// A client's acknowledgements of snapshots, for one attachment: deltas
/// start from what this connection's client has (PROTOCOL.md §5.1).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Acks {
    /// The client sent `InputAck`: it takes deltas.
    pub deltas: bool,
    /// Newest snapshot tick the client says it applied (0: none).
    pub acked: u32,
    /// First snapshot tick offered to this attachment (0: none yet). An
    /// acknowledgement of an older tick is not this connection's.
    pub first_tick: u32,
}

impl Acks {
    /// The tick a delta for this client may be against: the newer of the
    /// acknowledged snapshot and `delivered`, the last one written to an
    /// ordered channel (0: none); `None` for a client that takes no deltas
    /// or has nothing of this attachment.
    pub fn baseline(&self, delivered: u32) -> Option<u32> {
        if !self.deltas || self.first_tick == 0 {
            return None;
        }
        let b = self.acked.max(delivered);
        (b >= self.first_tick).then_some(b)
    }

    /// Takes the client's acknowledgement of `tick` (not one still to come:
    /// the room checks that).
    pub fn ack(&mut self, tick: u32) {
        self.deltas = true;
        if self.first_tick != 0 && tick >= self.first_tick && tick > self.acked {
            self.acked = tick;
        }
    }
}

impl Link {
    /// See [`Acks::baseline`].
    pub fn baseline(&self) -> Option<u32> {
        self.acks.baseline(self.delivered.load(Acquire))
    }
}

/// A snapshot message's shared part, as the room made it for a recipient.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub delta: bool,
    pub body: Bytes,
}

impl Link {
    /// Wakes the session to read new events (the slot's value is kept).
    pub fn wake(&self) {
        self.slot.send_modify(|_| {});
    }

    pub fn closed(&self) -> bool {
        self.slot.is_closed()
    }

    /// Leaves a snapshot for the session, replacing any it has not taken.
    fn offer(&self, tick: u32, ack_seq: u32, snap: &Snap) {
        self.slot.send_modify(|s| {
            s.seq = s.seq.wrapping_add(1);
            s.tick = tick;
            s.ack_seq = ack_seq;
            s.body = snap.body.clone();
            s.delta = snap.delta;
        });
    }
}

/// What the room needs of a player to send it latest-only messages.
pub(crate) trait Recipient {
    fn link(&self) -> Option<&Link>;
    /// The recipient's `ack_seq`.
    fn acked_input(&self) -> u32;
}

#[derive(Default)]
pub(crate) struct Fanout {
    /// Every direct message of a batch is written here: one allocation per
    /// batch, reused once the transports let go of it.
    arena: BytesMut,
    /// Per recipient of the current batch, in the players' order: whether
    /// its session has written every numbered event due before.
    caught_up: Vec<bool>,
}

impl Fanout {
    /// Starts a batch for `players` of messages of about `len` bytes: one
    /// lock of the event log for all of them, and the arena reserved.
    pub fn begin<P: Recipient>(
        &mut self,
        log: &Mutex<EventLog>,
        players: &BTreeMap<u32, P>,
        len: usize,
    ) {
        self.caught_up.clear();
        let mut need = 0;
        {
            let log = lock(log);
            for (&id, p) in players {
                let up = p.link().is_some_and(|l| {
                    log.seq(id)
                        .is_some_and(|n| l.written.load(Acquire) == n as u64)
                });
                self.caught_up.push(up);
                if let Some(sink) = p.link().and_then(|l| l.sink.as_ref()) {
                    need += sink.arena_bytes(len);
                }
            }
        }
        self.arena.reserve(need);
    }

    /// Sends player number `i` of the batch (in `begin`'s order) its
    /// message: directly, or through the session.
    fn direct(&mut self, i: usize, link: &Link, head: &[u8], body: &[u8]) -> bool {
        let up = self.caught_up.get(i).copied().unwrap_or(false);
        up && link
            .sink
            .as_ref()
            .is_some_and(|s| s.try_send(&mut self.arena, head, body))
    }

    /// Sends a snapshot to recipient `i`.
    pub fn snapshot(&mut self, i: usize, p: &impl Recipient, tick: u32, snap: &Snap) {
        let Some(link) = p.link() else { return };
        let ack = p.acked_input();
        let head = if snap.delta {
            crate::protocol::snapshot_delta_header(ack)
        } else {
            crate::protocol::snapshot_header(ack)
        };
        if self.direct(i, link, &head, &snap.body) {
            if link.sink.as_ref().is_some_and(|s| s.ordered()) {
                link.delivered.fetch_max(tick, Release);
            }
        } else {
            link.offer(tick, ack, snap);
        }
    }

    /// Sends an unreliable application message to recipient `i`. `true` if
    /// an older message waiting for its session was dropped for it.
    pub fn unreliable(&mut self, i: usize, p: &impl Recipient, payload: &Bytes) -> bool {
        let Some(link) = p.link() else { return false };
        if self.direct(i, link, &crate::protocol::APP_UNRELIABLE_HEADER, payload) {
            return false;
        }
        let dropped = link.latest.push(payload.clone());
        link.wake();
        dropped
    }

    /// Ends a batch. With `sparse` (batches far apart) the arena's memory is
    /// given back rather than kept until the next one.
    pub fn end(&mut self, sparse: bool) {
        if sparse {
            self.arena = BytesMut::new();
        }
    }
}

/// The session's side of [`Link::written`].
pub(crate) fn mark_written(written: &AtomicU64, last: u32) {
    written.store(last as u64, Release);
}
