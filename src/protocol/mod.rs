//! Wire protocol: messages, their binary codec, stream framing and error codes.
//!
//! Pure: bytes in, messages out (and back). No sockets, no clocks, no tasks.
//! PROTOCOL.md is the contract this module implements; change both together.

mod codec;
mod error;
mod frame;
mod message;

pub use codec::{encode_snapshot, snapshot_header, DecodeError, SNAPSHOT_HEADER_LEN};
pub use error::ErrorCode;
pub use frame::{encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};
pub use message::{
    valid_player_name, valid_room_name, Buttons, ClientMsg, PlayerState, ServerMsg, SnapshotBody,
    Welcome, MAX_INPUTS_PER_MSG, MAX_NAME_LEN, MAX_REASON_LEN, MAX_ROOM_LEN, RESUME_TOKEN_LEN,
};

/// Version carried in `Hello` and `Welcome`. A client with another version is
/// refused with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest client→server message on any channel. Client messages are tiny
/// (the largest, `Hello`, is under 64 bytes), so anything bigger is hostile.
pub const MAX_CLIENT_MSG: usize = 256;

/// Largest server→client message on the reliable channel (the u16 length
/// prefix caps frames at 65 535 bytes).
pub const MAX_SERVER_MSG: usize = u16::MAX as usize;
