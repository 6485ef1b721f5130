//! Message types of protocol version 2. Layouts are in PROTOCOL.md §4–§5.
//!
//! Rally's own fields are typed; the game's travel as `Bytes` (`app`,
//! `payload`, inputs) that Rally never interprets. Decoding slices them out
//! of the received message without copying.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 32;
/// Longest player name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 24;
/// Most inputs one `Input` message may carry (the newest and its redundancy).
pub const MAX_INPUTS_PER_MSG: usize = 8;
/// Longest reason string in `Error`.
pub const MAX_REASON_LEN: usize = 200;
/// Length of a resume token.
pub const RESUME_TOKEN_LEN: usize = 16;

/// The inputs of one `Input` message, newest first: a validated view of the
/// message's `count × (len:u8, bytes)` section.
#[derive(Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The `count × (len, bytes)` section, already checked to be exactly
    /// `count` well-formed entries.
    raw: Bytes,
    count: u8,
}

impl Inputs {
    /// Encodes `inputs` (newest first, 1–8 of at most 255 bytes each).
    ///
    /// Panics on an empty list, more than 8 inputs, or an input over 255
    /// bytes: callers bound these before (the clients keep 4 inputs, and
    /// `Welcome.max_input` is a `u8`).
    pub fn encode<I: AsRef<[u8]>>(inputs: &[I]) -> Inputs {
        assert!(
            (1..=MAX_INPUTS_PER_MSG).contains(&inputs.len()),
            "1-8 inputs"
        );
        let mut raw = BytesMut::with_capacity(inputs.iter().map(|i| 1 + i.as_ref().len()).sum());
        for i in inputs {
            let i = i.as_ref();
            raw.put_u8(u8::try_from(i.len()).expect("an input is at most 255 bytes"));
            raw.put_slice(i);
        }
        Inputs {
            raw: raw.freeze(),
            count: inputs.len() as u8,
        }
    }

    /// No inputs: an `InputAck` that only acknowledges a snapshot.
    pub fn none() -> Inputs {
        Inputs {
            raw: Bytes::new(),
            count: 0,
        }
    }

    /// Checks `raw` holds exactly `count` entries; `None` if not.
    pub(crate) fn parse(raw: Bytes, count: u8) -> Option<Inputs> {
        let mut rest = &raw[..];
        for _ in 0..count {
            let (&len, tail) = rest.split_first()?;
            rest = tail.get(len as usize..)?;
        }
        rest.is_empty().then_some(Inputs { raw, count })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The inputs, newest first.
    pub fn iter(&self) -> InputsIter<'_> {
        InputsIter { rest: &self.raw }
    }

    /// Length of the longest input.
    pub fn max_len(&self) -> usize {
        self.iter().map(<[u8]>::len).max().unwrap_or(0)
    }

    /// The encoded `count × (len, bytes)` section.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`Inputs`], newest first.
pub struct InputsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for InputsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // `Inputs::parse` checked every entry, so these never fail.
        let (&len, tail) = self.rest.split_first()?;
        let (input, rest) = tail.split_at_checked(len as usize)?;
        self.rest = rest;
        Some(input)
    }
}

/// Client → server.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// First message on the reliable channel: join `room` as `name`, with
    /// the game's join bytes.
    Hello {
        version: u16,
        room: String,
        name: String,
        app: Bytes,
    },
    /// Inputs, newest first: input `i` is number `newest_seq - i`.
    /// Repeating the last few inputs makes one lost datagram lose no input.
    Input { newest_seq: u32, inputs: Inputs },
    /// `Input` that also acknowledges the newest snapshot the client has
    /// applied (`snapshot_tick`, 0: none yet), which asks for snapshots as
    /// deltas (PROTOCOL.md §5.1). May carry no input (`inputs` empty).
    InputAck {
        snapshot_tick: u32,
        newest_seq: u32,
        inputs: Inputs,
    },
    /// Round-trip probe; the server echoes `client_time_us` in `Pong`.
    Ping { client_time_us: u64 },
    /// The player leaves; the server closes the session normally.
    Leave,
    /// First message instead of `Hello`: take back the player of a dropped
    /// session. `last_seq` is the number of the last numbered event the
    /// client received (see `Welcome::reliable_seq`).
    Resume {
        version: u16,
        token: [u8; RESUME_TOKEN_LEN],
        last_seq: u32,
    },
    /// An application message for the game: `App` (reliable, numbered by
    /// the client) or `AppUnreliable`.
    App { reliable: bool, payload: Bytes },
}

