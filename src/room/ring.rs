//! The recent snapshots a delta may start from (PROTOCOL.md §5.1): the
//! room keeps the payloads of its last [`RING_SNAPSHOTS`] snapshots (one
//! ring per room for a shared view, one per player for per-player views),
//! bounded in bytes too.

use std::collections::VecDeque;

use bytes::Bytes;

/// Snapshots a ring keeps: a client's acknowledgement older than this many
/// snapshots gets a full snapshot. At 60 Hz, half a second.
pub const RING_SNAPSHOTS: usize = 32;
/// Bytes of payload a ring keeps at most (the newest snapshot always).
pub const RING_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Ring {
    /// Ascending ticks.
    entries: VecDeque<(u32, Bytes)>,
    bytes: usize,
}

impl Ring {
    pub fn push(&mut self, tick: u32, payload: Bytes) {
        self.bytes += payload.len();
        self.entries.push_back((tick, payload));
        while self.entries.len() > RING_SNAPSHOTS
            || (self.bytes > RING_BYTES && self.entries.len() > 1)
        {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The payload of the snapshot taken at `tick`, if still kept.
    pub fn get(&self, tick: u32) -> Option<&Bytes> {
        self.entries
            .iter()
            .rev()
            .find(|(t, _)| *t == tick)
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_snapshots_within_both_bounds() {
        let mut r = Ring::default();
        for t in 1..=40u32 {
            r.push(t, Bytes::from(vec![t as u8; 10]));
        }
        assert!(r.get(8).is_none());
        assert_eq!(r.get(9).unwrap()[0], 9);
        assert_eq!(r.get(40).unwrap()[0], 40);
        let mut r = Ring::default();
        for t in 1..=5u32 {
            r.push(t, Bytes::from(vec![0; RING_BYTES / 2]));
        }
        assert!(r.get(3).is_none() && r.get(4).is_some() && r.get(5).is_some());
        r.push(6, Bytes::from(vec![0; RING_BYTES * 2]));
        assert!(r.get(5).is_none() && r.get(6).is_some());
    }
}
