//! Wire protocol: messages, their binary codec, stream framing, the
//! message-type table, error codes and how a session closes.
//!
//! Pure: bytes in, messages out (and back). No sockets, no clocks, no tasks.
//! PROTOCOL.md is the contract this module implements; change both together.

mod close;
mod codec;
pub mod delta;
mod error;
mod frame;
mod message;
pub mod table;

pub use close::{Close, CloseCode};
pub use codec::{
    encode_server_app, put_delta_prefix, put_snapshot_prefix, snapshot_delta_header,
    snapshot_header, split_snapshot_body, DecodeError, APP_UNRELIABLE_HEADER, DELTA_PREFIX_LEN,
    SNAPSHOT_HEADER_LEN, SNAPSHOT_PREFIX_LEN,
};
pub use error::ErrorCode;
pub use frame::{encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};
pub use message::{
    valid_player_name, valid_room_name, ClientMsg, Inputs, InputsIter, Redirect, ServerMsg,
    Snapshot, SnapshotDelta, Welcome, MAX_INPUTS_PER_MSG, MAX_NAME_LEN, MAX_REASON_LEN,
    MAX_ROOM_LEN, RESUME_TOKEN_LEN,
};
pub use table::is_numbered;

/// Version carried in `Hello`, `Resume` and `Welcome`. A client with another
/// version is refused with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 2;

/// Default largest client→server message on any channel (PROTOCOL.md §8;
/// `--max-client-message`).
pub const MAX_CLIENT_MSG: usize = 256;

/// Largest server→client message on the reliable channel (the u16 length
/// prefix caps frames at 65 535 bytes).
pub const MAX_SERVER_MSG: usize = u16::MAX as usize;
