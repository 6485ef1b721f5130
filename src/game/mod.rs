//! The game API: what a game implements, and the context through which it
//! answers. See docs/GAME-API.md for a guide.
//!
//! A game is sans-IO: Rally's room task calls it synchronously with events
//! — a player joins or leaves, an input or a message arrives, the room
//! ticks — and asks it for snapshots. The game answers through a [`Ctx`]:
//! send bytes to one player, a list or the room, reliably or not. It never
//! sees a transport, a socket, a task or a clock other than the tick; so a
//! game is tested with plain unit tests, and a panic in it is caught at one
//! place, the room (which then closes, telling its players `internal`).
//!
//! Bytes at the boundary: Rally moves the game's bytes and never looks
//! inside. A typed layer (the game's own codec, or serde) sits on top.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::protocol::MAX_SERVER_MSG;

/// A player's id within its room (never 0, never reused in a room).
pub type PlayerId = u32;

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Ordered and exactly once, across reconnects (numbered and replayed
    /// on resume).
    Reliable,
    /// At most once and latest-only: a datagram on WebTransport, newest-wins
    /// on WebSocket. Never replayed.
    Unreliable,
}

/// How a game's snapshots are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One payload per snapshot, shared by every recipient
    /// ([`Game::snapshot`]): encoded once, the fast path.
    Shared,
    /// One payload per recipient ([`Game::snapshot_for`]): interest
    /// management; costs a payload per player per snapshot.
    PerPlayer,
    /// No snapshots: the game speaks only in messages.
    None,
}

/// Who a message goes to.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    Player(PlayerId),
    Players(&'a [PlayerId]),
    /// Every player in the room.
    Room,
    /// Every player in the room but one (e.g. the sender of a relayed
    /// message).
    RoomExcept(PlayerId),
}

/// Why the game refuses something: a join (the client gets `join_refused`
/// with this reason), or an input's or message's bytes (the client gets
/// `bad_message` with this reason and is removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject(pub Cow<'static, str>);

impl Reject {
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Reject {
        Reject(reason.into())
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message the game tried to send is larger than a server message can
/// be (65 535 bytes with its type byte); it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message of {0} bytes does not fit a frame")]
pub struct TooLarge(pub usize);

/// What a player sent with `Hello`.
#[derive(Debug, Clone, Copy)]
pub struct Join<'a> {
    pub name: &'a str,
    /// The game's join bytes (`Hello.app`), possibly empty.
    pub app: &'a [u8],
}

/// `key=value` options for the game (`rally serve --game-opt key=value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GameOptions(BTreeMap<String, String>);

impl GameOptions {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> GameOptions {
        GameOptions(pairs.into_iter().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The option parsed, `default` when absent; an unparseable value is an
    /// error naming the key.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("game option {key}={v}: not a valid value")),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What a game is told when its room starts.
#[derive(Debug, Clone, Copy)]
pub struct RoomInfo<'a> {
    pub name: &'a str,
    pub tick_hz: u16,
    /// A snapshot is taken every this many ticks.
    pub snapshot_every: u16,
    pub max_players: usize,
    pub options: &'a GameOptions,
}

/// What a callback sent: its messages, resolved to their recipients when
/// it returns, and how many were too large to send.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub sent: Vec<Outgoing>,
    pub too_large: u64,
}

/// A message the game queued.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub to: Target,
    pub delivery: Delivery,
    pub payload: Bytes,
}

/// [`To`], owned.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Player(PlayerId),
    Players(Arc<[PlayerId]>),
    Room,
    RoomExcept(PlayerId),
}

impl Target {
    pub fn includes(&self, id: PlayerId) -> bool {
        match self {
            Target::Player(p) => *p == id,
            Target::Players(list) => list.contains(&id),
            Target::Room => true,
            Target::RoomExcept(p) => *p != id,
        }
    }
}

/// The room, as a game callback sees it: the tick, the players, and where
/// to send. Messages sent from a callback leave when it returns, to the
/// players in the room then; a message to a player not in the room is
/// dropped.
pub struct Ctx<'a> {
    pub(crate) tick: u32,
    pub(crate) tick_hz: u16,
    pub(crate) players: &'a [PlayerId],
    pub(crate) out: &'a mut Outbox,
}

impl<'a> Ctx<'a> {
    /// The room's current tick (the one being simulated in [`Game::tick`]).
    pub fn tick(&self) -> u32 {
        self.tick
    }

    pub fn tick_hz(&self) -> u16 {
        self.tick_hz
    }

    /// Players in the room, ascending (a player being added by
    /// [`Game::join`] is not among them yet; one kept for resume after a
    /// drop is).
    pub fn players(&self) -> &[PlayerId] {
        self.players
    }