impl ClientMsg {
    /// The message's name as PROTOCOL.md spells it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "Hello",
            ClientMsg::Input { .. } => "Input",
            ClientMsg::InputAck { .. } => "InputAck",
            ClientMsg::Ping { .. } => "Ping",
            ClientMsg::Leave => "Leave",
            ClientMsg::Resume { .. } => "Resume",
            ClientMsg::App { reliable: true, .. } => "App",
            ClientMsg::App {
                reliable: false, ..
            } => "AppUnreliable",
        }
    }
}

/// A snapshot as a recipient gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The recipient's own last input handed to the game (0: none yet).
    pub ack_seq: u32,
    pub tick: u32,
    /// Server wall clock (microseconds since the Unix epoch) at the tick.
    pub server_time_us: u64,
    /// The game's bytes.
    pub payload: Bytes,
}

/// A snapshot as a delta against an earlier one the recipient has: the
/// payload is made from the baseline's (`base_tick`) by `codec`
/// (PROTOCOL.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDelta {
    pub ack_seq: u32,
    pub tick: u32,
    pub server_time_us: u64,
    /// The tick of the snapshot this delta is against.
    pub base_tick: u32,
    /// [`crate::protocol::delta::CODEC_RALLY`] or `CODEC_GAME`.
    pub codec: u8,
    pub delta: Bytes,
}

/// Session parameters sent after a successful `Hello` or `Resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub player_id: u32,
    pub tick_hz: u16,
    /// A snapshot is sent every `snapshot_every` ticks.
    pub snapshot_every: u16,
    pub tick: u32,
    /// Present this in `Resume` to get this player back after a drop.
    pub resume_token: [u8; RESUME_TOKEN_LEN],
    /// How long the server keeps the player after the session drops.
    pub resume_window_ms: u32,
    /// Number of the last numbered event before this `Welcome` (0 on a
    /// fresh join). Each later numbered event is the next.
    pub reliable_seq: u32,
    /// Number of the client's reliable `App` messages the game received.
    pub client_seq: u32,
    /// Largest client message the server accepts.
    pub max_message: u16,
    /// Largest single input the server accepts.
    pub max_input: u8,
    /// The game this server runs.
    pub game: String,
    /// The game's welcome bytes.
    pub app: Bytes,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    Welcome(Welcome),
    PlayerJoined {
        player_id: u32,
        name: String,
    },
    PlayerLeft {
        player_id: u32,
    },
    Snapshot(Snapshot),
    /// A snapshot as a delta; clients ([`crate::client::Client`],
    /// rally.js) turn it back into a whole [`Snapshot`] before the game
    /// sees it.
    SnapshotDelta(SnapshotDelta),
    Pong {
        client_time_us: u64,
        server_time_us: u64,
    },
    Error {
        code: u16,
        reason: String,
    },
    /// An application message from the game: `App` (reliable, numbered) or
    /// `AppUnreliable` (latest-only).
    App {
        reliable: bool,
        payload: Bytes,
    },
    /// Cluster mode: the room is on another node; connect there.
    Redirect(Redirect),
}

/// Where a room lives (PROTOCOL.md §5, `Redirect`; §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub room: String,
    /// The owning node's id.
    pub node: String,
    /// The node's HTTP origin (WebSocket and HTTP streaming), e.g.
    /// `https://node-2.example:4433`.
    pub url: String,
    /// The node's WebTransport URL, e.g. `https://node-2.example:4433/rally`.
    pub wt_url: String,
    /// SHA-256 hashes of the node's certificates (development
    /// certificates: pin them with `serverCertificateHashes`); empty for a
    /// publicly trusted certificate is allowed.
    pub cert_hashes: Vec<[u8; 32]>,
}

/// Room names: 1–32 bytes of `A–Z a–z 0–9 _ -` (PROTOCOL.md §4).
pub fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Player names: 1–24 bytes of UTF-8 without control characters, not blank.
pub fn valid_player_name(name: &str) -> bool {
    !name.trim().is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}
