//! `shooter`: a small top-down arena shooter. Players move, aim and fire
//! projectiles; a hit costs health, and a player with none respawns after a
//! while; kills score and are announced.
//!
//! Two techniques a real-time game needs, on Rally's API:
//! - **Lag compensation.** A player fires at what its screen showed: the
//!   input carries the tick it was showing (`view_tick`). Its projectile is
//!   tested against every other player's position as it was that many
//!   ticks ago (kept in a short history), at most [`MAX_REWIND_MS`] back.
//! - **Interest management.** Each player's snapshot holds only the players
//!   and projectiles within [`VIEW_RADIUS`] of it ([`View::PerPlayer`]).
//!
//! Bytes are in PROTOCOL.md §12.

use std::collections::{BTreeMap, VecDeque};

use bytes::{BufMut, BytesMut};

use crate::game::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To, View};

pub const ARENA_W: f32 = 1600.0;
pub const ARENA_H: f32 = 900.0;
/// Arena units per second of held movement (normalised).
pub const SPEED: f32 = 220.0;
pub const PLAYER_RADIUS: f32 = 16.0;
/// Players and projectiles farther than this are left out of a snapshot.
pub const VIEW_RADIUS: f32 = 500.0;
pub const PROJECTILE_SPEED: f32 = 700.0;
/// Seconds a projectile flies before it vanishes.
pub const PROJECTILE_LIFE: f32 = 1.2;
pub const MAX_HEALTH: u8 = 100;
pub const DAMAGE: u8 = 25;
/// Shots per second a player may fire.
pub const FIRE_RATE: u32 = 6;
pub const RESPAWN_SECS: u32 = 3;
/// The furthest back a shot is compensated.
pub const MAX_REWIND_MS: u32 = 200;

/// Input bits.
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;
pub const LEFT: u8 = 4;
pub const RIGHT: u8 = 8;
pub const FIRE: u8 = 16;
const ALL: u8 = UP | DOWN | LEFT | RIGHT | FIRE;
/// Bytes of an input: buttons, aim, view tick.
pub const INPUT_LEN: usize = 7;
/// Kill feed message kind (`App` from the server).
pub const KILL: u8 = 1;

/// One input, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    pub buttons: u8,
    /// Angle in units of π/32768 radians, 0 = +x, growing towards +y.
    pub aim: i16,
    pub view_tick: u32,
}

impl Input {
    pub fn decode(b: &[u8]) -> Result<Input, Reject> {
        let b: &[u8; INPUT_LEN] = b
            .try_into()
            .map_err(|_| Reject::new("a shooter input is 7 bytes"))?;
        if b[0] & !ALL != 0 {
            return Err(Reject::new("undefined button bits"));
        }
        Ok(Input {
            buttons: b[0],
            aim: i16::from_be_bytes([b[1], b[2]]),
            view_tick: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
        })
    }

    pub fn encode(&self) -> [u8; INPUT_LEN] {
        let [a0, a1] = self.aim.to_be_bytes();
        let [t0, t1, t2, t3] = self.view_tick.to_be_bytes();
        [self.buttons, a0, a1, t0, t1, t2, t3]
    }
}

/// The unit vector of an aim angle.
pub fn aim_vector(aim: i16) -> (f32, f32) {
    let a = aim as f32 * std::f32::consts::PI / 32768.0;
    (a.cos(), a.sin())
}

#[derive(Debug, Clone)]
struct Player {
    x: f32,
    y: f32,
    aim: i16,
    health: u8,
    score: u16,
    /// Tick at which a dead player comes back.
    respawn_at: Option<u32>,
    /// First tick this player may fire again.
    ready_at: u32,
    deaths: u32,
}

impl Player {
    fn alive(&self) -> bool {
        self.respawn_at.is_none()
    }
}

#[derive(Debug, Clone)]
struct Shot {
    owner: PlayerId,
    x: f32,
    y: f32,
    vx: f32,
    vy: f32,
    /// Ticks left to fly.
    life: u32,
    /// Ticks its targets are rewound by: the shooter's view delay.
    rewind: u32,
}

/// Where every living player was at one tick.
type Positions = Vec<(PlayerId, f32, f32)>;

pub struct Shooter {
    tick_hz: u32,
    tick: u32,
    players: BTreeMap<PlayerId, Player>,
    shots: Vec<Shot>,
    /// Positions at the last `max_rewind + 1` ticks, newest last; buffers
    /// are reused as the window moves.
    history: VecDeque<(u32, Positions)>,
    max_rewind: u32,
}

