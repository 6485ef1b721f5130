//! What a bot does in each built-in game: the bytes it sends every tick and
//! what it makes of what comes back. The bot loop (`bot::run`) does Rally's
//! part — connect, ping, resume — and calls a [`Behaviour`] for the game's
//! part, as a game client keeps its network code apart from its game code.
//!
//! Pure: no sockets, no clocks; randomness only in what to press. The bytes
//! are those of PROTOCOL.md §12.

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};
use rally::games::{dots, shooter};
use rally::protocol::Snapshot;

/// The built-in games a bot can play (`rally bot --game`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BotGame {
    /// Random buttons held about half a second.
    #[default]
    Dots,
    /// A cursor as unreliable messages, a reliable message every second.
    Relay,
    /// Moves, sweeps its aim and fires, naming the tick it was showing.
    Shooter,
    /// Reliable and unreliable messages, checking the echoes.
    Synthetic,
}

impl BotGame {
    /// A fresh behaviour for one bot.
    pub fn behaviour(self) -> Box<dyn Behaviour> {
        match self {
            BotGame::Dots => Box::new(DotsBot::default()),
            BotGame::Relay => Box::new(RelayBot::default()),
            BotGame::Shooter => Box::new(ShooterBot::default()),
            BotGame::Synthetic => Box::new(SyntheticBot::default()),
        }
    }
}

/// Something a behaviour sends on a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The next input (the client numbers it and repeats it).
    Input(Vec<u8>),
    /// An application message: `App` when reliable, else `AppUnreliable`.
    Message { payload: Bytes, reliable: bool },
}

/// What bots noticed in the game's bytes.
#[derive(Debug, Default)]
pub struct Seen {
    /// Player ids, from where [`Behaviour::players_seen_from`] says.
    pub players: HashSet<u32>,
    /// Game bytes that broke the game's rules: a payload that does not
    /// decode, or an echo or relayed message out of sequence. Each is logged.
    pub faults: u64,
}

impl Seen {
    fn fault(&mut self, game: &str, what: std::fmt::Arguments<'_>) {
        self.faults += 1;
        tracing::warn!(game, "{what}");
    }
}

/// A bot's game-specific part.
pub trait Behaviour: Send {
    /// The game it plays, as the server names it in `Welcome.game`.
    fn game(&self) -> &'static str;

    /// What `distinct_players_seen` counts for this game, in words.
    fn players_seen_from(&self) -> &'static str;

    /// `Hello.app`.
    fn hello(&self) -> Bytes {
        Bytes::new()
    }

    /// A session began: `resumed` is false when the player is new (a fresh
    /// join, or a resume the server refused).
    fn connected(&mut self, player: u32, tick_hz: u16, resumed: bool) {
        let _ = (player, tick_hz, resumed);
    }

    /// Once per server tick: what to send.
    fn tick(&mut self, out: &mut Vec<Action>);

    fn snapshot(&mut self, snap: &Snapshot, seen: &mut Seen) {
        let _ = (snap, seen);
    }

    /// An application message from the game.
    fn message(&mut self, payload: &[u8], reliable: bool, seen: &mut Seen) {
        let _ = (payload, reliable, seen);
    }

    /// `PlayerJoined` (the roster after a join, then live joins).
    fn joined(&mut self, player: u32, seen: &mut Seen) {
        let _ = (player, seen);
    }
}

/// Movement buttons (up/down/left/right bits, shared by dots and shooter)
/// held for about half a second, then a new random set.
#[derive(Debug)]
struct Wander {
    hz: f64,
    buttons: u8,
    held: u32,
}

impl Default for Wander {
    fn default() -> Self {
        Wander {
            hz: 60.0,
            buttons: dots::RIGHT,
            held: 0,
        }
    }
}

impl Wander {
    fn next(&mut self) -> u8 {
        self.held += 1;
        if self.held as f64 > self.hz / 2.0 {
            self.held = 0;
            let b = rand::random::<u8>() & dots::ALL;
            self.buttons = if b == 0 { dots::LEFT } else { b };
        }
        self.buttons
    }
}

/// `dots`: random buttons held about half a second (the bots before games
/// existed did exactly this); players seen are the snapshot's dots.
#[derive(Debug, Default)]
pub struct DotsBot {
    wander: Wander,
}

impl Behaviour for DotsBot {
    fn game(&self) -> &'static str {
        "dots"
    }

    fn players_seen_from(&self) -> &'static str {
        "player ids in the snapshots"
    }

    fn connected(&mut self, _: u32, tick_hz: u16, _: bool) {
        self.wander.hz = tick_hz.max(1) as f64;
    }

    fn tick(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Input(vec![self.wander.next()]));
    }

    fn snapshot(&mut self, snap: &Snapshot, seen: &mut Seen) {
        match dots::players(&snap.payload) {
            Some(players) => seen.players.extend(players.iter().map(|(id, _)| *id)),
            None => seen.fault(
                "dots",
                format_args!("tick {}: not a dots snapshot", snap.tick),
            ),
        }
    }
}

