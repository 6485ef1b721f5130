//! Binary codec for protocol messages: big-endian integers, strings as a u8
//! byte length followed by UTF-8, and the game's bytes as the rest of the
//! message. One message per datagram, per WebSocket binary message, or per
//! stream frame.
//!
//! Decoding takes the message as `Bytes` so that the game's bytes are
//! slices of it, not copies.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::ErrorCode;
use super::message::{
    ClientMsg, Inputs, Redirect, ServerMsg, Snapshot, SnapshotDelta, Welcome, MAX_INPUTS_PER_MSG,
    MAX_REASON_LEN,
};
use super::table::ty;

/// Bytes of a snapshot written per recipient: type byte and `ack_seq`.
pub const SNAPSHOT_HEADER_LEN: usize = 5;
/// Bytes of a snapshot's shared part before the game's payload: `tick` and
/// `server_time_us`.
pub const SNAPSHOT_PREFIX_LEN: usize = 12;
/// Bytes of a `SnapshotDelta`'s shared part before the delta: `tick`,
/// `server_time_us`, `base_tick` and `codec`.
pub const DELTA_PREFIX_LEN: usize = 17;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message truncated")]
    Truncated,
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

impl DecodeError {
    /// The code a peer sees when its message fails to decode.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownType(_) => ErrorCode::UnknownMessage,
            _ => ErrorCode::BadMessage,
        }
    }
}

