//! `dots`: every player is a dot moved by four buttons around a shared
//! arena, and may chat. The default game, and the smallest complete one:
//! one shared snapshot per tick (the fast path), input-driven movement that
//! a client can predict by replaying its unacknowledged inputs.
//!
//! Bytes (PROTOCOL.md §12): `Welcome.app` is the arena and speed; an input
//! is one byte of buttons; the snapshot is `count:u16` then
//! `(id:u32 x:f32 y:f32)` by id; chat goes up as `App` text and comes down
//! as `App` `id:u32` + text.

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};

use crate::game::{Ctx, Delivery, Game, Join, PlayerId, Reject, RoomInfo, To};

pub const ARENA_W: f32 = 960.0;
pub const ARENA_H: f32 = 540.0;
/// Arena units per second of held input.
pub const SPEED: f32 = 240.0;
/// Longest chat line, in bytes of UTF-8.
pub const MAX_CHAT: usize = 200;

/// Button bits of an input.
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;
pub const LEFT: u8 = 4;
pub const RIGHT: u8 = 8;
pub const ALL: u8 = UP | DOWN | LEFT | RIGHT;

/// Unit direction (-1, 0 or 1 per axis) of held buttons; y grows
/// downwards. Opposite buttons cancel; diagonals are not normalised.
pub fn direction(buttons: u8) -> (f32, f32) {
    let axis =
        |neg: u8, pos: u8| (buttons & pos != 0) as i8 as f32 - (buttons & neg != 0) as i8 as f32;
    (axis(LEFT, RIGHT), axis(UP, DOWN))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dot {
    pub x: f32,
    pub y: f32,
}

pub struct Dots {
    /// Distance one input moves a dot along each held axis.
    step: f32,
    dots: BTreeMap<PlayerId, Dot>,
}

impl Dots {
    pub fn new(room: &RoomInfo<'_>) -> Dots {
        Dots {
            step: SPEED / room.tick_hz as f32,
            dots: BTreeMap::new(),
        }
    }

    pub fn dot(&self, id: PlayerId) -> Option<Dot> {
        self.dots.get(&id).copied()
    }
}

/// A spawn point spread over the arena by id (golden-ratio spacing: no
/// randomness, so the state is deterministic for tests).
pub fn spawn(id: PlayerId) -> Dot {
    let fx = (id as f32 * 0.618_034).fract();
    let fy = (id as f32 * 0.381_966 + 0.25).fract();
    let margin = 40.0;
    Dot {
        x: margin + fx * (ARENA_W - 2.0 * margin),
        y: margin + fy * (ARENA_H - 2.0 * margin),
    }
}

/// Reads a `dots` snapshot payload: every player's id and position, by id.
/// `None` when the bytes are not one.
pub fn players(payload: &[u8]) -> Option<Vec<(PlayerId, Dot)>> {
    let count = u16::from_be_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    if payload.len() != 2 + 12 * count {
        return None;
    }
    let at = |i: usize| 2 + 12 * i;
    (0..count)
        .map(|i| {
            let b = &payload[at(i)..at(i + 1)];
            let id = u32::from_be_bytes(b[..4].try_into().ok()?);
            let x = f32::from_be_bytes(b[4..8].try_into().ok()?);
            let y = f32::from_be_bytes(b[8..12].try_into().ok()?);
            Some((id, Dot { x, y }))
        })
        .collect()
}

impl Game for Dots {
    fn join(&mut self, _: &mut Ctx<'_>, player: PlayerId, _: Join<'_>) -> Result<(), Reject> {
        self.dots.insert(player, spawn(player));
        Ok(())
    }

    fn leave(&mut self, _: &mut Ctx<'_>, player: PlayerId) {
        self.dots.remove(&player);
    }

    fn input(&mut self, _: &mut Ctx<'_>, player: PlayerId, input: &[u8]) -> Result<(), Reject> {
        let &[buttons] = input else {
            return Err(Reject::new("a dots input is one byte"));
        };
        if buttons & !ALL != 0 {
            return Err(Reject::new("undefined button bits"));
        }
        if let Some(d) = self.dots.get_mut(&player) {
            let (dx, dy) = direction(buttons);
            d.x = (d.x + dx * self.step).clamp(0.0, ARENA_W);
            d.y = (d.y + dy * self.step).clamp(0.0, ARENA_H);
        }
        Ok(())
    }

    fn message(
        &mut self,
        ctx: &mut Ctx<'_>,
        player: PlayerId,
        msg: &[u8],
        delivery: Delivery,
    ) -> Result<(), Reject> {
        if delivery != Delivery::Reliable {
            return Err(Reject::new("chat is sent as a reliable App message"));
        }
        let text = std::str::from_utf8(msg).map_err(|_| Reject::new("chat is UTF-8 text"))?;
        if text.is_empty() || text.len() > MAX_CHAT {
            return Err(Reject::new("a chat line is 1-200 bytes"));
        }
        let mut line = BytesMut::with_capacity(4 + msg.len());
        line.put_u32(player);
        line.put_slice(msg);
        // 204 bytes at most: always fits.
        let _ = ctx.send_bytes(To::Room, Delivery::Reliable, line.freeze());
        Ok(())
    }

    fn snapshot(&mut self, out: &mut BytesMut) {
        out.reserve(2 + 12 * self.dots.len());
        // The room caps players far below u16::MAX.
        out.put_u16(self.dots.len() as u16);
        for (&id, d) in &self.dots {
            out.put_u32(id);
            out.put_f32(d.x);
            out.put_f32(d.y);
        }
    }

    fn welcome(&mut self, _: PlayerId, out: &mut BytesMut) {
        out.put_f32(ARENA_W);
        out.put_f32(ARENA_H);
        out.put_f32(SPEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Harness;

    fn game() -> Harness<Dots> {
        let mut h = Harness::new(Dots::new);
        h.join(1, "p", &[]).unwrap();
        h
    }

    #[test]
    fn inputs_move_by_speed_over_tick_rate_and_opposites_cancel() {
        let mut g = game();
        let d0 = g.game().dot(1).unwrap();
        g.input(1, &[RIGHT | DOWN]).unwrap();
        let d1 = g.game().dot(1).unwrap();
        assert!((d1.x - d0.x - 4.0).abs() < 1e-3 && (d1.y - d0.y - 4.0).abs() < 1e-3);
        g.input(1, &[UP | DOWN | LEFT | RIGHT]).unwrap();
        assert_eq!(g.game().dot(1).unwrap(), d1);
    }

    #[test]
    fn movement_is_clamped_to_the_arena() {
        let mut g = game();
        for _ in 0..400 {
            g.input(1, &[LEFT | UP]).unwrap();
        }
        assert_eq!(g.game().dot(1).unwrap(), Dot { x: 0.0, y: 0.0 });
    }

    #[test]
    fn bad_inputs_and_chat_are_rejected() {
        let mut g = game();
        for bad in [&[0x10][..], &[], &[1, 2]] {
            assert!(g.input(1, bad).is_err(), "{bad:?}");
        }
        let long = vec![b'a'; MAX_CHAT + 1];
        for (msg, d) in [
            (&b"\xff"[..], Delivery::Reliable),
            (&b""[..], Delivery::Reliable),
            (&long[..], Delivery::Reliable),
            (&b"hi"[..], Delivery::Unreliable),
        ] {
            assert!(g.message(1, msg, d).is_err());
        }
        assert!(g.take_sent().is_empty());
    }

    #[test]
    fn chat_goes_to_the_room_with_the_senders_id() {
        let mut g = game();
        g.join(7, "q", &[]).unwrap();
        g.message(7, "héllo".as_bytes(), Delivery::Reliable)
            .unwrap();
        let sent = g.take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].to, vec![1, 7]);
        assert_eq!(sent[0].delivery, Delivery::Reliable);
        assert_eq!(&sent[0].payload[..4], &7u32.to_be_bytes());
        assert_eq!(&sent[0].payload[4..], "héllo".as_bytes());
    }

    #[test]
    fn the_snapshot_lists_every_dot_by_id_in_19_plus_12n_bytes() {
        let mut g = game();
        for id in [3, 2] {
            g.join(id, "p", &[]).unwrap();
        }
        let out = g.snapshot();
        assert_eq!(out.len(), 2 + 12 * 3);
        let got = players(&out).unwrap();
        let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(got[0].1, spawn(1));
        assert_eq!(players(&out[..out.len() - 1]), None);
        assert_eq!(g.welcome(1).len(), 12);
    }
}
