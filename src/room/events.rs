//! A room's numbered events, stored once for all its players.
//!
//! Each player's numbered stream (PROTOCOL.md §7.1) is its roster — one
//! `PlayerJoined` per player present when it joined, itself included —
//! followed by every event the room broadcast after that, merged in order
//! with the events sent to it alone or to a list it is in (its personal
//! events). So the room keeps one log of its last `cap` broadcasts, and per
//! player only the ids of its roster, where in the log its stream
//! continues, and its own last `cap` personal events (none for a game that
//! only broadcasts). Nothing broadcast is copied or queued per player:
//! sessions read their events from here, live or after a resume alike,
//! through a [`Cursor`].
//!
//! Order: a personal event records how many broadcasts were made before it
//! (`at`); it comes after broadcast `at - 1` and before broadcast `at`.
//!
//! Availability: a player's events after number `n` can be read while every
//! one of them is still kept: the broadcasts among them are in the room's
//! last `cap`, its personal ones in its own last `cap`, and the roster
//! entries among them name players whose `PlayerJoined` is kept. The
//! `PlayerJoined` message of a player who left is kept until `cap`
//! broadcasts followed its `PlayerLeft`; no roster that can still be
//! replayed names it after that.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Why the events after a number cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The number is beyond the last event numbered for this player.
    Ahead,
    /// Some of the events after it are no longer kept.
    Gap,
    /// The player is no longer in the room.
    Gone,
}

/// Where a reader is in one player's stream: the next event to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Next roster entry (all read when equal to the roster's length).
    roster: usize,
    /// Next broadcast number.
    broadcast: u64,
    /// Next personal event number (counted over the player's life).
    personal: u64,
}

/// One player's stream.
#[derive(Debug)]
struct PlayerEvents {
    /// Players whose `PlayerJoined` are this player's events 1..=len.
    roster: Box<[u32]>,
    /// Room broadcast number at which the stream continues after the roster.
    since: u64,
    /// The last `cap` personal events, with the broadcast count at each.
    personal: VecDeque<(u64, Bytes)>,
    /// Personal events ever.
    personal_end: u64,
}

impl PlayerEvents {
    fn personal_start(&self) -> u64 {
        self.personal_end - self.personal.len() as u64
    }

    fn personal(&self, n: u64) -> Option<&(u64, Bytes)> {
        n.checked_sub(self.personal_start())
            .and_then(|i| self.personal.get(i as usize))
    }
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