    /// Sends a copy of `msg` to `to`.
    pub fn send(&mut self, to: To<'_>, delivery: Delivery, msg: &[u8]) -> Result<(), TooLarge> {
        self.send_bytes(to, delivery, Bytes::copy_from_slice(msg))
    }

    /// Sends `msg` to `to` without copying it (one buffer for every
    /// recipient). A message too large for a frame is not sent: it is
    /// counted (`/health` `app_messages_too_large`) and the error returned.
    pub fn send_bytes(
        &mut self,
        to: To<'_>,
        delivery: Delivery,
        msg: Bytes,
    ) -> Result<(), TooLarge> {
        // One byte of message type goes before the payload.
        if msg.len() + 1 > MAX_SERVER_MSG {
            self.out.too_large += 1;
            return Err(TooLarge(msg.len()));
        }
        let to = match to {
            To::Player(p) => Target::Player(p),
            To::Players(list) => Target::Players(list.into()),
            To::Room => Target::Room,
            To::RoomExcept(p) => Target::RoomExcept(p),
        };
        self.out.sent.push(Outgoing {
            to,
            delivery,
            payload: msg,
        });
        Ok(())
    }
}

/// One room's game. The room task owns it and calls it; see the module
/// docs. Every method but [`Game::join`] and [`Game::leave`] has a default,
/// so a game writes only what it needs.
pub trait Game: Send + 'static {
    /// How snapshots are made; asked once, when the room starts.
    fn view(&self) -> View {
        View::Shared
    }

    /// A player asks to join. `Err` refuses it: the client gets
    /// `join_refused` with the reason, and nothing else happens.
    fn join(&mut self, ctx: &mut Ctx<'_>, player: PlayerId, join: Join<'_>) -> Result<(), Reject>;

    /// A player left: it sent `Leave`, was removed for an error, or did
    /// not resume within the resume window after its connection dropped.
    fn leave(&mut self, ctx: &mut Ctx<'_>, player: PlayerId);

    /// One input of a player, in sequence order and at most once (Rally
    /// undoes the clients' redundancy and caps inputs at 8 per player per
    /// tick). `Err` closes the player's session with `bad_message`.
    fn input(&mut self, ctx: &mut Ctx<'_>, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        let _ = (ctx, player, input);
        Ok(())
    }

    /// An application message from a player: `Reliable` ones exactly once
    /// and in order, `Unreliable` ones at most once. `Err` closes the
    /// player's session with `bad_message`. By default a game takes none.
    fn message(
        &mut self,
        ctx: &mut Ctx<'_>,
        player: PlayerId,
        msg: &[u8],
        delivery: Delivery,
    ) -> Result<(), Reject> {
        let _ = (ctx, player, msg, delivery);
        Err(Reject::new("this game takes no messages"))
    }

    /// Advances the simulation by one tick (`ctx.tick()` is the new tick).
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// [`View::Shared`]: writes this snapshot's payload, once for everyone.
    fn snapshot(&mut self, out: &mut BytesMut) {
        let _ = out;
    }

    /// [`View::PerPlayer`]: writes what `player` may see.
    fn snapshot_for(&mut self, player: PlayerId, out: &mut BytesMut) {
        let _ = (player, out);
    }

    /// Optional: the game's own delta of `current` against `base` (two
    /// payloads this game wrote for the same recipient, `base` one it
    /// acknowledged). Write it to `out` and return `true`, and Rally sends
    /// it with codec 1 (PROTOCOL.md §5.1): only clients given the game's
    /// decoder (`applyDelta` in rally.js, `ConnectOptions::apply_delta`
    /// natively) can apply it. `false` (the default): Rally's generic
    /// delta, which any client applies. Rally sends the snapshot whole
    /// when a delta is not smaller.
    fn delta(&mut self, base: &[u8], current: &[u8], out: &mut BytesMut) -> bool {
        let _ = (base, current, out);
        false
    }

    /// Writes the game's bytes for `Welcome.app`, sent on every join and
    /// resume (e.g. the arena's size).
    fn welcome(&mut self, player: PlayerId, out: &mut BytesMut) {
        let _ = (player, out);
    }
}

/// Makes one game per room: a closure or function taking the room's
/// [`RoomInfo`], e.g. `MyGame::new` with `fn new(room: &RoomInfo) -> Self`.
pub trait MakeGame: Send + Sync + 'static {
    type Game: Game;
    fn make(&self, room: &RoomInfo<'_>) -> Self::Game;
}

impl<F, G> MakeGame for F
where
    F: Fn(&RoomInfo<'_>) -> G + Send + Sync + 'static,
    G: Game,
{
    type Game = G;
    fn make(&self, room: &RoomInfo<'_>) -> G {
        self(room)
    }
}

mod harness;
pub use harness::{Harness, Sent};
