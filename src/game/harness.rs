//! A game without a server: call its callbacks as the room would and look
//! at what it sent. For a game's unit tests and benchmarks.
//!
//! ```
//! use rally::game::{Delivery, Harness};
//! use rally::games::dots::{Dots, RIGHT};
//!
//! let mut h = Harness::new(Dots::new);
//! h.join(1, "ann", b"").unwrap();
//! h.input(1, &[RIGHT]).unwrap();
//! h.message(1, b"hello", Delivery::Reliable).unwrap();
//! let chat = h.take_sent();
//! assert_eq!(chat[0].to, vec![1]);
//! let snapshot = h.snapshot();
//! assert_eq!(snapshot.len(), 2 + 12);
//! ```

use bytes::{Bytes, BytesMut};

use super::{
    Ctx, Delivery, Game, GameOptions, Join, MakeGame, Outbox, PlayerId, Reject, RoomInfo, View,
};

/// A message the game sent, with the players it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub to: Vec<PlayerId>,
    pub delivery: Delivery,
    pub payload: Bytes,
}

/// Drives one game as a room of `tick_hz` 60 would; see the module docs.
pub struct Harness<G> {
    game: G,
    tick: u32,
    tick_hz: u16,
    players: Vec<PlayerId>,
    out: Outbox,
    sent: Vec<Sent>,
}

impl<G: Game> Harness<G> {
    /// A room called `test` at 60 Hz with up to 64 players and no options.
    pub fn new<M: MakeGame<Game = G>>(make: M) -> Harness<G> {
        Self::with_options(make, 60, &GameOptions::default())
    }

    pub fn with_options<M: MakeGame<Game = G>>(
        make: M,
        tick_hz: u16,
        options: &GameOptions,
    ) -> Harness<G> {
        let info = RoomInfo {
            name: "test",
            tick_hz,
            snapshot_every: 1,
            max_players: 64,
            options,
        };
        Harness {
            game: make.make(&info),
            tick: 0,
            tick_hz,
            players: Vec::new(),
            out: Outbox::default(),
            sent: Vec::new(),
        }
    }

    pub fn game(&self) -> &G {
        &self.game
    }

    pub fn game_mut(&mut self) -> &mut G {
        &mut self.game
    }

    pub fn tick_number(&self) -> u32 {
        self.tick
    }

    /// Calls the game, then resolves what it sent against the players in
    /// the room, as the room does when a callback returns.
    fn call<R>(&mut self, f: impl FnOnce(&mut G, &mut Ctx<'_>) -> R) -> R {
        let mut ctx = Ctx {
            tick: self.tick,
            tick_hz: self.tick_hz,
            players: &self.players,
            out: &mut self.out,
        };
        let r = f(&mut self.game, &mut ctx);
        for o in self.out.sent.drain(..) {
            let to = self
                .players
                .iter()
                .copied()
                .filter(|&p| o.to.includes(p))
                .collect();
            self.sent.push(Sent {
                to,
                delivery: o.delivery,
                payload: o.payload,
            });
        }
        r
    }

    /// A player joins; on success it is in the room.
    pub fn join(&mut self, player: PlayerId, name: &str, app: &[u8]) -> Result<(), Reject> {
        let join = Join { name, app };
        let r = self.call(|g, ctx| g.join(ctx, player, join));
        if r.is_ok() {
            if let Err(at) = self.players.binary_search(&player) {
                self.players.insert(at, player);
            }
        } else {
            // What a refused join sent is not sent.
            self.sent.clear();
        }
        r
    }

    pub fn leave(&mut self, player: PlayerId) {
        self.players.retain(|&p| p != player);
        self.call(|g, ctx| g.leave(ctx, player));
    }

    pub fn input(&mut self, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        self.call(|g, ctx| g.input(ctx, player, input))
    }

    pub fn message(
        &mut self,
        player: PlayerId,
        msg: &[u8],
        delivery: Delivery,
    ) -> Result<(), Reject> {
        self.call(|g, ctx| g.message(ctx, player, msg, delivery))
    }

    /// Advances one tick.
    pub fn tick(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        self.call(|g, ctx| g.tick(ctx));
    }

    /// The shared snapshot payload ([`View::Shared`]).
    pub fn snapshot(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.game.snapshot(&mut out);
        out.freeze()
    }

    /// What `player` sees ([`View::PerPlayer`]).
    pub fn snapshot_for(&mut self, player: PlayerId) -> Bytes {
        let mut out = BytesMut::new();
        self.game.snapshot_for(player, &mut out);
        out.freeze()
    }

    /// `Welcome.app` for `player`.
    pub fn welcome(&mut self, player: PlayerId) -> Bytes {
        let mut out = BytesMut::new();
        self.game.welcome(player, &mut out);
        out.freeze()
    }

    pub fn view(&self) -> View {
        self.game.view()
    }

    /// Messages the game tried to send that were too large for a frame.
    pub fn too_large(&self) -> u64 {
        self.out.too_large
    }

    /// Everything sent since the last call, oldest first.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}
