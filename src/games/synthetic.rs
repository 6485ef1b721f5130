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

    /// The configured size, at least 4. A size no frame can hold is kept:
    /// Rally then does not send the snapshot and counts it, as for any
    /// game (PROTOCOL.md §8).
    fn payload(room: &RoomInfo<'_>) -> Result<usize, String> {
        Ok(room.options.parse_or("payload", DEFAULT_PAYLOAD)?.max(4))
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
        let _ = ctx.send(To::Player(player), delivery, msg);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::{GameOptions, Harness};

    #[test]
    fn the_snapshot_has_the_configured_size_and_starts_with_the_tick() {
        let opts = GameOptions::new([("payload".to_string(), "300".to_string())]);
        let mut g = Harness::with_options(Synthetic::new, 60, &opts);
        g.join(1, "p", &[]).unwrap();
        g.tick();
        g.tick();
        let s = g.snapshot();
        assert_eq!(s.len(), 300);
        assert_eq!(&s[..4], &2u32.to_be_bytes());
        g.message(1, b"ping", Delivery::Unreliable).unwrap();
        let sent = g.take_sent();
        assert_eq!(
            (&sent[0].to[..], &sent[0].payload[..]),
            (&[1][..], &b"ping"[..])
        );
        let bad = GameOptions::new([("payload".to_string(), "lots".to_string())]);
        let info = RoomInfo {
            name: "t",
            tick_hz: 60,
            snapshot_every: 1,
            max_players: 8,
            options: &bad,
        };
        assert!(Synthetic::check(&info)
            .unwrap_err()
            .contains("payload=lots"));
    }
}
