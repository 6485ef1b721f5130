//! The client's side of snapshot deltas (PROTOCOL.md §5.1): the recent
//! whole states it reconstructed, by tick, so that a `SnapshotDelta` is
//! turned back into a whole `Snapshot` before anyone sees it, and the tick
//! to acknowledge.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::delta::{self, CODEC_GAME, CODEC_RALLY};
use crate::protocol::{Snapshot, SnapshotDelta};

/// States kept: twice what the server keeps to start deltas from
/// (`RING_SNAPSHOTS`), so any baseline it may still use is here.
pub const KEPT_STATES: usize = 64;

/// A game's own delta decoder (codec 1, `Game::delta`): makes the payload
/// from the baseline's payload and the delta; `None` when it cannot.
#[derive(Clone)]
pub struct ApplyDelta(pub Arc<DecodeFn>);

/// `(baseline payload, delta) → payload`.
pub type DecodeFn = dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync;

impl fmt::Debug for ApplyDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApplyDelta(..)")
    }
}

/// Why a delta was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The baseline is not among the states kept: the client must wait for
    /// the next snapshot (the server did not follow the rules, or the
    /// baseline is older than [`KEPT_STATES`]).
    NoBaseline,
    /// The delta does not decode against the baseline, or its codec is
    /// one this client has no decoder for.
    Corrupt,
}

#[derive(Debug, Default)]
pub struct States {
    /// Ascending ticks.
    kept: VecDeque<(u32, Bytes)>,
    /// Newest tick reconstructed (0: none).
    newest: u32,
    apply: Option<ApplyDelta>,
    scratch: Vec<u8>,
    /// Deltas turned into whole states, and deltas ignored.
    pub applied: u64,
    pub ignored: u64,
}

impl States {
    pub fn new(apply: Option<ApplyDelta>) -> States {
        States {
            apply,
            ..States::default()
        }
    }

    /// The tick to acknowledge: the newest whole state (0: none yet).
    pub fn newest(&self) -> u32 {
        self.newest
    }

    /// Forgets every state: after `Welcome`, deltas start afresh.
    pub fn clear(&mut self) {
        self.kept.clear();
        self.newest = 0;
    }

    /// Keeps a whole snapshot's state.
    pub fn keep(&mut self, s: &Snapshot) {
        self.insert(s.tick, s.payload.clone());
    }

    fn insert(&mut self, tick: u32, payload: Bytes) {
        // Ascending: usually at the back; a late datagram goes in its place.
        let at = self.kept.partition_point(|(t, _)| *t < tick);
        if self.kept.get(at).is_some_and(|(t, _)| *t == tick) {
            return;
        }
        self.kept.insert(at, (tick, payload));
        while self.kept.len() > KEPT_STATES {
            self.kept.pop_front();
        }
        self.newest = self.newest.max(tick);
    }

    fn get(&self, tick: u32) -> Option<&Bytes> {
        let at = self.kept.partition_point(|(t, _)| *t < tick);
        self.kept
            .get(at)
            .filter(|(t, _)| *t == tick)
            .map(|(_, p)| p)
    }

    fn decode(&mut self, base: &[u8], d: &SnapshotDelta) -> Option<Bytes> {
        match d.codec {
            CODEC_RALLY => delta::apply(base, &d.delta, &mut self.scratch)
                .ok()
                .map(|()| Bytes::copy_from_slice(&self.scratch)),
            CODEC_GAME => self.apply.as_ref()?.0(base, &d.delta).map(Bytes::from),
            _ => None,
        }
    }

    /// Turns a delta into the whole snapshot (and keeps it).
    pub fn apply(&mut self, d: &SnapshotDelta) -> Result<Snapshot, Ignored> {
        let Some(base) = self.get(d.base_tick).cloned() else {
            self.ignored += 1;
            return Err(Ignored::NoBaseline);
        };
        let Some(payload) = self.decode(&base, d) else {
            self.ignored += 1;
            return Err(Ignored::Corrupt);
        };
        self.applied += 1;
        let s = Snapshot {
            ack_seq: d.ack_seq,
            tick: d.tick,
            server_time_us: d.server_time_us,
            payload,
        };
        self.insert(s.tick, s.payload.clone());
        Ok(s)
    }
}
