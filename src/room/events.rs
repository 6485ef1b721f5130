//! A room's reliable events, stored once for all its players.
//!
//! Each player's numbered stream (PROTOCOL.md §7.1) is its roster — one
//! `PlayerJoined` per player present when it joined, itself included —
//! followed by every event the room broadcast after that. So the room keeps
//! one log of its last `cap` broadcasts, and a player only the ids of its
//! roster and where in the log its stream continues. Event `n` of a player is
//! found by position; nothing is copied or queued per player: sessions read
//! their events from here (`EventFeed`), live or after a resume alike.
//!
//! A player's last `cap` events are always available: those past its roster
//! are among the room's last `cap` broadcasts, and a roster entry is looked
//! up only while fewer than `cap` broadcasts followed the join. The
//! `PlayerJoined` message of a player who left is kept until `cap`
//! broadcasts followed its `PlayerLeft`; no roster that can still be
//! replayed names it after that.
//!
//! This replaced a ring of `cap` events per player and a queue per session:
//! with rooms of 100, those and the roster copies were ~16 KB of every
//! connection (BENCHMARKS.md, "Performance").

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Why the events after a number cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The number is beyond the last event numbered for this player.
    Ahead,
    /// More than `cap` events lie beyond it: the oldest are no longer kept.
    Gap,
    /// The player is no longer in the room.
    Gone,
}

/// Where one player's event stream is in the room's log.
#[derive(Debug)]
struct PlayerEvents {
    /// Players whose `PlayerJoined` are this player's events 1..=len.
    roster: Box<[u32]>,
    /// Room broadcast number at which the stream continues after the roster.
    since: u64,
}