/// `shooter`: wanders like a dot, sweeps its aim a full turn a second,
/// fires about one tick in four (the server's cooldown limits the shots),
/// and names the newest snapshot tick it has as `view_tick` (the server
/// rewinds its targets by that much). Players seen are the snapshots' (each
/// bot sees the players within its view radius, itself included).
#[derive(Debug, Default)]
pub struct ShooterBot {
    wander: Wander,
    aim: i16,
    view_tick: u32,
}

/// A shooter snapshot (PROTOCOL.md §12): who is visible, and how many shots.
#[derive(Debug, Clone, PartialEq)]
pub struct ShooterView {
    pub you: u32,
    pub health: u8,
    pub players: Vec<u32>,
    pub shots: usize,
}

/// Reads a shooter snapshot payload; `None` when the bytes are not one.
pub fn shooter_view(p: &[u8]) -> Option<ShooterView> {
    const HEAD: usize = 9; // you, health, score, respawn_in, count
    const PLAYER: usize = 15; // id, x, y, aim, health
    const SHOT: usize = 8; // x, y
    let you = u32::from_be_bytes(p.get(..4)?.try_into().ok()?);
    let health = *p.get(4)?;
    let count = *p.get(8)? as usize;
    let players_end = HEAD + count * PLAYER;
    let players = (0..count)
        .map(|i| {
            let at = HEAD + i * PLAYER;
            Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?))
        })
        .collect::<Option<Vec<u32>>>()?;
    let shots = *p.get(players_end)? as usize;
    (p.len() == players_end + 1 + shots * SHOT).then_some(ShooterView {
        you,
        health,
        players,
        shots,
    })
}

impl Behaviour for ShooterBot {
    fn game(&self) -> &'static str {
        "shooter"
    }

    fn players_seen_from(&self) -> &'static str {
        "player ids in the snapshots (players within each bot's view radius)"
    }

    fn connected(&mut self, _: u32, tick_hz: u16, _: bool) {
        self.wander.hz = tick_hz.max(1) as f64;
    }

    fn tick(&mut self, out: &mut Vec<Action>) {
        let mut buttons = self.wander.next();
        if rand::random_ratio(1, 4) {
            buttons |= shooter::FIRE;
        }
        // 65 536 units a turn: 1 024 a tick is a turn a second at 64 Hz.
        self.aim = self.aim.wrapping_add(1024);
        let input = shooter::Input {
            buttons,
            aim: self.aim,
            view_tick: self.view_tick,
        };
        out.push(Action::Input(input.encode().to_vec()));
    }

    fn snapshot(&mut self, snap: &Snapshot, seen: &mut Seen) {
        self.view_tick = self.view_tick.max(snap.tick);
        match shooter_view(&snap.payload) {
            Some(v) => seen.players.extend(v.players),
            None => seen.fault(
                "shooter",
                format_args!("tick {}: not a shooter snapshot", snap.tick),
            ),
        }
    }

    fn message(&mut self, payload: &[u8], reliable: bool, seen: &mut Seen) {
        // The only message is the reliable kill feed: 1, killer, victim.
        if !(reliable && payload.len() == 9 && payload[0] == shooter::KILL) {
            seen.fault(
                "shooter",
                format_args!("unexpected message {payload:02x?} (reliable: {reliable})"),
            );
        }
    }
}

const CURSOR: u8 = b'C';
const NOTE: u8 = b'N';

/// `relay`: a cursor moving in a circle as `AppUnreliable` every other tick
/// (`'C' x:f32 y:f32`), and a numbered reliable `App` every second (`'N'
/// n:u32`), as a shared whiteboard or a turn-based game would. Sends no
/// inputs (relay ignores them). Checks each sender's numbered messages
/// arrive in sequence. Players seen are the senders of relayed messages.
#[derive(Debug, Default)]
pub struct RelayBot {
    hz: u32,
    ticks: u32,
    notes: u32,
    /// Last note number seen from each sender.
    last_note: HashMap<u32, u32>,
}

