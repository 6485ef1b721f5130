//! `synthetic`: a test and benchmark game. Its snapshot is the tick number
//! followed by filler up to a configured size (`--game-opt payload=N`,
//! default 64), so the lab and the load generator choose the snapshot size
//! without players; it echoes each application message to its sender with
//! the same delivery, and ignores inputs.

use bytes::{BufMut, BytesMut};

use crate::game::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To};

/// Default payload size.
pub const DEFAULT_PAYLOAD: usize = 64;

pub struct Synthetic {
    payload: usize,
    tick: u32,
}

impl Synthetic {
    /// Panics on an unparseable `payload` option: checked at startup by
    /// [`Synthetic::check`], so it only happens if that was skipped.
    pub fn new(room: &RoomInfo<'_>) -> Synthetic {
        Synthetic {
            payload: Self::payload(room).expect("payload option checked at startup"),
            tick: 0,
        }
    }

    fn payload(room: &RoomInfo<'_>) -> Result<usize, String> {
        Ok(room
            .options
            .parse_or("payload", DEFAULT_PAYLOAD)?
            .clamp(4, u16::MAX as usize - 32))
    }

    /// Checks the game's options, so a bad one stops the server at startup.
    pub fn check(room: &RoomInfo<'_>) -> Result<(), String> {
        Self::payload(room).map(|_| ())
    }
}

impl Game for Synthetic {
    fn join(&mut self, _: &mut Ctx<'_>, _: PlayerId, _: Join<'_>) -> Result<(), Reject> {
        Ok(())
    }

    fn leave(&mut self, _: &mut Ctx<'_>, _: PlayerId) {}

    fn message(
        &mut self,
        ctx: &mut Ctx<'_>,
        player: PlayerId,
        msg: &[u8],
        delivery: Delivery,
    ) -> Result<(), Reject> {
        ctx.send(To::Player(player), delivery, msg)
            .map_err(|e| Reject::new(e.to_string()))
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        self.tick = ctx.tick();
    }

    fn snapshot(&mut self, out: &mut BytesMut) {
        out.reserve(self.payload);
        out.put_u32(self.tick);
        let filler = self.payload - 4;
        out.extend((0..filler).map(|i| (i as u8).wrapping_add(self.tick as u8)));
    }
}
