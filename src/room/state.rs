//! Authoritative game state of one room: pure tick logic.
//!
//! Inputs and `now` in, state and snapshots out. No channels, clocks or
//! tasks: the room task in `room/mod.rs` owns those.

use std::collections::BTreeMap;

use crate::protocol::{Buttons, PlayerState, SnapshotBody, MAX_INPUTS_PER_MSG};

/// Inputs applied per player per tick; the rest of a burst waits for the
/// next tick (the client's redundancy re-sends it) or is dropped.
pub const MAX_INPUTS_PER_TICK: u8 = 8;

#[derive(Debug, Clone, Copy)]
pub struct GameParams {
    pub tick_hz: u16,
    pub arena_w: f32,
    pub arena_h: f32,
    pub speed: f32,
    pub max_players: usize,
}

impl GameParams {
    /// Distance one input moves a player along each held axis.
    pub fn step(&self) -> f32 {
        self.speed / self.tick_hz as f32
    }
}

#[derive(Debug, Clone)]
pub struct Player {
    pub name: String,
    pub x: f32,
    pub y: f32,
    /// Last applied input sequence number (0: none yet).
    pub last_seq: u32,
    applied_this_tick: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room is full ({0} players)")]
    RoomFull(usize),
}

#[derive(Debug)]
pub struct RoomState {
    params: GameParams,
    tick: u32,
    next_id: u32,
    players: BTreeMap<u32, Player>,
}

impl RoomState {
    pub fn new(params: GameParams) -> Self {
        RoomState {
            params,
            tick: 0,
            next_id: 1,
            players: BTreeMap::new(),
        }
    }

    pub fn params(&self) -> &GameParams {
        &self.params
    }

    pub fn tick(&self) -> u32 {
        self.tick
    }

    pub fn len(&self) -> usize {
        self.players.len()
    }

    pub fn is_empty(&self) -> bool {
        self.players.is_empty()
    }

    pub fn players(&self) -> impl Iterator<Item = (u32, &Player)> {
        self.players.iter().map(|(&id, p)| (id, p))
    }

    pub fn player(&self, id: u32) -> Option<&Player> {
        self.players.get(&id)
    }

    /// Adds a player at a spawn point spread over the arena by id.
    pub fn join(&mut self, name: String) -> Result<u32, JoinError> {
        if self.players.len() >= self.params.max_players {
            return Err(JoinError::RoomFull(self.params.max_players));
        }
        let id = self.next_id;
        // Ids are never reused within a room; 0 means "no player".
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Golden-ratio spacing spreads spawns without randomness, keeping
        // the state deterministic for tests.
        let fx = (id as f32 * 0.618_034).fract();
        let fy = (id as f32 * 0.381_966 + 0.25).fract();
        let margin = 40.0f32.min(self.params.arena_w / 4.0);
        self.players.insert(
            id,
            Player {
                name,
                x: margin + fx * (self.params.arena_w - 2.0 * margin),
                y: margin + fy * (self.params.arena_h - 2.0 * margin),
                last_seq: 0,
                applied_this_tick: 0,
            },
        );
        Ok(id)
    }

    pub fn leave(&mut self, id: u32) -> bool {
        self.players.remove(&id).is_some()
    }

    /// Applies the inputs of one `Input` message (`buttons` newest first,
    /// numbered `newest_seq`, `newest_seq - 1`, …) that are newer than the
    /// last applied, oldest first, within the per-tick budget. Returns how
    /// many were applied.
    pub fn apply_input(&mut self, id: u32, newest_seq: u32, buttons: &[Buttons]) -> usize {
        let step = self.params.step();
        let (w, h) = (self.params.arena_w, self.params.arena_h);
        let Some(p) = self.players.get_mut(&id) else {
            return 0;
        };
        let n = buttons.len().min(MAX_INPUTS_PER_MSG);
        let mut applied = 0;
        for i in (0..n).rev() {
            // newest_seq >= n is checked by the decoder; saturate anyway.
            let seq = newest_seq.saturating_sub(i as u32);
            if seq <= p.last_seq {
                continue;
            }
            if p.applied_this_tick >= MAX_INPUTS_PER_TICK {
                break;
            }
            let (dx, dy) = buttons[i].direction();
            p.x = (p.x + dx * step).clamp(0.0, w);
            p.y = (p.y + dy * step).clamp(0.0, h);
            p.last_seq = seq;
            p.applied_this_tick += 1;
            applied += 1;
        }
        applied
    }

