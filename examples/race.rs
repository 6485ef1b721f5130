//! A complete Rally game in one file: a button-mashing race. Every press of
//! the space bar is an input; the server counts them, sends everyone the
//! scores 20 times a second, and announces the first to reach the goal.
//!
//!     cargo run --release --example race
//!
//! then open http://127.0.0.1:4433/ in two tabs. `race.html` is the page.

use std::collections::BTreeMap;

use rally::bytes::{BufMut, BytesMut};
use rally::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To};

/// Presses needed to win.
const GOAL: u16 = 50;

struct Race {
    scores: BTreeMap<PlayerId, u16>,
}

impl Race {
    fn new(_room: &RoomInfo) -> Race {
        Race {
            scores: BTreeMap::new(),
        }
    }
}

impl Game for Race {
    fn join(&mut self, _: &mut Ctx, player: PlayerId, _: Join) -> Result<(), Reject> {
        self.scores.insert(player, 0);
        Ok(())
    }

    fn leave(&mut self, _: &mut Ctx, player: PlayerId) {
        self.scores.remove(&player);
    }

    /// One input per frame: 1 if space went down since the last one.
    fn input(&mut self, ctx: &mut Ctx, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        match input {
            [0] => Ok(()),
            [1] => {
                let score = self.scores.entry(player).or_default();
                *score += 1;
                if *score == GOAL {
                    // Everyone learns the winner, exactly once; a new race starts.
                    let _ = ctx.send(To::Room, Delivery::Reliable, &player.to_be_bytes());
                    self.scores.values_mut().for_each(|s| *s = 0);
                }
                Ok(())
            }
            _ => Err(Reject::new("an input is one byte, 0 or 1")),
        }
    }

    /// The scores: `count:u16`, then `(id:u32 score:u16)` per player.
    fn snapshot(&mut self, out: &mut BytesMut) {
        out.put_u16(self.scores.len() as u16);
        for (&id, &score) in &self.scores {
            out.put_u32(id);
            out.put_u16(score);
        }
    }

    /// What a client needs before the first snapshot: the goal.
    fn welcome(&mut self, _: PlayerId, out: &mut BytesMut) {
        out.put_u16(GOAL);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rally::cli::init_logging(); // to stderr; RALLY_LOG=debug for more
    rally::Server::builder()
        // The same flags as `rally serve` (try --help), e.g. --snapshot-every.
        .config_from_args()
        .game(Race::new)
        .file("/", include_str!("race.html"))
        .serve()
        .await
}
