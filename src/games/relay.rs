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
        // A message within the client limit that no longer fits a frame
        // with the sender's id is not sent (Rally counts it); the sender
        // did nothing wrong.
        let _ = ctx.send_bytes(To::RoomExcept(player), delivery, out.freeze());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Harness;

    #[test]
    fn messages_go_to_everyone_else_with_the_senders_id_and_delivery() {
        let mut g = Harness::new(Relay::new);
        for id in 1..=3 {
            g.join(id, "p", &[]).unwrap();
        }
        g.message(2, b"move", Delivery::Unreliable).unwrap();
        g.message(3, b"chat", Delivery::Reliable).unwrap();
        let sent = g.take_sent();
        assert_eq!(sent[0].to, vec![1, 3]);
        assert_eq!(sent[0].delivery, Delivery::Unreliable);
        assert_eq!(&sent[0].payload[..], b"\0\0\0\x02move");
        assert_eq!(sent[1].to, vec![1, 2]);
        assert_eq!(sent[1].delivery, Delivery::Reliable);
        assert_eq!(g.view(), View::None);
        assert!(g.welcome(1).is_empty());
    }

    /// A message within the client limit that cannot be forwarded with the
    /// sender's id is not sent and is counted; the sender did nothing wrong.
    #[test]
    fn a_message_too_large_to_forward_is_counted_not_refused() {
        let mut g = Harness::new(Relay::new);
        g.join(1, "a", &[]).unwrap();
        g.join(2, "b", &[]).unwrap();
        g.message(1, &vec![0u8; 65_534], Delivery::Reliable)
            .unwrap();
        assert!(g.take_sent().is_empty());
        assert_eq!(g.too_large(), 1);
    }
}
