//! Binary codec for protocol messages: big-endian integers and IEEE-754
//! floats, strings as a u8 byte length followed by UTF-8. One message per
//! datagram, per WebSocket binary message, or per stream frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ErrorCode;
use super::message::{
    Buttons, ClientMsg, PlayerState, ServerMsg, SnapshotBody, Welcome, MAX_INPUTS_PER_MSG,
    MAX_REASON_LEN,
};

mod ty {
    pub const HELLO: u8 = 0x01;
    pub const INPUT: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const LEAVE: u8 = 0x04;
    pub const RESUME: u8 = 0x05;

    pub const WELCOME: u8 = 0x81;
    pub const PLAYER_JOINED: u8 = 0x82;
    pub const PLAYER_LEFT: u8 = 0x83;
    pub const SNAPSHOT: u8 = 0x84;
    pub const PONG: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
}

/// Bytes of a snapshot written per recipient: type byte and `ack_seq`.
pub const SNAPSHOT_HEADER_LEN: usize = 5;
/// Bytes per player in a snapshot.
const PLAYER_STATE_LEN: usize = 12;

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
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
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

    fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
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
            } => {
                buf.put_u8(ty::HELLO);
                buf.put_u16(*version);
                put_string(buf, room, u8::MAX as usize);
                put_string(buf, name, u8::MAX as usize);
            }
            ClientMsg::Input {
                newest_seq,
                buttons,
            } => {
                buf.put_u8(ty::INPUT);
                buf.put_u32(*newest_seq);
                let n = buttons.len().min(MAX_INPUTS_PER_MSG);
                buf.put_u8(n as u8);
                buf.extend(buttons[..n].iter().map(|b| b.0));
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
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: msg };
        let out = match r.u8().map_err(|_| DecodeError::Empty)? {
            ty::HELLO => ClientMsg::Hello {
                version: r.u16()?,
                room: r.string()?,
                name: r.string()?,
            },
            ty::INPUT => {
                let newest_seq = r.u32()?;
                let n = r.u8()? as usize;
                if n == 0 || n > MAX_INPUTS_PER_MSG {
                    return Err(DecodeError::InvalidField("input count"));
                }
                // Sequence numbers start at 1, so the oldest carried input
                // (newest_seq - n + 1) must be at least 1.
                if (newest_seq as usize) < n {
                    return Err(DecodeError::InvalidField("input sequence"));
                }
                let buttons = r
                    .take(n)?
                    .iter()
                    .map(|&b| match b & !Buttons::ALL {
                        0 => Ok(Buttons(b)),
                        _ => Err(DecodeError::InvalidField("buttons")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ClientMsg::Input {
                    newest_seq,
                    buttons,
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
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(out)
    }
}

impl SnapshotBody {
    /// Encodes the shared part of a snapshot (everything after `ack_seq`).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(14 + self.players.len() * PLAYER_STATE_LEN);
        buf.put_u32(self.tick);
        buf.put_u64(self.server_time_us);
        // The room caps its player count far below u16::MAX (config check).
        buf.put_u16(self.players.len() as u16);
        for p in &self.players {
            buf.put_u32(p.id);
            buf.put_f32(p.x);
            buf.put_f32(p.y);
        }
        buf.freeze()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tick = r.u32()?;
        let server_time_us = r.u64()?;
        let n = r.u16()? as usize;
        if r.buf.len() < n * PLAYER_STATE_LEN {
            return Err(DecodeError::Truncated);
        }
        let mut players = Vec::with_capacity(n);
        for _ in 0..n {
            players.push(PlayerState {
                id: r.u32()?,
                x: r.f32()?,
                y: r.f32()?,
            });
        }
        Ok(SnapshotBody {
            tick,
            server_time_us,
            players,
        })
    }
}

/// Writes a full snapshot message for one recipient: its 5-byte header
/// (type, `ack_seq`) followed by the shared, already encoded body.
pub fn encode_snapshot(buf: &mut BytesMut, ack_seq: u32, body: &[u8]) {
    buf.reserve(SNAPSHOT_HEADER_LEN + body.len());
    buf.put_slice(&snapshot_header(ack_seq));
    buf.put_slice(body);
}

/// The per-recipient part of a snapshot message: type and `ack_seq`.
pub fn snapshot_header(ack_seq: u32) -> [u8; SNAPSHOT_HEADER_LEN] {
    let [a, b, c, d] = ack_seq.to_be_bytes();
    [ty::SNAPSHOT, a, b, c, d]
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
                buf.put_f32(w.arena_w);
                buf.put_f32(w.arena_h);
                buf.put_f32(w.speed);
                buf.put_u32(w.tick);
                buf.put_slice(&w.resume_token);
                buf.put_u32(w.resume_window_ms);
                buf.put_u32(w.reliable_seq);
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
            ServerMsg::Snapshot { ack_seq, body } => encode_snapshot(buf, *ack_seq, &body.encode()),
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
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: msg };
        let out = match r.u8().map_err(|_| DecodeError::Empty)? {
            ty::WELCOME => ServerMsg::Welcome(Welcome {
                version: r.u16()?,
                player_id: r.u32()?,
                tick_hz: r.u16()?,
                snapshot_every: r.u16()?,
                arena_w: r.f32()?,
                arena_h: r.f32()?,
                speed: r.f32()?,
                tick: r.u32()?,
                resume_token: r.array()?,
                resume_window_ms: r.u32()?,
                reliable_seq: r.u32()?,
            }),
            ty::PLAYER_JOINED => ServerMsg::PlayerJoined {
                player_id: r.u32()?,
                name: r.string()?,
            },
            ty::PLAYER_LEFT => ServerMsg::PlayerLeft {
                player_id: r.u32()?,
            },
            ty::SNAPSHOT => {
                let ack_seq = r.u32()?;
                let body = SnapshotBody::decode(&mut r)?;
                ServerMsg::Snapshot { ack_seq, body }
            }
            ty::PONG => ServerMsg::Pong {
                client_time_us: r.u64()?,
                server_time_us: r.u64()?,
            },
            ty::ERROR => ServerMsg::Error {
                code: r.u16()?,
                reason: r.string()?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_msgs() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                version: 1,
                room: "lobby".into(),
                name: "Zoë".into(),
            },
            ClientMsg::Input {
                newest_seq: 42,
                buttons: vec![Buttons(Buttons::UP), Buttons(0), Buttons(Buttons::ALL)],
            },
            ClientMsg::Ping {
                client_time_us: u64::MAX - 7,
            },
            ClientMsg::Leave,
            ClientMsg::Resume {
                version: 1,
                token: [0xab; 16],
                last_seq: 9,
            },
        ]
    }

    fn server_msgs() -> Vec<ServerMsg> {
        vec![
            ServerMsg::Welcome(Welcome {
                version: 1,
                player_id: 7,
                tick_hz: 60,
                snapshot_every: 1,
                arena_w: 960.0,
                arena_h: 540.0,
                speed: 240.0,
                tick: 12345,
                resume_token: *b"0123456789abcdef",
                resume_window_ms: 10_000,
                reliable_seq: 3,
            }),
            ServerMsg::PlayerJoined {
                player_id: 9,
                name: "bot-1".into(),
            },
            ServerMsg::PlayerLeft { player_id: 9 },
            ServerMsg::Snapshot {
                ack_seq: 77,
                body: SnapshotBody {
                    tick: 99,
                    server_time_us: 1_700_000_000_000_000,
                    players: vec![
                        PlayerState {
                            id: 1,
                            x: 1.5,
                            y: -2.25,
                        },
                        PlayerState {
                            id: 2,
                            x: 960.0,
                            y: 0.0,
                        },
                    ],
                },
            },
            ServerMsg::Snapshot {
                ack_seq: 0,
                body: SnapshotBody {
                    tick: 0,
                    server_time_us: 0,
                    players: vec![],
                },
            },
            ServerMsg::Pong {
                client_time_us: 5,
                server_time_us: 6,
            },
            ServerMsg::Error {
                code: ErrorCode::RoomFull.as_u16(),
                reason: "room 'x' is full".into(),
            },
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

    #[test]
    fn every_truncation_is_an_error() {
        for msg in client_msgs() {
            let bytes = msg.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    ClientMsg::decode(&bytes[..cut]).is_err(),
                    "{msg:?} cut {cut}"
                );
            }
        }
        for msg in server_msgs() {
            let bytes = msg.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    ServerMsg::decode(&bytes[..cut]).is_err(),
                    "{msg:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = BytesMut::new();
        ClientMsg::Leave.encode(&mut b);
        b.put_u8(0);
        assert_eq!(ClientMsg::decode(&b), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn specific_bad_inputs_map_to_documented_codes() {
        assert_eq!(ClientMsg::decode(&[]), Err(DecodeError::Empty));
        let unknown = ClientMsg::decode(&[0x7f]).unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::UnknownMessage);
        // Zero inputs, too many inputs, undefined button bits, seq underflow.
        let bad = [
            vec![ty::INPUT, 0, 0, 0, 5, 0],
            vec![ty::INPUT, 0, 0, 0, 50, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![ty::INPUT, 0, 0, 0, 5, 1, 0x10],
            vec![ty::INPUT, 0, 0, 0, 1, 2, 0, 0],
        ];
        for b in bad {
            let err = ClientMsg::decode(&b).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadMessage, "{b:?}");
        }
        // Invalid UTF-8 in a name.
        let hello = [ty::HELLO, 0, 1, 1, b'a', 2, 0xff, 0xfe];
        assert_eq!(ClientMsg::decode(&hello), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn snapshot_header_plus_shared_body_equals_full_encoding() {
        let msg = &server_msgs()[3];
        let ServerMsg::Snapshot { ack_seq, body } = msg else {
            unreachable!()
        };
        let mut split = BytesMut::new();
        encode_snapshot(&mut split, *ack_seq, &body.encode());
        assert_eq!(split.freeze(), msg.to_bytes());
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

    fn arb_client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (any::<u16>(), "[a-z0-9]{0,32}", "\\PC{0,24}").prop_map(|(version, room, name)| {
                ClientMsg::Hello {
                    version,
                    room,
                    name,
                }
            }),
            (8u32.., prop::collection::vec(0u8..16, 1..=8)).prop_map(|(newest_seq, b)| {
                ClientMsg::Input {
                    newest_seq,
                    buttons: b.into_iter().map(Buttons).collect(),
                }
            }),
            any::<u64>().prop_map(|client_time_us| ClientMsg::Ping { client_time_us }),
            Just(ClientMsg::Leave),
            (any::<u16>(), any::<[u8; 16]>(), any::<u32>()).prop_map(
                |(version, token, last_seq)| {
                    ClientMsg::Resume {
                        version,
                        token,
                        last_seq,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
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
        fn arbitrary_snapshots_round_trip(
            ack in any::<u32>(), tick in any::<u32>(), t in any::<u64>(),
            players in prop::collection::vec((any::<u32>(), -1e6f32..1e6, -1e6f32..1e6), 0..100)
        ) {
            let msg = ServerMsg::Snapshot { ack_seq: ack, body: SnapshotBody {
                tick, server_time_us: t,
                players: players.into_iter().map(|(id, x, y)| PlayerState { id, x, y }).collect(),
            }};
            prop_assert_eq!(ServerMsg::decode(&msg.to_bytes()).unwrap(), msg);
        }
    }
}