    /// Appends an event for every player.
    pub fn push(&mut self, msg: Bytes) {
        debug_assert!(crate::protocol::is_numbered(&msg), "not a numbered event");
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

    /// Appends an event for one player (a list is one call per player,
    /// sharing `msg`). `false` if the player has no stream.
    pub fn push_to(&mut self, player: u32, msg: Bytes) -> bool {
        debug_assert!(crate::protocol::is_numbered(&msg), "not a numbered event");
        let Some(p) = self.streams.get_mut(&player) else {
            return false;
        };
        if p.personal.len() == self.cap {
            p.personal.pop_front();
        }
        p.personal.push_back((self.end, msg));
        p.personal_end += 1;
        true
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
    /// its first events are their `PlayerJoined`, then every later event.
    pub fn open(&mut self, player: u32, roster: impl Iterator<Item = u32>) {
        let roster: Box<[u32]> = roster.filter(|id| self.joined.contains_key(id)).collect();
        let p = PlayerEvents {
            roster,
            since: self.end,
            personal: VecDeque::new(),
            personal_end: 0,
        };
        self.streams.insert(player, p);
    }

    fn stream(&self, player: u32) -> Result<&PlayerEvents, ReplayError> {
        self.streams.get(&player).ok_or(ReplayError::Gone)
    }

    /// Events numbered for the player's stream so far.
    fn total(&self, p: &PlayerEvents) -> u64 {
        p.roster.len() as u64 + (self.end - p.since) + p.personal_end
    }

    /// Number of the player's last event (wraps like the wire's u32).
    pub fn seq(&self, player: u32) -> Option<u32> {
        self.streams.get(&player).map(|p| self.total(p) as u32)
    }

    /// Where the player's stream continues after its event `n`: what a
    /// resume from `last_seq = n` reads from.
    pub fn cursor_after(&self, player: u32, n: u32) -> Result<Cursor, ReplayError> {
        let p = self.stream(player)?;
        let total = self.total(p);
        // Numbers wrap like the wire's u32; `behind` is the distance back
        // from the newest event.
        let behind = (total as u32).wrapping_sub(n) as u64;
        if behind > total {
            return Err(ReplayError::Ahead);
        }
        // At most `cap` broadcasts and `cap` personal events are kept after
        // the roster: anything further back is gone, without walking there.
        if behind > p.roster.len() as u64 + 2 * self.cap as u64 {
            return Err(ReplayError::Gap);
        }
        let k = p.roster.len() as u64;
        let mut at = Cursor {
            roster: p.roster.len(),
            broadcast: self.end,
            personal: p.personal_end,
        };
        let mut num = total;
        // Walk back from the newest event: the previous one is the later
        // of the last unread broadcast and the last unread personal event.
        while num > k && num > total - behind {
            let personal_later = match at.personal.checked_sub(1) {
                Some(t) => match p.personal(t) {
                    Some(&(a, _)) => a >= at.broadcast,
                    // Its place in the order is not known any more.
                    None => return Err(ReplayError::Gap),
                },
                None => false,
            };
            if personal_later {
                at.personal -= 1;
            } else {
                at.broadcast -= 1;
            }
            num -= 1;
        }
        if num > total - behind {
            // Inside the roster.
            at.roster = (total - behind) as usize;
        }
        // Everything from the cursor on must still be kept.
        self.check(p, &at)?;
        Ok(at)
    }

    fn check(&self, p: &PlayerEvents, at: &Cursor) -> Result<(), ReplayError> {
        let log_start = self.end - self.log.len() as u64;
        let broadcast_kept = at.broadcast >= log_start;
        let personal_kept = at.personal >= p.personal_start();
        let roster_kept = p.roster[at.roster..]
            .iter()
            .all(|id| self.joined.contains_key(id));
        if broadcast_kept && personal_kept && roster_kept {
            Ok(())
        } else {
            Err(ReplayError::Gap)
        }
    }

    /// The event at `at` for `player`, advancing `at`; `None` when the
    /// reader has everything.
    pub fn read(&self, player: u32, at: &mut Cursor) -> Result<Option<Bytes>, ReplayError> {
        let p = self.stream(player)?;
        if let Some(&id) = p.roster.get(at.roster) {
            let msg = self.joined.get(&id).ok_or(ReplayError::Gap)?;
            at.roster += 1;
            return Ok(Some(msg.clone()));
        }
        if at.personal < p.personal_end {
            let &(a, ref msg) = p.personal(at.personal).ok_or(ReplayError::Gap)?;
            if a <= at.broadcast {
                at.personal += 1;
                return Ok(Some(msg.clone()));
            }
        }
        if at.broadcast < self.end {
            let log_start = self.end - self.log.len() as u64;
            let i = at
                .broadcast
                .checked_sub(log_start)
                .ok_or(ReplayError::Gap)?;
            let msg = self.log.get(i as usize).ok_or(ReplayError::Gap)?;
            at.broadcast += 1;
            return Ok(Some(msg.clone()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMsg;

    /// A numbered event standing for `tag` (a `PlayerLeft` of that id).
    fn ev(tag: u32) -> Bytes {
        ServerMsg::PlayerLeft { player_id: tag }.to_bytes()
    }

    fn joined(id: u32) -> Bytes {
        ServerMsg::PlayerJoined {
            player_id: id,
            name: format!("p{id}"),
        }
        .to_bytes()
    }

    /// Every event of `player` numbered above `n`.
    fn after(log: &EventLog, player: u32, n: u32) -> Result<Vec<Bytes>, ReplayError> {
        let mut at = log.cursor_after(player, n)?;
        let mut out = Vec::new();
        while let Some(e) = log.read(player, &mut at)? {
            out.push(e);
        }
        Ok(out)
    }

    /// A log of a room where players 1 and 2 are present.
    fn two_players(cap: usize) -> EventLog {
        let mut log = EventLog::new(cap);
        log.register(1, joined(1));
        log.push(joined(1));
        log.open(1, [1].into_iter());
        assert_eq!(after(&log, 1, 0).unwrap(), vec![joined(1)]);
        log.register(2, joined(2));
        log.push(joined(2));
        log.open(2, [1, 2].into_iter());
        assert_eq!(after(&log, 2, 0).unwrap(), vec![joined(1), joined(2)]);
        log
    }

    #[test]
    fn numbering_is_roster_then_broadcasts() {
        let mut log = two_players(8);
        // 1: J1 (roster), J2 (broadcast). 2: J1, J2 (roster).
        assert_eq!(log.seq(1), Some(2));
        assert_eq!(log.seq(2), Some(2));
        log.push(ev(1));
        log.left(1);
        assert_eq!(log.seq(2), Some(3));
        assert_eq!(
            after(&log, 2, 0).unwrap(),
            vec![joined(1), joined(2), ev(1)]
        );
        assert_eq!(after(&log, 2, 2).unwrap(), vec![ev(1)]);
        assert_eq!(after(&log, 2, 3).unwrap(), Vec::<Bytes>::new());
        assert_eq!(log.cursor_after(2, 4), Err(ReplayError::Ahead));
        // A player who left has no stream any more.
        assert_eq!(log.cursor_after(1, 1), Err(ReplayError::Gone));
        assert_eq!(log.seq(1), None);
    }

    #[test]
    fn keeps_exactly_the_last_cap_broadcasts() {
        let mut log = two_players(4);
        for i in 0..3 {
            log.push(ev(100 + i));
        }
        // 2 has J1 J2 E0 E1 E2 (seq 5); the last 4 are readable.
        assert_eq!(log.seq(2), Some(5));
        assert_eq!(
            after(&log, 2, 1).unwrap(),
            vec![joined(2), ev(100), ev(101), ev(102)]
        );
        for i in 3..10 {
            log.push(ev(100 + i));
        }
        assert_eq!(
            after(&log, 2, 8).unwrap(),
            vec![ev(106), ev(107), ev(108), ev(109)]
        );
        assert_eq!(after(&log, 2, 7), Err(ReplayError::Gap));
    }

    #[test]
    fn personal_events_interleave_with_broadcasts_in_the_order_sent() {
        let mut log = two_players(8);
        // To 2 alone, a broadcast, to 1 and 2, to 1 alone, a broadcast.
        log.push_to(2, ev(10));
        log.push(ev(11));
        log.push_to(1, ev(12));
        log.push_to(2, ev(12));
        log.push_to(1, ev(13));
        log.push(ev(14));
        assert_eq!(
            after(&log, 2, 2).unwrap(),
            vec![ev(10), ev(11), ev(12), ev(14)]
        );
        // Player 1: J1 | J2, then its own share of the same order.
        assert_eq!(
            after(&log, 1, 0).unwrap(),
            vec![joined(1), joined(2), ev(11), ev(12), ev(13), ev(14)]
        );
        assert_eq!(log.seq(1), Some(6));
        assert_eq!(log.seq(2), Some(6));
        // A resume from any number continues exactly there.
        for n in 0..=6 {
            let all = after(&log, 1, 0).unwrap();
            assert_eq!(
                after(&log, 1, n).unwrap(),
                all[n as usize..].to_vec(),
                "{n}"
            );
        }
        // Sequential reading with one cursor gives the same as a resume.
        let mut at = log.cursor_after(2, 0).unwrap();
        let mut read = Vec::new();
        while let Some(e) = log.read(2, &mut at).unwrap() {
            read.push(e);
        }
        assert_eq!(read, after(&log, 2, 0).unwrap());
        // Live: a reader at the end sees the next event, whichever kind.
        log.push_to(2, ev(15));
        assert_eq!(log.read(2, &mut at).unwrap(), Some(ev(15)));
        log.push(ev(16));
        assert_eq!(log.read(2, &mut at).unwrap(), Some(ev(16)));
        assert_eq!(log.read(2, &mut at).unwrap(), None);
    }

    #[test]
    fn personal_events_are_kept_cap_deep_per_player() {
        let mut log = two_players(3);
        for i in 0..5 {
            log.push_to(2, ev(20 + i));
        }
        // 2 has J1 J2 P0..P4 (seq 7); the last 3 personal ones are kept.
        assert_eq!(log.seq(2), Some(7));
        assert_eq!(after(&log, 2, 4).unwrap(), vec![ev(22), ev(23), ev(24)]);
        assert_eq!(after(&log, 2, 3), Err(ReplayError::Gap));
        // Player 1 never had one and lost nothing.
        assert_eq!(after(&log, 1, 1).unwrap(), vec![joined(2)]);
        // A reader left behind finds the gap.
        let mut at = Cursor {
            roster: 2,
            broadcast: log.end,
            personal: 0,
        };
        assert_eq!(log.read(2, &mut at), Err(ReplayError::Gap));
    }

    #[test]
    fn a_departed_players_join_is_kept_while_a_roster_may_need_it() {
        let mut log = two_players(3);
        log.push(ev(1));
        log.left(1);
        // 2's roster names 1, and its event 1 is within its last 3.
        assert_eq!(
            after(&log, 2, 0).unwrap(),
            vec![joined(1), joined(2), ev(1)]
        );
        log.push(ev(50));
        log.push(ev(51));
        // 2 now has J1 J2 L1 X Y. L1 X Y are the last 3 broadcasts and 2's
        // own join is kept while it is present: it can read from event 2.
        assert_eq!(
            after(&log, 2, 1).unwrap(),
            vec![joined(2), ev(1), ev(50), ev(51)]
        );
        // Player 1's join message is dropped once 3 broadcasts followed L1:
        // a roster naming it can no longer be replayed.
        log.push(ev(52));
        assert!(!log.joined.contains_key(&1));
        assert!(log.joined.contains_key(&2));
        assert_eq!(after(&log, 2, 0), Err(ReplayError::Gap));
    }

    #[test]
    fn a_roster_names_only_registered_players() {
        let mut log = EventLog::new(4);
        log.register(5, joined(5));
        log.open(5, [5, 6].into_iter());
        assert_eq!(after(&log, 5, 0).unwrap(), vec![joined(5)]);
        assert_eq!(log.seq(5), Some(1));
    }
}
