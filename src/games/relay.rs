//! `relay`: non-authoritative. Every application message a client sends
//! reaches the rest of its room with the same delivery, prefixed with the
//! sender's id; the server keeps no state and takes no snapshots. For
//! prototypes and turn-based games, where clients agree among themselves.

use bytes::{BufMut, BytesMut};

use crate::game::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To, View};

pub struct Relay;

impl Relay {
    pub fn new(_: &RoomInfo<'_>) -> Relay {
        Relay
    }
}

impl Game for Relay {
    fn view(&self) -> View {
        View::None
    }

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
        let mut out = BytesMut::with_capacity(4 + msg.len());
        out.put_u32(player);
        out.put_slice(msg);
        // A client message is at most 64 KiB - 1: with 4 bytes it still fits
        // a frame only below that, which the client limit guarantees.
        ctx.send_bytes(To::RoomExcept(player), delivery, out.freeze())
            .map_err(|e| Reject::new(e.to_string()))
    }
}