impl Behaviour for RelayBot {
    fn game(&self) -> &'static str {
        "relay"
    }

    fn players_seen_from(&self) -> &'static str {
        "senders of relayed messages (relay has no snapshots)"
    }

    fn connected(&mut self, _: u32, tick_hz: u16, resumed: bool) {
        self.hz = tick_hz.max(1) as u32;
        if !resumed {
            // A new player: what it receives starts afresh.
            self.last_note.clear();
        }
    }

    fn tick(&mut self, out: &mut Vec<Action>) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(2) {
            let a = self.ticks as f32 / self.hz.max(1) as f32;
            let mut b = BytesMut::with_capacity(9);
            b.put_u8(CURSOR);
            b.put_f32(480.0 + 200.0 * a.cos());
            b.put_f32(270.0 + 200.0 * a.sin());
            out.push(Action::Message {
                payload: b.freeze(),
                reliable: false,
            });
        }
        if self.ticks.is_multiple_of(self.hz.max(1)) {
            self.notes += 1;
            let mut b = BytesMut::with_capacity(5);
            b.put_u8(NOTE);
            b.put_u32(self.notes);
            out.push(Action::Message {
                payload: b.freeze(),
                reliable: true,
            });
        }
    }

    fn message(&mut self, payload: &[u8], reliable: bool, seen: &mut Seen) {
        let Some((from, body)) = payload.split_first_chunk::<4>() else {
            return seen.fault("relay", format_args!("a relayed message without a sender"));
        };
        let from = u32::from_be_bytes(*from);
        seen.players.insert(from);
        match (reliable, body) {
            (false, [CURSOR, xy @ ..]) if xy.len() == 8 => {}
            (true, [NOTE, n @ ..]) if n.len() == 4 => {
                let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                // The first note seen from a sender may be any: it joined
                // earlier, or this player did later.
                if let Some(last) = self.last_note.insert(from, n) {
                    if n != last.wrapping_add(1) {
                        seen.fault(
                            "relay",
                            format_args!("note {n} from {from} after note {last}"),
                        );
                    }
                }
            }
            _ => seen.fault(
                "relay",
                format_args!("unexpected message from {from}: {body:02x?} (reliable: {reliable})"),
            ),
        }
    }
}

const ECHO: u8 = b'E';
const UNRELIABLE_ECHO: u8 = b'U';

/// `synthetic`: sends no inputs (the game ignores them); a numbered
/// reliable `App` every half second (`'E' n:u32`) whose echoes must come
/// back exactly once and in order, across resumes too, and an
/// `AppUnreliable` every 10 ticks (`'U' tick:u32`) whose echoes may be
/// lost. Snapshots are the tick and filler. Its bytes carry no player ids:
/// players seen are the room's roster (`PlayerJoined`).
#[derive(Debug, Default)]
pub struct SyntheticBot {
    hz: u32,
    ticks: u32,
    sent: u32,
    /// Number of the last echo received.
    echoed: u32,
}

impl SyntheticBot {
    /// Reliable messages sent whose echo has not arrived (yet).
    pub fn unechoed(&self) -> u32 {
        self.sent - self.echoed
    }
}