#[derive(Debug)]
pub struct EventLog {
    cap: usize,
    /// The last `cap` broadcasts; `log[0]` is broadcast number `end - len`.
    log: VecDeque<Bytes>,
    /// Broadcasts ever made.
    end: u64,
    /// `PlayerJoined` of every present and recently departed player.
    joined: HashMap<u32, Bytes>,
    /// Departed players with the broadcast count after their `PlayerLeft`.
    departed: VecDeque<(u64, u32)>,
    /// Every player's stream, attached or detached.
    streams: HashMap<u32, PlayerEvents>,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        EventLog {
            cap: cap.max(1),
            log: VecDeque::new(),
            end: 0,
            joined: HashMap::new(),
            departed: VecDeque::new(),
            streams: HashMap::new(),
        }
    }

    /// Records a newcomer's `PlayerJoined` (to be broadcast with [`push`]
    /// and named in later rosters).
    ///
    /// [`push`]: EventLog::push
    pub fn register(&mut self, id: u32, joined: Bytes) {
        self.joined.insert(id, joined);
    }

    /// Appends a broadcast event.
    pub fn push(&mut self, msg: Bytes) {
        if self.log.len() == self.cap {
            self.log.pop_front();
        }
        self.log.push_back(msg);
        self.end += 1;
        while let Some(&(at, id)) = self.departed.front() {
            if self.end - at < self.cap as u64 {
                break;
            }
            self.departed.pop_front();
            self.joined.remove(&id);
        }
    }

    /// Notes that `id` left (call after pushing its `PlayerLeft`) and ends
    /// its stream.
    pub fn left(&mut self, id: u32) {
        self.streams.remove(&id);
        if self.joined.contains_key(&id) {
            self.departed.push_back((self.end, id));
        }
    }

    /// Starts a newcomer's stream with `roster` (ids of registered players):
    /// its first events are their `PlayerJoined`, then every later broadcast.
    pub fn open(&mut self, player: u32, roster: impl Iterator<Item = u32>) {
        let roster: Box<[u32]> = roster.filter(|id| self.joined.contains_key(id)).collect();
        let p = PlayerEvents {
            roster,
            since: self.end,
        };
        self.streams.insert(player, p);
    }

    /// Events numbered for the player's stream so far.
    fn total(&self, p: &PlayerEvents) -> u64 {
        p.roster.len() as u64 + (self.end - p.since)
    }

    /// Number of the player's last event (wraps like the wire's u32).
    pub fn seq(&self, player: u32) -> Option<u32> {
        self.streams.get(&player).map(|p| self.total(p) as u32)
    }

    /// How many of the player's events are numbered above `n`, if they are
    /// all still kept.
    fn behind(&self, p: &PlayerEvents, n: u32) -> Result<u64, ReplayError> {
        let seq = self.total(p) as u32;
        let behind = seq.wrapping_sub(n) as u64;
        if behind > self.cap as u64 {
            return Err(if n > seq {
                ReplayError::Ahead
            } else {
                ReplayError::Gap
            });
        }
        Ok(behind)
    }

    /// Whether a resume from `last_seq` can be served.
    pub fn check(&self, player: u32, last_seq: u32) -> Result<(), ReplayError> {
        let p = self.streams.get(&player).ok_or(ReplayError::Gone)?;
        self.behind(p, last_seq).map(|_| ())
    }

    /// The player's event numbered `n + 1`, or `None` when `n` is its last.
    pub fn event_after(&self, player: u32, n: u32) -> Result<Option<Bytes>, ReplayError> {
        let p = self.streams.get(&player).ok_or(ReplayError::Gone)?;
        let behind = self.behind(p, n)?;
        if behind == 0 {
            return Ok(None);
        }
        let pos = self.total(p) - behind;
        let k = p.roster.len() as u64;
        let log_start = self.end - self.log.len() as u64;
        if pos < k {
            self.joined.get(&p.roster[pos as usize]).cloned()
        } else {
            let i = (p.since + (pos - k)).checked_sub(log_start);
            i.and_then(|i| self.log.get(i as usize)).cloned()
        }
        // Unreachable by the invariants above; refuse rather than send
        // something else.
        .map(Some)
        .ok_or(ReplayError::Gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Every event of `player` numbered above `n`.
    fn after(log: &EventLog, player: u32, mut n: u32) -> Result<Vec<Bytes>, ReplayError> {
        let mut out = Vec::new();
        while let Some(e) = log.event_after(player, n)? {
            out.push(e);
            n += 1;
        }
        Ok(out)
    }

    /// A log of a room where players 1 and 2 are present.
    fn two_players(cap: usize) -> EventLog {
        let mut log = EventLog::new(cap);
        log.register(1, b("J1"));
        log.push(b("J1"));
        log.open(1, [1].into_iter());
        assert_eq!(after(&log, 1, 0).unwrap(), vec![b("J1")]);
        log.register(2, b("J2"));
        log.push(b("J2"));
        log.open(2, [1, 2].into_iter());
        assert_eq!(after(&log, 2, 0).unwrap(), vec![b("J1"), b("J2")]);
        log
    }

    #[test]
    fn numbering_is_roster_then_broadcasts() {
        let mut log = two_players(8);
        // 1: J1 (roster), J2 (broadcast). 2: J1, J2 (roster).
        assert_eq!(log.seq(1), Some(2));
        assert_eq!(log.seq(2), Some(2));
        log.push(b("L1"));
        log.left(1);
        assert_eq!(log.seq(2), Some(3));
        assert_eq!(after(&log, 2, 0).unwrap(), vec![b("J1"), b("J2"), b("L1")]);
        assert_eq!(after(&log, 2, 2).unwrap(), vec![b("L1")]);
        assert_eq!(after(&log, 2, 3).unwrap(), Vec::<Bytes>::new());
        assert_eq!(log.event_after(2, 4), Err(ReplayError::Ahead));
        assert_eq!(log.check(2, 4), Err(ReplayError::Ahead));
        // A player who left has no stream any more.
        assert_eq!(log.event_after(1, 1), Err(ReplayError::Gone));
        assert_eq!(log.seq(1), None);
    }

    #[test]
    fn keeps_exactly_the_last_cap_events() {
        let mut log = two_players(4);
        for i in 0..3 {
            log.push(b(&format!("E{i}")));
        }
        // 2 has J1 J2 E0 E1 E2 (seq 5); the last 4 are readable.
        assert_eq!(log.seq(2), Some(5));
        assert_eq!(
            after(&log, 2, 1).unwrap(),
            vec![b("J2"), b("E0"), b("E1"), b("E2")]
        );
        assert_eq!(log.check(2, 1), Ok(()));
        assert_eq!(after(&log, 2, 0), Err(ReplayError::Gap));
        assert_eq!(log.check(2, 0), Err(ReplayError::Gap));
        for i in 3..10 {
            log.push(b(&format!("E{i}")));
        }
        assert_eq!(
            after(&log, 2, 8).unwrap(),
            vec![b("E6"), b("E7"), b("E8"), b("E9")]
        );
        assert_eq!(after(&log, 2, 7), Err(ReplayError::Gap));
    }

    #[test]
    fn a_departed_players_join_is_kept_while_a_roster_may_need_it() {
        let mut log = two_players(3);
        log.push(b("L1"));
        log.left(1);
        // 2's roster names 1, and its event 1 is within its last 3.
        assert_eq!(after(&log, 2, 0).unwrap(), vec![b("J1"), b("J2"), b("L1")]);
        log.push(b("X"));
        log.push(b("Y"));
        // 2 now has J1 J2 L1 X Y: event 2 is the oldest of the last 3.
        assert_eq!(after(&log, 2, 1), Err(ReplayError::Gap));
        assert_eq!(after(&log, 2, 2).unwrap(), vec![b("L1"), b("X"), b("Y")]);
        // Player 1's join message is dropped once 3 broadcasts followed L1.
        log.push(b("Z"));
        assert!(!log.joined.contains_key(&1));
        assert!(log.joined.contains_key(&2));
    }

    #[test]
    fn a_roster_names_only_registered_players() {
        let mut log = EventLog::new(4);
        log.register(5, b("J5"));
        log.open(5, [5, 6].into_iter());
        assert_eq!(after(&log, 5, 0).unwrap(), vec![b("J5")]);
        assert_eq!(log.seq(5), Some(1));
    }
}