impl Shooter {
    pub fn new(room: &RoomInfo<'_>) -> Shooter {
        let tick_hz = room.tick_hz as u32;
        Shooter {
            tick_hz,
            tick: 0,
            players: BTreeMap::new(),
            shots: Vec::new(),
            history: VecDeque::new(),
            max_rewind: (MAX_REWIND_MS * tick_hz).div_ceil(1000),
        }
    }

    fn step(&self) -> f32 {
        SPEED / self.tick_hz as f32
    }

    /// A spawn point spread over the arena by id and death count.
    fn spawn_point(id: PlayerId, deaths: u32) -> (f32, f32) {
        let n = (id as f32) + deaths as f32 * 7.0;
        let m = 2.0 * PLAYER_RADIUS;
        (
            m + (n * 0.618_034).fract() * (ARENA_W - 2.0 * m),
            m + (n * 0.381_966 + 0.25).fract() * (ARENA_H - 2.0 * m),
        )
    }

    /// Where `id` was `rewind` ticks ago (its latest known position when the
    /// history is shorter); `None` if it was not alive then.
    fn position_at(&self, id: PlayerId, rewind: u32) -> Option<(f32, f32)> {
        let back = (rewind as usize).min(self.history.len().checked_sub(1)?);
        let (_, positions) = &self.history[self.history.len() - 1 - back];
        positions
            .iter()
            .find(|(p, _, _)| *p == id)
            .map(|&(_, x, y)| (x, y))
    }

    fn fire(&mut self, id: PlayerId, input: &Input) {
        let tick = self.tick;
        let Some(p) = self.players.get_mut(&id) else {
            return;
        };
        if !p.alive() || tick < p.ready_at {
            return;
        }
        p.ready_at = tick + self.tick_hz.div_ceil(FIRE_RATE);
        let (dx, dy) = aim_vector(input.aim);
        let v = PROJECTILE_SPEED / self.tick_hz as f32;
        self.shots.push(Shot {
            owner: id,
            x: p.x + dx * (PLAYER_RADIUS + 2.0),
            y: p.y + dy * (PLAYER_RADIUS + 2.0),
            vx: dx * v,
            vy: dy * v,
            life: (PROJECTILE_LIFE * self.tick_hz as f32) as u32,
            // A view tick from the future or far back is clamped.
            rewind: tick.saturating_sub(input.view_tick).min(self.max_rewind),
        });
    }

    /// Moves every projectile one tick and settles its hits.
    fn fly(&mut self, ctx: &mut Ctx<'_>) {
        let mut shots = std::mem::take(&mut self.shots);
        shots.retain_mut(|s| {
            s.x += s.vx;
            s.y += s.vy;
            s.life = s.life.saturating_sub(1);
            if s.life == 0 || !(0.0..=ARENA_W).contains(&s.x) || !(0.0..=ARENA_H).contains(&s.y) {
                return false;
            }
            let hit = self
                .players
                .iter()
                .filter(|(&id, p)| id != s.owner && p.alive())
                .find(|(&id, _)| {
                    self.position_at(id, s.rewind).is_some_and(|(x, y)| {
                        (x - s.x).powi(2) + (y - s.y).powi(2) <= PLAYER_RADIUS * PLAYER_RADIUS
                    })
                })
                .map(|(&id, _)| id);
            match hit {
                Some(victim) => {
                    self.hit(ctx, s.owner, victim);
                    false
                }
                None => true,
            }
        });
        self.shots = shots;
    }

    fn hit(&mut self, ctx: &mut Ctx<'_>, killer: PlayerId, victim: PlayerId) {
        let respawn = self.tick + RESPAWN_SECS * self.tick_hz;
        let Some(v) = self.players.get_mut(&victim) else {
            return;
        };
        v.health = v.health.saturating_sub(DAMAGE);
        if v.health > 0 {
            return;
        }
        v.respawn_at = Some(respawn);
        v.deaths += 1;
        if let Some(k) = self.players.get_mut(&killer) {
            k.score = k.score.saturating_add(1);
        }
        let mut feed = BytesMut::with_capacity(9);
        feed.put_u8(KILL);
        feed.put_u32(killer);
        feed.put_u32(victim);
        let _ = ctx.send_bytes(To::Room, Delivery::Reliable, feed.freeze());
    }

