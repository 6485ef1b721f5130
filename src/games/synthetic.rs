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
    /// `moving=P`: the percentage of 12-byte records that change each tick.
    moving: Option<u32>,
    tick: u32,
}

/// A 12-byte record of `moving` snapshots.
pub const RECORD: usize = 12;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The payload of the snapshot at `tick` (PROTOCOL.md §12): `size` bytes,
/// with `moving` as the game option. A function of the tick alone, so a
/// client can check every state it makes whole.
pub fn payload_at(tick: u32, size: usize, moving: Option<u32>, out: &mut BytesMut) {
    let size = size.max(4);
    out.reserve(size);
    out.put_u32(tick);
    let filler = size - 4;
    let Some(p) = moving else {
        out.extend((0..filler).map(|i| (i as u8).wrapping_add(tick as u8)));
        return;
    };
    let period = if p == 0 {
        None
    } else {
        Some(((100 + p / 2) / p.min(100)).max(1))
    };
    let records = filler / RECORD;
    for r in 0..records as u64 {
        let epoch = period.map_or(0, |n| (tick as u64 + r) / n as u64);
        let seed = (r << 32).wrapping_add(epoch);
        out.put_u64(splitmix64(seed));
        out.put_u32((splitmix64(seed + 1) >> 32) as u32);
    }
    out.put_bytes(0, filler - records * RECORD);
}

impl Synthetic {
    /// Panics on an unparseable `payload` option: checked at startup by
    /// [`Synthetic::check`], so it only happens if that was skipped.
    pub fn new(room: &RoomInfo<'_>) -> Synthetic {
        Synthetic {
            payload: Self::payload(room).expect("payload option checked at startup"),
            moving: Self::moving(room).expect("moving option checked at startup"),
            tick: 0,
        }
    }

    /// The configured size, at least 4. A size no frame can hold is kept:
    /// Rally then does not send the snapshot and counts it, as for any
    /// game (PROTOCOL.md §8).
    fn payload(room: &RoomInfo<'_>) -> Result<usize, String> {
        Ok(room.options.parse_or("payload", DEFAULT_PAYLOAD)?.max(4))
    }

    /// `moving=P`, 0–100.
    fn moving(room: &RoomInfo<'_>) -> Result<Option<u32>, String> {
        match room.options.get("moving") {
            None => Ok(None),
            Some(_) => match room.options.parse_or("moving", 0u32)? {
                p @ 0..=100 => Ok(Some(p)),
                p => Err(format!("game option moving={p}: a percentage, 0-100")),
            },
        }
    }

    /// Checks the game's options, so a bad one stops the server at startup.
    pub fn check(room: &RoomInfo<'_>) -> Result<(), String> {
        Self::payload(room)?;
        Self::moving(room).map(|_| ())
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
        payload_at(self.tick, self.payload, self.moving, out);
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

    #[test]
    fn moving_changes_that_share_of_the_records_each_tick() {
        for (p, want) in [(0, 0), (10, 10), (50, 50), (100, 100)] {
            let changed: usize = (1..=100u32)
                .map(|t| {
                    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
                    payload_at(t, 4 + 12 * 84, Some(p), &mut a);
                    payload_at(t + 1, 4 + 12 * 84, Some(p), &mut b);
                    a[4..]
                        .chunks(RECORD)
                        .zip(b[4..].chunks(RECORD))
                        .filter(|(x, y)| x != y)
                        .count()
                })
                .sum();
            // Percent of 84 records over 100 ticks.
            let pct = changed as f64 / 84.0;
            assert!((pct - want as f64).abs() <= 2.0, "moving={p}: {pct}%");
        }
        let opts = GameOptions::new([("moving".to_string(), "101".to_string())]);
        let info = RoomInfo {
            name: "t",
            tick_hz: 60,
            snapshot_every: 1,
            max_players: 8,
            options: &opts,
        };
        assert!(Synthetic::check(&info).unwrap_err().contains("moving=101"));
    }
}
