//! Message types of protocol version 1. Layouts are in PROTOCOL.md.

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

/// Held movement keys for one client frame. Bits outside the four below are
/// a decode error, so future meanings cannot be silently misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Buttons(pub u8);

impl Buttons {
    pub const UP: u8 = 1;
    pub const DOWN: u8 = 2;
    pub const LEFT: u8 = 4;
    pub const RIGHT: u8 = 8;
    pub const ALL: u8 = Self::UP | Self::DOWN | Self::LEFT | Self::RIGHT;

    /// Unit direction (-1, 0 or 1 per axis); y grows downwards as on a canvas.
    pub fn direction(self) -> (f32, f32) {
        let axis = |neg: u8, pos: u8| -> f32 {
            (self.0 & pos != 0) as i8 as f32 - (self.0 & neg != 0) as i8 as f32
        };
        (axis(Self::LEFT, Self::RIGHT), axis(Self::UP, Self::DOWN))
    }
}

/// Client → server.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// First message on the reliable channel: join `room` as `name`.
    Hello {
        version: u16,
        room: String,
        name: String,
    },
    /// Inputs, newest first: `buttons[i]` is input number `newest_seq - i`.
    /// Repeating the last few inputs makes one lost datagram lose no input.
    Input {
        newest_seq: u32,
        buttons: Vec<Buttons>,
    },
    /// Round-trip probe; the server echoes `client_time_us` in `Pong`.
    Ping { client_time_us: u64 },
    /// The player leaves; the server closes the session normally.
    Leave,
    /// First message instead of `Hello`: take back the player of a dropped
    /// session. `last_seq` is the sequence number of the last reliable event
    /// the client received (see `Welcome::reliable_seq`).
    Resume {
        version: u16,
        token: [u8; RESUME_TOKEN_LEN],
        last_seq: u32,
    },
}

/// One player's state in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayerState {
    pub id: u32,
    pub x: f32,
    pub y: f32,
}

/// The part of a snapshot that is the same for every recipient: encoded once
/// per tick and shared.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotBody {
    pub tick: u32,
    /// Server wall clock (microseconds since the Unix epoch) when the tick ran.
    pub server_time_us: u64,
    pub players: Vec<PlayerState>,
}

/// Session parameters sent once after a successful `Hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub version: u16,
    pub player_id: u32,
    pub tick_hz: u16,
    /// A snapshot is sent every `snapshot_every` ticks.
    pub snapshot_every: u16,
    pub arena_w: f32,
    pub arena_h: f32,
    /// Movement speed in arena units per second; one input moves a player
    /// by `speed / tick_hz` along its direction.
    pub speed: f32,
    pub tick: u32,
    /// Present this in `Resume` to get this player back after a drop.
    pub resume_token: [u8; RESUME_TOKEN_LEN],
    /// How long the server keeps the player after the session drops.
    pub resume_window_ms: u32,
    /// Sequence number of the last reliable event before this `Welcome`
    /// (0 on a fresh join). Each later `PlayerJoined`/`PlayerLeft` is the next.
    pub reliable_seq: u32,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    Welcome(Welcome),
    PlayerJoined {
        player_id: u32,
        name: String,
    },
    PlayerLeft {
        player_id: u32,
    },
    /// `ack_seq` is the recipient's own last applied input (0: none yet);
    /// the rest is shared by every recipient of the tick.
    Snapshot {
        ack_seq: u32,
        body: SnapshotBody,
    },
    Pong {
        client_time_us: u64,
        server_time_us: u64,
    },
    Error {
        code: u16,
        reason: String,
    },
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