    fn respawn(&mut self) {
        let tick = self.tick;
        for (&id, p) in self.players.iter_mut() {
            if p.respawn_at.is_some_and(|t| tick >= t) {
                (p.x, p.y) = Self::spawn_point(id, p.deaths);
                p.health = MAX_HEALTH;
                p.respawn_at = None;
            }
        }
    }

    /// Records this tick's positions, reusing the oldest buffer.
    fn remember(&mut self) {
        let mut buf = if self.history.len() > self.max_rewind as usize {
            self.history.pop_front().map(|(_, b)| b).unwrap_or_default()
        } else {
            Vec::new()
        };
        buf.clear();
        buf.extend(
            self.players
                .iter()
                .filter(|(_, p)| p.alive())
                .map(|(&id, p)| (id, p.x, p.y)),
        );
        self.history.push_back((self.tick, buf));
    }
}

impl Game for Shooter {
    fn view(&self) -> View {
        View::PerPlayer
    }

    fn join(&mut self, _: &mut Ctx<'_>, player: PlayerId, _: Join<'_>) -> Result<(), Reject> {
        let (x, y) = Self::spawn_point(player, 0);
        self.players.insert(
            player,
            Player {
                x,
                y,
                aim: 0,
                health: MAX_HEALTH,
                score: 0,
                respawn_at: None,
                ready_at: 0,
                deaths: 0,
            },
        );
        Ok(())
    }

    fn leave(&mut self, _: &mut Ctx<'_>, player: PlayerId) {
        self.players.remove(&player);
    }