/// Cursor over a message; every read checks the remaining length.
struct Reader<'a> {
    msg: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(msg: &'a Bytes) -> Self {
        Reader { msg, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let out = self.msg.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Everything left: the game's bytes, sliced without copying.
    fn rest(&mut self) -> Bytes {
        let out = self.msg.slice(self.at..);
        self.at = self.msg.len();
        out
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.msg.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

fn put_string(buf: &mut BytesMut, s: &str, max: usize) {
    // Truncate on a char boundary so the output is always valid UTF-8.
    let mut end = s.len().min(max).min(u8::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u8(end as u8);
    buf.put_slice(&s.as_bytes()[..end]);
}

impl ClientMsg {
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ClientMsg::Hello {
                version,
                room,
                name,
                app,
            } => {
                buf.put_u8(ty::HELLO);
                buf.put_u16(*version);
                put_string(buf, room, u8::MAX as usize);
                put_string(buf, name, u8::MAX as usize);
                buf.put_slice(app);
            }
            ClientMsg::Input { newest_seq, inputs } => {
                buf.put_u8(ty::INPUT);
                buf.put_u32(*newest_seq);
                buf.put_u8(inputs.len() as u8);
                buf.put_slice(inputs.raw());
            }
            ClientMsg::InputAck {
                snapshot_tick,
                newest_seq,
                inputs,
            } => {
                buf.put_u8(ty::INPUT_ACK);
                buf.put_u32(*snapshot_tick);
                buf.put_u32(*newest_seq);
                buf.put_u8(inputs.len() as u8);
                buf.put_slice(inputs.raw());
            }
            ClientMsg::Ping { client_time_us } => {
                buf.put_u8(ty::PING);
                buf.put_u64(*client_time_us);
            }
            ClientMsg::Leave => buf.put_u8(ty::LEAVE),
            ClientMsg::Resume {
                version,
                token,
                last_seq,
            } => {
                buf.put_u8(ty::RESUME);
                buf.put_u16(*version);
                buf.put_slice(token);
                buf.put_u32(*last_seq);
            }
            ClientMsg::App { reliable, payload } => {
                buf.put_u8(if *reliable {
                    ty::APP
                } else {
                    ty::APP_UNRELIABLE
                });
                buf.put_slice(payload);
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    pub fn decode(msg: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(msg);
        let out = match r.u8().map_err(|_| DecodeError::Empty)? {
            ty::HELLO => ClientMsg::Hello {
                version: r.u16()?,
                room: r.string()?,
                name: r.string()?,
                app: r.rest(),
            },
            ty::INPUT => {
                let newest_seq = r.u32()?;
                let n = r.u8()?;
                if n == 0 || n as usize > MAX_INPUTS_PER_MSG {
                    return Err(DecodeError::InvalidField("input count"));
                }
                // Sequence numbers start at 1, so the oldest carried input
                // (newest_seq - n + 1) must be at least 1.
                if newest_seq < n as u32 {
                    return Err(DecodeError::InvalidField("input sequence"));
                }
                let inputs = Inputs::parse(r.rest(), n).ok_or(DecodeError::Truncated)?;
                ClientMsg::Input { newest_seq, inputs }
            }
            ty::INPUT_ACK => {
                let snapshot_tick = r.u32()?;
                let newest_seq = r.u32()?;
                let n = r.u8()?;
                if n as usize > MAX_INPUTS_PER_MSG {
                    return Err(DecodeError::InvalidField("input count"));
                }
                if newest_seq < n as u32 {
                    return Err(DecodeError::InvalidField("input sequence"));
                }
                let inputs = Inputs::parse(r.rest(), n).ok_or(DecodeError::Truncated)?;
                ClientMsg::InputAck {
                    snapshot_tick,
                    newest_seq,
                    inputs,
                }
            }
            ty::PING => ClientMsg::Ping {
                client_time_us: r.u64()?,
            },
            ty::LEAVE => ClientMsg::Leave,
            ty::RESUME => ClientMsg::Resume {
                version: r.u16()?,
                token: r.array()?,
                last_seq: r.u32()?,
            },
            ty::APP => ClientMsg::App {
                reliable: true,
                payload: r.rest(),
            },
            ty::APP_UNRELIABLE => ClientMsg::App {
                reliable: false,
                payload: r.rest(),
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(out)
    }
}

/// The per-recipient part of a snapshot message: type and `ack_seq`.
pub fn snapshot_header(ack_seq: u32) -> [u8; SNAPSHOT_HEADER_LEN] {
    let [a, b, c, d] = ack_seq.to_be_bytes();
    [ty::SNAPSHOT, a, b, c, d]
}

/// The per-recipient part of a `SnapshotDelta`: type and `ack_seq`.
pub fn snapshot_delta_header(ack_seq: u32) -> [u8; SNAPSHOT_HEADER_LEN] {
    let [a, b, c, d] = ack_seq.to_be_bytes();
    [ty::SNAPSHOT_DELTA, a, b, c, d]
}

/// Writes a `SnapshotDelta`'s shared prefix: `tick`, `server_time_us`,
/// `base_tick` and `codec`. The delta follows it.
pub fn put_delta_prefix(buf: &mut BytesMut, tick: u32, server_time_us: u64, base: u32, codec: u8) {
    buf.put_u32(tick);
    buf.put_u64(server_time_us);
    buf.put_u32(base);
    buf.put_u8(codec);
}

/// Writes the shared part's prefix: `tick` and `server_time_us`. The game's
/// payload follows it.
pub fn put_snapshot_prefix(buf: &mut BytesMut, tick: u32, server_time_us: u64) {
    buf.put_u32(tick);
    buf.put_u64(server_time_us);
}

/// The one-byte header of an `AppUnreliable` message (the payload follows).
pub const APP_UNRELIABLE_HEADER: [u8; 1] = [ty::SERVER_APP_UNRELIABLE];

/// A server `App` message (reliable, numbered) around `payload`.
pub fn encode_server_app(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(1 + payload.len());
    buf.put_u8(ty::SERVER_APP);
    buf.put_slice(payload);
    buf.freeze()
}

impl ServerMsg {
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ServerMsg::Welcome(w) => {
                buf.put_u8(ty::WELCOME);
                buf.put_u16(w.version);
                buf.put_u32(w.player_id);
                buf.put_u16(w.tick_hz);
                buf.put_u16(w.snapshot_every);
                buf.put_u32(w.tick);
                buf.put_slice(&w.resume_token);
                buf.put_u32(w.resume_window_ms);
                buf.put_u32(w.reliable_seq);
                buf.put_u32(w.client_seq);
                buf.put_u16(w.max_message);
                buf.put_u8(w.max_input);
                put_string(buf, &w.game, u8::MAX as usize);
                buf.put_slice(&w.app);
            }
            ServerMsg::PlayerJoined { player_id, name } => {
                buf.put_u8(ty::PLAYER_JOINED);
                buf.put_u32(*player_id);
                put_string(buf, name, u8::MAX as usize);
            }
            ServerMsg::PlayerLeft { player_id } => {
                buf.put_u8(ty::PLAYER_LEFT);
                buf.put_u32(*player_id);
            }
            ServerMsg::Snapshot(s) => {
                buf.put_slice(&snapshot_header(s.ack_seq));
                put_snapshot_prefix(buf, s.tick, s.server_time_us);
                buf.put_slice(&s.payload);
            }
            ServerMsg::SnapshotDelta(d) => {
                buf.put_slice(&snapshot_delta_header(d.ack_seq));
                put_delta_prefix(buf, d.tick, d.server_time_us, d.base_tick, d.codec);
                buf.put_slice(&d.delta);
            }
            ServerMsg::Pong {
                client_time_us,
                server_time_us,
            } => {
                buf.put_u8(ty::PONG);
                buf.put_u64(*client_time_us);
                buf.put_u64(*server_time_us);
            }
            ServerMsg::Error { code, reason } => {
                buf.put_u8(ty::ERROR);
                buf.put_u16(*code);
                put_string(buf, reason, MAX_REASON_LEN);
            }
            ServerMsg::App { reliable, payload } => {
                buf.put_u8(if *reliable {
                    ty::SERVER_APP
                } else {
                    ty::SERVER_APP_UNRELIABLE
                });
                buf.put_slice(payload);
            }
            ServerMsg::Redirect(r) => {
                buf.put_u8(ty::REDIRECT);
                put_string(buf, &r.room, u8::MAX as usize);
                put_string(buf, &r.node, u8::MAX as usize);
                put_string(buf, &r.url, u8::MAX as usize);
                put_string(buf, &r.wt_url, u8::MAX as usize);
                let hashes = &r.cert_hashes[..r.cert_hashes.len().min(u8::MAX as usize)];
                buf.put_u8(hashes.len() as u8);
                for h in hashes {
                    buf.put_slice(h);
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    pub fn decode(msg: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(msg);
        let out = match r.u8().map_err(|_| DecodeError::Empty)? {
            ty::WELCOME => ServerMsg::Welcome(Welcome {
                version: r.u16()?,
                player_id: r.u32()?,
                tick_hz: r.u16()?,
                snapshot_every: r.u16()?,
                tick: r.u32()?,
                resume_token: r.array()?,
                resume_window_ms: r.u32()?,
                reliable_seq: r.u32()?,
                client_seq: r.u32()?,
                max_message: r.u16()?,
                max_input: r.u8()?,
                game: r.string()?,
                app: r.rest(),
            }),
            ty::PLAYER_JOINED => ServerMsg::PlayerJoined {
                player_id: r.u32()?,
                name: r.string()?,
            },
            ty::PLAYER_LEFT => ServerMsg::PlayerLeft {
                player_id: r.u32()?,
            },
            ty::SNAPSHOT => ServerMsg::Snapshot(Snapshot {
                ack_seq: r.u32()?,
                tick: r.u32()?,
                server_time_us: r.u64()?,
                payload: r.rest(),
            }),
            ty::SNAPSHOT_DELTA => ServerMsg::SnapshotDelta(SnapshotDelta {
                ack_seq: r.u32()?,
                tick: r.u32()?,
                server_time_us: r.u64()?,
                base_tick: r.u32()?,
                codec: r.u8()?,
                delta: r.rest(),
            }),
            ty::PONG => ServerMsg::Pong {
                client_time_us: r.u64()?,
                server_time_us: r.u64()?,
            },
            ty::ERROR => ServerMsg::Error {
                code: r.u16()?,
                reason: r.string()?,
            },
            ty::SERVER_APP => ServerMsg::App {
                reliable: true,
                payload: r.rest(),
            },
            ty::SERVER_APP_UNRELIABLE => ServerMsg::App {
                reliable: false,
                payload: r.rest(),
            },
            ty::REDIRECT => ServerMsg::Redirect(Redirect {
                room: r.string()?,
                node: r.string()?,
                url: r.string()?,
                wt_url: r.string()?,
                cert_hashes: {
                    let n = r.u8()?;
                    (0..n).map(|_| r.array()).collect::<Result<_, _>>()?
                },
            }),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(out)
    }
}

/// Reads a snapshot's shared part (after the header): `tick`,
/// `server_time_us`, and the payload. `None` when too short.
pub fn split_snapshot_body(body: &Bytes) -> Option<(u32, u64, Bytes)> {
    let mut head = body.get(..SNAPSHOT_PREFIX_LEN)?;
    let tick = head.get_u32();
    let time = head.get_u64();
    Some((tick, time, body.slice(SNAPSHOT_PREFIX_LEN..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::RESUME_TOKEN_LEN;
    use proptest::prelude::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn client_msgs() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                version: 2,
                room: "lobby".into(),
                name: "Zoë".into(),
                app: b(b"\x01\x02"),
            },
            ClientMsg::Hello {
                version: 2,
                room: "r".into(),
                name: "n".into(),
                app: Bytes::new(),
            },
            ClientMsg::Input {
                newest_seq: 42,
                inputs: Inputs::encode(&[&b"\x01"[..], b"", b"\x0f\x00\x07"]),
            },
            ClientMsg::InputAck {
                snapshot_tick: 77,
                newest_seq: 43,
                inputs: Inputs::encode(&[&b"\x02"[..]]),
            },
            ClientMsg::InputAck {
                snapshot_tick: 78,
                newest_seq: 0,
                inputs: Inputs::none(),
            },
            ClientMsg::Ping {
                client_time_us: u64::MAX - 7,
            },
            ClientMsg::Leave,
            ClientMsg::Resume {
                version: 2,
                token: [0xab; RESUME_TOKEN_LEN],
                last_seq: 9,
            },
            ClientMsg::App {
                reliable: true,
                payload: b(b"hello"),
            },
            ClientMsg::App {
                reliable: false,
                payload: Bytes::new(),
            },
        ]
    }

    fn welcome() -> Welcome {
        Welcome {
            version: 2,
            player_id: 7,
            tick_hz: 60,
            snapshot_every: 1,
            tick: 12345,
            resume_token: *b"0123456789abcdef",
            resume_window_ms: 10_000,
            reliable_seq: 3,
            client_seq: 4,
            max_message: 256,
            max_input: 32,
            game: "dots".into(),
            app: b(&[0x44, 0x70, 0, 0]),
        }
    }

    fn server_msgs() -> Vec<ServerMsg> {
        vec![
            ServerMsg::Welcome(welcome()),
            ServerMsg::PlayerJoined {
                player_id: 9,
                name: "bot-1".into(),
            },
            ServerMsg::PlayerLeft { player_id: 9 },
            ServerMsg::Snapshot(Snapshot {
                ack_seq: 77,
                tick: 99,
                server_time_us: 1_700_000_000_000_000,
                payload: b(&[1, 2, 3, 4, 5]),
            }),
            ServerMsg::Snapshot(Snapshot {
                ack_seq: 0,
                tick: 0,
                server_time_us: 0,
                payload: Bytes::new(),
            }),
            ServerMsg::SnapshotDelta(SnapshotDelta {
                ack_seq: 3,
                tick: 100,
                server_time_us: 1_700_000_000_000_001,
                base_tick: 97,
                codec: 0,
                delta: b(&[5, 5, 0]),
            }),
            ServerMsg::Pong {
                client_time_us: 5,
                server_time_us: 6,
            },
            ServerMsg::Error {
                code: ErrorCode::RoomFull.as_u16(),
                reason: "room 'x' is full".into(),
            },
            ServerMsg::App {
                reliable: true,
                payload: b(b"\x00\x00\x00\x01hi"),
            },
            ServerMsg::App {
                reliable: false,
                payload: b(b"x"),
            },
            ServerMsg::Redirect(Redirect {
                room: "lobby".into(),
                node: "n-2".into(),
                url: "https://node-2.example:4433".into(),
                wt_url: "https://node-2.example:4433/rally".into(),
                cert_hashes: vec![[7; 32], [9; 32]],
            }),
            ServerMsg::Redirect(Redirect {
                room: "r".into(),
                node: String::new(),
                url: String::new(),
                wt_url: String::new(),
                cert_hashes: Vec::new(),
            }),
        ]
    }

    #[test]
    fn every_client_message_round_trips() {
        for msg in client_msgs() {
            let bytes = msg.to_bytes();
            assert_eq!(ClientMsg::decode(&bytes).unwrap(), msg, "{bytes:?}");
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        for msg in server_msgs() {
            let bytes = msg.to_bytes();
            assert_eq!(ServerMsg::decode(&bytes).unwrap(), msg, "{bytes:?}");
        }
    }

    /// Messages whose last field is not `rest`: every cut is an error.
    /// Those ending in the game's bytes decode when cut inside them (the
    /// bytes are then shorter), but never when cut before.
    #[test]
    fn every_truncation_before_the_games_bytes_is_an_error() {
        for msg in client_msgs() {
            let bytes = msg.to_bytes();
            let fixed = match &msg {
                ClientMsg::Hello { app, .. } => bytes.len() - app.len(),
                ClientMsg::App { .. } => 1,
                _ => bytes.len(),
            };
            for cut in 0..fixed {
                assert!(
                    ClientMsg::decode(&bytes.slice(..cut)).is_err(),
                    "{msg:?} cut {cut}"
                );
            }
        }
        for msg in server_msgs() {
            let bytes = msg.to_bytes();
            let fixed = match &msg {
                ServerMsg::Welcome(w) => bytes.len() - w.app.len(),
                ServerMsg::Snapshot(s) => bytes.len() - s.payload.len(),
                ServerMsg::SnapshotDelta(d) => bytes.len() - d.delta.len(),
                ServerMsg::App { .. } => 1,
                _ => bytes.len(),
            };
            for cut in 0..fixed {
                assert!(
                    ServerMsg::decode(&bytes.slice(..cut)).is_err(),
                    "{msg:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut m = BytesMut::new();
        ClientMsg::Leave.encode(&mut m);
        m.put_u8(0);
        assert_eq!(
            ClientMsg::decode(&m.freeze()),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut ping = ClientMsg::Ping { client_time_us: 1 }.to_bytes().to_vec();
        ping.push(9);
        assert_eq!(
            ClientMsg::decode(&b(&ping)),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn specific_bad_inputs_map_to_documented_codes() {
        assert_eq!(ClientMsg::decode(&Bytes::new()), Err(DecodeError::Empty));
        let unknown = ClientMsg::decode(&b(&[0x7f])).unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::UnknownMessage);
        // Zero inputs, too many inputs, seq underflow, an input whose
        // length runs past the end, a byte left over after the last input.
        let bad = [
            vec![ty::INPUT, 0, 0, 0, 5, 0],
            vec![ty::INPUT, 0, 0, 0, 50, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![ty::INPUT, 0, 0, 0, 1, 2, 0, 0],
            vec![ty::INPUT, 0, 0, 0, 5, 1, 3, 1, 2],
            vec![ty::INPUT, 0, 0, 0, 5, 1, 1, 1, 9],
        ];
        for m in bad {
            let err = ClientMsg::decode(&b(&m)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadMessage, "{m:?}");
        }
        // Invalid UTF-8 in a name is bad_message, not invalid_name.
        let hello = [ty::HELLO, 0, 2, 1, b'a', 2, 0xff, 0xfe];
        let err = ClientMsg::decode(&b(&hello)).unwrap_err();
        assert_eq!(err, DecodeError::InvalidUtf8);
        assert_eq!(err.code(), ErrorCode::BadMessage);
    }

    #[test]
    fn a_version_1_hello_and_resume_decode_and_show_their_version() {
        // v1 Hello: type, version 1, room, name; v1 Resume: same layout as v2.
        let hello = [ty::HELLO, 0, 1, 1, b'r', 1, b'n'];
        assert!(matches!(
            ClientMsg::decode(&b(&hello)),
            Ok(ClientMsg::Hello { version: 1, ref app, .. }) if app.is_empty()
        ));
        let mut resume = vec![ty::RESUME, 0, 1];
        resume.extend([0u8; 16]);
        resume.extend([0, 0, 0, 3]);
        assert!(matches!(
            ClientMsg::decode(&b(&resume)),
            Ok(ClientMsg::Resume { version: 1, .. })
        ));
    }

    #[test]
    fn inputs_iterate_newest_first_and_slice_the_message() {
        let msg = ClientMsg::Input {
            newest_seq: 10,
            inputs: Inputs::encode(&[&b"ab"[..], b"c", b""]),
        }
        .to_bytes();
        let ClientMsg::Input { newest_seq, inputs } = ClientMsg::decode(&msg).unwrap() else {
            unreachable!()
        };
        assert_eq!(newest_seq, 10);
        let all: Vec<&[u8]> = inputs.iter().collect();
        assert_eq!(all, vec![&b"ab"[..], b"c", b""]);
        assert_eq!(inputs.max_len(), 2);
        // Zero-copy: the inputs point into the received message.
        let range = msg.as_ptr_range();
        assert!(range.contains(&inputs.raw().as_ptr()));
    }

    #[test]
    fn snapshot_header_prefix_and_payload_equal_the_full_encoding() {
        let ServerMsg::Snapshot(s) = &server_msgs()[3] else {
            unreachable!()
        };
        let mut split = BytesMut::new();
        split.put_slice(&snapshot_header(s.ack_seq));
        put_snapshot_prefix(&mut split, s.tick, s.server_time_us);
        split.put_slice(&s.payload);
        assert_eq!(split.freeze(), ServerMsg::Snapshot(s.clone()).to_bytes());
        let body = ServerMsg::Snapshot(s.clone())
            .to_bytes()
            .slice(SNAPSHOT_HEADER_LEN..);
        assert_eq!(
            split_snapshot_body(&body),
            Some((s.tick, s.server_time_us, s.payload.clone()))
        );
    }

    #[test]
    fn long_strings_are_truncated_on_char_boundaries() {
        let reason = "é".repeat(150); // 300 bytes
        let msg = ServerMsg::Error {
            code: 1,
            reason: reason.clone(),
        };
        let ServerMsg::Error { reason: got, .. } = ServerMsg::decode(&msg.to_bytes()).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(got.len(), MAX_REASON_LEN);
        assert!(reason.starts_with(&got));
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (any::<u16>(), "[a-z0-9]{0,32}", "\\PC{0,24}", arb_bytes(64)).prop_map(
                |(version, room, name, app)| ClientMsg::Hello {
                    version,
                    room,
                    name,
                    app
                }
            ),
            (
                8u32..,
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..=8)
            )
                .prop_map(|(newest_seq, inputs)| ClientMsg::Input {
                    newest_seq,
                    inputs: Inputs::encode(&inputs),
                }),
            (
                any::<u32>(),
                8u32..,
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..=8)
            )
                .prop_map(|(snapshot_tick, newest_seq, inputs)| ClientMsg::InputAck {
                    snapshot_tick,
                    newest_seq,
                    inputs: if inputs.is_empty() {
                        Inputs::none()
                    } else {
                        Inputs::encode(&inputs)
                    },
                }),
            any::<u64>().prop_map(|client_time_us| ClientMsg::Ping { client_time_us }),
            Just(ClientMsg::Leave),
            (any::<u16>(), any::<[u8; 16]>(), any::<u32>()).prop_map(
                |(version, token, last_seq)| ClientMsg::Resume {
                    version,
                    token,
                    last_seq,
                }
            ),
            (any::<bool>(), arb_bytes(200))
                .prop_map(|(reliable, payload)| ClientMsg::App { reliable, payload }),
        ]
    }

    fn arb_server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), "[a-z]{0,16}", arb_bytes(64)).prop_map(
                |(player_id, client_seq, game, app)| ServerMsg::Welcome(Welcome {
                    player_id,
                    client_seq,
                    game,
                    app,
                    ..welcome()
                })
            ),
            (any::<u32>(), "\\PC{0,24}")
                .prop_map(|(player_id, name)| ServerMsg::PlayerJoined { player_id, name }),
            (any::<u32>(), any::<u32>(), any::<u64>(), arb_bytes(2000)).prop_map(
                |(ack_seq, tick, server_time_us, payload)| ServerMsg::Snapshot(Snapshot {
                    ack_seq,
                    tick,
                    server_time_us,
                    payload
                })
            ),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u8>(),
                arb_bytes(200)
            )
                .prop_map(
                    |(ack_seq, tick, server_time_us, base_tick, codec, delta)| {
                        ServerMsg::SnapshotDelta(SnapshotDelta {
                            ack_seq,
                            tick,
                            server_time_us,
                            base_tick,
                            codec,
                            delta,
                        })
                    }
                ),
            (any::<bool>(), arb_bytes(200))
                .prop_map(|(reliable, payload)| ServerMsg::App { reliable, payload }),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in arb_bytes(300)) {
            let _ = ClientMsg::decode(&bytes);
            let _ = ServerMsg::decode(&bytes);
        }

        #[test]
        fn arbitrary_client_messages_round_trip(msg in arb_client_msg()) {
            // Names longer than 255 bytes are truncated by the encoder; the
            // strategy keeps them shorter so equality holds.
            prop_assert_eq!(ClientMsg::decode(&msg.to_bytes()).unwrap(), msg);
        }

        #[test]
        fn arbitrary_server_messages_round_trip(msg in arb_server_msg()) {
            prop_assert_eq!(ServerMsg::decode(&msg.to_bytes()).unwrap(), msg);
        }

        /// Whatever decodes re-encodes to the same bytes: decoding is
        /// strict and the encoding canonical (but for an Error reason over
        /// 200 bytes, which the encoder cuts).
        #[test]
        fn decoded_bytes_re_encode_identically(bytes in arb_bytes(80)) {
            if let Ok(msg) = ClientMsg::decode(&bytes) {
                prop_assert_eq!(msg.to_bytes(), bytes.clone());
            }
            if let Ok(msg) = ServerMsg::decode(&bytes) {
                if !matches!(msg, ServerMsg::Error { .. }) {
                    prop_assert_eq!(msg.to_bytes(), bytes);
                }
            }
        }
    }
}