impl Behaviour for SyntheticBot {
    fn game(&self) -> &'static str {
        "synthetic"
    }

    fn players_seen_from(&self) -> &'static str {
        "the room's roster (PlayerJoined): synthetic's bytes carry no player ids"
    }

    fn connected(&mut self, _: u32, tick_hz: u16, resumed: bool) {
        self.hz = tick_hz.max(1) as u32;
        if !resumed {
            // A new player: the client numbers its messages from 1 again.
            self.sent = 0;
            self.echoed = 0;
        }
    }

    fn tick(&mut self, out: &mut Vec<Action>) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of((self.hz / 2).max(1)) {
            self.sent += 1;
            let mut b = BytesMut::with_capacity(5);
            b.put_u8(ECHO);
            b.put_u32(self.sent);
            out.push(Action::Message {
                payload: b.freeze(),
                reliable: true,
            });
        }
        if self.ticks.is_multiple_of(10) {
            let mut b = BytesMut::with_capacity(5);
            b.put_u8(UNRELIABLE_ECHO);
            b.put_u32(self.ticks);
            out.push(Action::Message {
                payload: b.freeze(),
                reliable: false,
            });
        }
    }

    fn snapshot(&mut self, snap: &Snapshot, seen: &mut Seen) {
        if snap.payload.len() < 4 {
            seen.fault(
                "synthetic",
                format_args!(
                    "tick {}: a snapshot of {} bytes",
                    snap.tick,
                    snap.payload.len()
                ),
            );
        }
    }

    fn message(&mut self, payload: &[u8], reliable: bool, seen: &mut Seen) {
        match (reliable, payload) {
            (true, [ECHO, n @ ..]) if n.len() == 4 => {
                let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
                if n == self.echoed + 1 {
                    self.echoed = n;
                } else {
                    seen.fault(
                        "synthetic",
                        format_args!("echo {n} after echo {}", self.echoed),
                    );
                }
            }
            (false, [UNRELIABLE_ECHO, t @ ..]) if t.len() == 4 => {}
            _ => seen.fault(
                "synthetic",
                format_args!("unexpected message {payload:02x?} (reliable: {reliable})"),
            ),
        }
    }

    fn joined(&mut self, player: u32, seen: &mut Seen) {
        seen.players.insert(player);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(payload: Vec<u8>) -> Snapshot {
        Snapshot {
            ack_seq: 0,
            tick: 7,
            server_time_us: 0,
            payload: payload.into(),
        }
    }

    fn ticks(b: &mut dyn Behaviour, n: usize) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..n {
            b.tick(&mut out);
        }
        out
    }

    #[test]
    fn dots_bots_hold_valid_buttons_and_read_the_dots() {
        let mut b = BotGame::Dots.behaviour();
        b.connected(1, 60, false);
        let actions = ticks(b.as_mut(), 200);
        assert_eq!(actions.len(), 200);
        let mut changes = 0;
        let mut last = None;
        for a in &actions {
            let Action::Input(i) = a else { panic!("{a:?}") };
            assert!(i.len() == 1 && i[0] != 0 && i[0] & !dots::ALL == 0, "{i:?}");
            changes += (last != Some(i[0])) as u32;
            last = Some(i[0]);
        }
        // A new set about every 31 ticks (possibly the same one again).
        assert!(changes <= 8, "{changes} changes in 200 ticks");
        let mut seen = Seen::default();
        let mut payload = vec![0, 2];
        for id in [3u32, 9] {
            payload.extend(id.to_be_bytes());
            payload.extend([0; 8]);
        }
        b.snapshot(&snapshot(payload), &mut seen);
        b.snapshot(&snapshot(vec![0, 1, 0]), &mut seen);
        assert_eq!(seen.players, HashSet::from([3, 9]));
        assert_eq!(seen.faults, 1);
    }

    #[test]
    fn shooter_inputs_decode_and_carry_the_newest_view_tick() {
        let mut b = BotGame::Shooter.behaviour();
        b.connected(1, 60, false);
        let mut seen = Seen::default();
        // you = 5, alive, one player (itself), one shot.
        let mut p = vec![0, 0, 0, 5, 100, 0, 0, 0, 1];
        p.extend(5u32.to_be_bytes());
        p.extend([0; 11]);
        p.push(1);
        p.extend([0; 8]);
        let v = shooter_view(&p).unwrap();
        assert_eq!(
            (v.you, v.health, v.players.clone(), v.shots),
            (5, 100, vec![5], 1)
        );
        assert_eq!(shooter_view(&p[..p.len() - 1]), None);
        b.snapshot(&snapshot(p), &mut seen);
        assert_eq!(seen.players, HashSet::from([5]));
        for a in ticks(b.as_mut(), 100) {
            let Action::Input(i) = a else { panic!("{a:?}") };
            let input = shooter::Input::decode(&i).unwrap();
            assert_eq!(input.view_tick, 7);
        }
        b.message(&[shooter::KILL, 0, 0, 0, 1, 0, 0, 0, 2], true, &mut seen);
        assert_eq!(seen.faults, 0);
    }

    #[test]
    fn relay_bots_send_a_cursor_and_notes_and_check_each_senders_sequence() {
        let mut b = RelayBot::default();
        b.connected(1, 60, false);
        let actions = ticks(&mut b, 120);
        let reliable = actions
            .iter()
            .filter(|a| matches!(a, Action::Message { reliable: true, .. }))
            .count();
        assert_eq!((actions.len(), reliable), (62, 2));
        let mut seen = Seen::default();
        let note = |from: u32, n: u32| {
            let mut m = from.to_be_bytes().to_vec();
            m.push(NOTE);
            m.extend(n.to_be_bytes());
            m
        };
        b.message(&note(4, 10), true, &mut seen);
        b.message(&note(4, 11), true, &mut seen);
        b.message(&note(6, 1), true, &mut seen);
        assert_eq!(seen.faults, 0);
        b.message(&note(4, 11), true, &mut seen);
        assert_eq!(seen.faults, 1, "a repeated note");
        assert_eq!(seen.players, HashSet::from([4, 6]));
    }

    #[test]
    fn synthetic_bots_want_every_echo_once_and_in_order() {
        let mut b = SyntheticBot::default();
        b.connected(1, 60, false);
        let actions = ticks(&mut b, 90);
        let sent: Vec<Bytes> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Message {
                    payload,
                    reliable: true,
                } => Some(payload.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(actions.len(), 3 + 9);
        let mut seen = Seen::default();
        b.message(&sent[0], true, &mut seen);
        b.message(&sent[1], true, &mut seen);
        assert_eq!((seen.faults, b.unechoed()), (0, 1));
        b.message(&sent[1], true, &mut seen);
        assert_eq!(seen.faults, 1, "a duplicate echo");
        // A resumed player keeps its numbering; a new one starts again.
        b.connected(1, 60, true);
        b.message(&sent[2], true, &mut seen);
        assert_eq!((seen.faults, b.unechoed()), (1, 0));
        b.connected(2, 60, false);
        assert_eq!(b.unechoed(), 0);
    }
}