    fn input(&mut self, _: &mut Ctx<'_>, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        let input = Input::decode(input)?;
        let step = self.step();
        if let Some(p) = self.players.get_mut(&player).filter(|p| p.alive()) {
            let dx = (input.buttons & RIGHT != 0) as i8 as f32
                - (input.buttons & LEFT != 0) as i8 as f32;
            let dy =
                (input.buttons & DOWN != 0) as i8 as f32 - (input.buttons & UP != 0) as i8 as f32;
            let len = (dx * dx + dy * dy).sqrt();
            if len > 0.0 {
                let r = PLAYER_RADIUS;
                p.x = (p.x + dx / len * step).clamp(r, ARENA_W - r);
                p.y = (p.y + dy / len * step).clamp(r, ARENA_H - r);
            }
            p.aim = input.aim;
        }
        if input.buttons & FIRE != 0 {
            self.fire(player, &input);
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        self.tick = ctx.tick();
        self.respawn();
        self.remember();
        self.fly(ctx);
    }

    fn snapshot_for(&mut self, player: PlayerId, out: &mut BytesMut) {
        let Some(me) = self.players.get(&player) else {
            return;
        };
        let (cx, cy) = (me.x, me.y);
        let near =
            |x: f32, y: f32| (x - cx).powi(2) + (y - cy).powi(2) <= VIEW_RADIUS * VIEW_RADIUS;
        out.put_u32(player);
        out.put_u8(me.health);
        out.put_u16(me.score);
        let respawn_in = me.respawn_at.map_or(0, |t| {
            (t.saturating_sub(self.tick) * 10)
                .div_ceil(self.tick_hz)
                .clamp(1, 255)
        });
        out.put_u8(respawn_in as u8);
        let others = self
            .players
            .iter()
            .filter(|&(&id, p)| id != player && p.alive() && near(p.x, p.y));
        let count_at = out.len();
        out.put_u8(0);
        let mut count = 0u8;
        for (&id, p) in std::iter::once((&player, me)).chain(others) {
            if count == u8::MAX {
                break;
            }
            out.put_u32(id);
            out.put_f32(p.x);
            out.put_f32(p.y);
            out.put_i16(p.aim);
            out.put_u8(p.health);
            count += 1;
        }
        out[count_at] = count;
        let shots_at = out.len();
        out.put_u8(0);
        let mut shots = 0u8;
        for s in self.shots.iter().filter(|s| near(s.x, s.y)) {
            if shots == u8::MAX {
                break;
            }
            out.put_f32(s.x);
            out.put_f32(s.y);
            shots += 1;
        }
        out[shots_at] = shots;
    }

    fn welcome(&mut self, _: PlayerId, out: &mut BytesMut) {
        for v in [
            ARENA_W,
            ARENA_H,
            SPEED,
            PLAYER_RADIUS,
            VIEW_RADIUS,
            PROJECTILE_SPEED,
        ] {
            out.put_f32(v);
        }
        out.put_u8(MAX_HEALTH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Harness;

    fn game() -> Harness<Shooter> {
        Harness::new(Shooter::new)
    }

    fn place(g: &mut Harness<Shooter>, id: PlayerId, x: f32, y: f32) {
        let p = g.game_mut().players.get_mut(&id).unwrap();
        (p.x, p.y) = (x, y);
    }

    fn add(g: &mut Harness<Shooter>, id: PlayerId) {
        g.join(id, "p", &[]).unwrap();
    }

    fn fire(g: &mut Harness<Shooter>, id: PlayerId, aim: i16, view_tick: u32) {
        let input = Input {
            buttons: FIRE,
            aim,
            view_tick,
        };
        g.input(id, &input.encode()).unwrap();
    }

    fn health(g: &Harness<Shooter>, id: PlayerId) -> u8 {
        g.game().players[&id].health
    }

    /// A target that has moved away since the shooter's view is still hit
    /// where the shooter saw it; without the rewind the shot misses.
    #[test]
    fn shots_hit_targets_where_the_shooter_saw_them() {
        for (compensated, hits) in [(true, true), (false, false)] {
            let mut g = game();
            add(&mut g, 1);
            add(&mut g, 2);
            place(&mut g, 1, 100.0, 450.0);
            place(&mut g, 2, 170.0, 450.0);
            for _ in 0..20 {
                g.tick();
            }
            // The target steps out of the line of fire; the shooter, 12
            // ticks (200 ms) behind, still sees it there for 6 more ticks.
            place(&mut g, 2, 170.0, 650.0);
            for _ in 0..6 {
                g.tick();
            }
            let now = g.tick_number();
            let view_tick = if compensated { now - 12 } else { now };
            fire(&mut g, 1, 0, view_tick);
            for _ in 0..40 {
                g.tick();
            }
            let health = health(&g, 2);
            assert_eq!(
                health < MAX_HEALTH,
                hits,
                "compensated {compensated}: health {health}"
            );
        }
    }

    #[test]
    fn a_fourth_hit_kills_announces_and_respawns() {
        let mut g = game();
        add(&mut g, 1);
        add(&mut g, 2);
        place(&mut g, 1, 100.0, 450.0);
        place(&mut g, 2, 200.0, 450.0);
        for _ in 0..4 {
            let now = g.tick_number();
            fire(&mut g, 1, 0, now);
            for _ in 0..15 {
                g.tick();
            }
        }
        assert!(!g.game().players[&2].alive());
        assert_eq!(g.game().players[&1].score, 1);
        let kill: Vec<u8> = [&[KILL][..], &1u32.to_be_bytes(), &2u32.to_be_bytes()].concat();
        let feed = g.take_sent();
        assert!(
            feed.iter()
                .any(|s| s.payload[..] == kill[..] && s.to == vec![1, 2]),
            "{feed:?}"
        );
        for _ in 0..(RESPAWN_SECS * 60) {
            g.tick();
        }
        assert!(g.game().players[&2].alive());
        assert_eq!(health(&g, 2), MAX_HEALTH);
    }

    #[test]
    fn snapshots_leave_out_what_is_beyond_the_view_radius() {
        let mut g = game();
        for id in 1..=3 {
            add(&mut g, id);
        }
        place(&mut g, 1, 100.0, 100.0);
        place(&mut g, 2, 300.0, 100.0);
        place(&mut g, 3, 1500.0, 800.0);
        g.tick();
        let count = |g: &mut Harness<Shooter>, id| g.snapshot_for(id)[8];
        assert_eq!(count(&mut g, 1), 2, "1 sees itself and 2");
        assert_eq!(count(&mut g, 3), 1, "3 sees only itself");
    }

    #[test]
    fn fire_rate_is_limited_and_bad_inputs_rejected() {
        let mut g = game();
        add(&mut g, 1);
        for _ in 0..5 {
            fire(&mut g, 1, 0, 0);
        }
        assert_eq!(g.game().shots.len(), 1);
        for bad in [&[FIRE << 1, 0, 0, 0, 0, 0, 0][..], &[0; 6]] {
            assert!(g.input(1, bad).is_err(), "{bad:?}");
        }
    }
}