    /// Advances the simulation by one tick.
    pub fn step(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        for p in self.players.values_mut() {
            p.applied_this_tick = 0;
        }
    }

    /// The shared part of this tick's snapshot.
    pub fn snapshot(&self, server_time_us: u64) -> SnapshotBody {
        SnapshotBody {
            tick: self.tick,
            server_time_us,
            players: self
                .players
                .iter()
                .map(|(&id, p)| PlayerState { id, x: p.x, y: p.y })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GameParams {
        GameParams {
            tick_hz: 60,
            arena_w: 960.0,
            arena_h: 540.0,
            speed: 240.0,
            max_players: 3,
        }
    }

    const R: Buttons = Buttons(Buttons::RIGHT);

    #[test]
    fn inputs_apply_once_in_order_despite_redundancy() {
        let mut s = RoomState::new(params());
        let id = s.join("a".into()).unwrap();
        let x0 = s.player(id).unwrap().x;
        assert_eq!(s.apply_input(id, 1, &[R]), 1);
        // Redundant copy of 1 plus new input 2: only 2 applies.
        assert_eq!(s.apply_input(id, 2, &[R, R]), 1);
        // A late, reordered older message applies nothing.
        assert_eq!(s.apply_input(id, 1, &[R]), 0);
        let p = s.player(id).unwrap();
        assert_eq!(p.last_seq, 2);
        assert!((p.x - (x0 + 2.0 * 4.0)).abs() < 1e-3);
    }

    #[test]
    fn lost_message_is_recovered_from_the_next_ones_redundancy() {
        let mut s = RoomState::new(params());
        let id = s.join("a".into()).unwrap();
        s.apply_input(id, 1, &[R]);
        // Message carrying 2 was lost; 3 carries 3, 2, 1.
        assert_eq!(s.apply_input(id, 3, &[R, R, R]), 2);
        assert_eq!(s.player(id).unwrap().last_seq, 3);
    }

    #[test]
    fn per_tick_budget_caps_a_flood() {
        let mut s = RoomState::new(params());
        let id = s.join("a".into()).unwrap();
        let mut applied = 0;
        for seq in (8..=80).step_by(8) {
            applied += s.apply_input(id, seq, &[R; 8]);
        }
        assert_eq!(applied, MAX_INPUTS_PER_TICK as usize);
        s.step();
        assert_eq!(s.apply_input(id, 88, &[R; 8]), 8);
    }

    #[test]
    fn movement_is_clamped_to_the_arena() {
        let mut s = RoomState::new(params());
        let id = s.join("a".into()).unwrap();
        let left = Buttons(Buttons::LEFT | Buttons::UP);
        for seq in 1..=400u32 {
            s.apply_input(id, seq, &[left]);
            s.step();
        }
        let p = s.player(id).unwrap();
        assert_eq!((p.x, p.y), (0.0, 0.0));
    }

    #[test]
    fn room_capacity_is_enforced_and_ids_are_unique() {
        let mut s = RoomState::new(params());
        let a = s.join("a".into()).unwrap();
        let b = s.join("b".into()).unwrap();
        let c = s.join("c".into()).unwrap();
        assert_eq!(s.join("d".into()), Err(JoinError::RoomFull(3)));
        assert!(s.leave(b));
        let d = s.join("d".into()).unwrap();
        assert!(a != c && d != b && d != a && d != c);
        let snap = s.snapshot(7);
        let ids: Vec<_> = snap.players.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![a, c, d]);
        for p in snap.players {
            assert!((0.0..=960.0).contains(&p.x) && (0.0..=540.0).contains(&p.y));
        }
    }
}
