//! The message-type table: every type byte, its name, and which server
//! messages are numbered events (PROTOCOL.md §4, §5, §7.1).
//!
//! This is the one source. The codec matches on [`ty`]; whether a message
//! is numbered is asked of [`is_numbered`] (by the room's event log, the
//! native client and the tests); the browser's `client/wire.js` is generated
//! from [`TABLE`] and [`ErrorCode::ALL`] and a test keeps it so.

use super::error::ErrorCode;

/// Type bytes. Client → server are `0x01`–`0x7f`, server → client
/// `0x81`–`0xff`.
pub mod ty {
    pub const HELLO: u8 = 0x01;
    pub const INPUT: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const LEAVE: u8 = 0x04;
    pub const RESUME: u8 = 0x05;
    pub const APP: u8 = 0x06;
    pub const APP_UNRELIABLE: u8 = 0x07;
    pub const INPUT_ACK: u8 = 0x08;

    pub const WELCOME: u8 = 0x81;
    pub const PLAYER_JOINED: u8 = 0x82;
    pub const PLAYER_LEFT: u8 = 0x83;
    pub const SNAPSHOT: u8 = 0x84;
    pub const PONG: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
    pub const SERVER_APP: u8 = 0x87;
    pub const SERVER_APP_UNRELIABLE: u8 = 0x88;
    pub const REDIRECT: u8 = 0x89;
    pub const SNAPSHOT_DELTA: u8 = 0x8a;
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgType {
    pub ty: u8,
    /// The name in PROTOCOL.md.
    pub name: &'static str,
    /// The constant's name in `client/wire.js`.
    pub js: &'static str,
    /// A server message counted in `Resume.last_seq` and replayed (§7.1).
    pub numbered: bool,
}

const fn row(ty: u8, name: &'static str, js: &'static str, numbered: bool) -> MsgType {
    MsgType {
        ty,
        name,
        js,
        numbered,
    }
}

pub const TABLE: [MsgType; 18] = [
    row(ty::HELLO, "Hello", "HELLO", false),
    row(ty::INPUT, "Input", "INPUT", false),
    row(ty::PING, "Ping", "PING", false),
    row(ty::LEAVE, "Leave", "LEAVE", false),
    row(ty::RESUME, "Resume", "RESUME", false),
    row(ty::APP, "App", "APP", false),
    row(ty::APP_UNRELIABLE, "AppUnreliable", "APP_UNRELIABLE", false),
    row(ty::INPUT_ACK, "InputAck", "INPUT_ACK", false),
    row(ty::WELCOME, "Welcome", "WELCOME", false),
    row(ty::PLAYER_JOINED, "PlayerJoined", "PLAYER_JOINED", true),
    row(ty::PLAYER_LEFT, "PlayerLeft", "PLAYER_LEFT", true),
    row(ty::SNAPSHOT, "Snapshot", "SNAPSHOT", false),
    row(ty::PONG, "Pong", "PONG", false),
    row(ty::ERROR, "Error", "ERROR", false),
    row(ty::SERVER_APP, "App", "SERVER_APP", true),
    row(
        ty::SERVER_APP_UNRELIABLE,
        "AppUnreliable",
        "SERVER_APP_UNRELIABLE",
        false,
    ),
    row(ty::REDIRECT, "Redirect", "REDIRECT", false),
    row(ty::SNAPSHOT_DELTA, "SnapshotDelta", "SNAPSHOT_DELTA", false),
];

/// Whether a server message (or its head) is a `Snapshot` or a
/// `SnapshotDelta`.
pub fn is_snapshot(msg: &[u8]) -> bool {
    matches!(msg.first(), Some(&(ty::SNAPSHOT | ty::SNAPSHOT_DELTA)))
}

/// Whether an encoded server message is a numbered event (by its type byte).
pub fn is_numbered(msg: &[u8]) -> bool {
    msg.first()
        .is_some_and(|&t| TABLE.iter().any(|r| r.ty == t && r.numbered))
}

/// `client/wire.js` as generated from the table.
pub fn wire_js() -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "// Generated from src/protocol/table.rs by `RALLY_BLESS=1 cargo test wire_js`;\n\
         // do not edit. The one source of the message-type table, the numbered\n\
         // events and the error codes (PROTOCOL.md §4-§6).\n\n",
    );
    let _ = writeln!(
        s,
        "/** Protocol version this client speaks (Hello.version, Resume.version). */\n\
         export const PROTOCOL_VERSION = {};\n",
        super::PROTOCOL_VERSION
    );
    s.push_str(
        "/** Message type bytes (PROTOCOL.md §4, §5). */\nexport const MsgType = Object.freeze({\n",
    );
    for r in TABLE {
        let _ = writeln!(s, "  {}: 0x{:02x},", r.js, r.ty);
    }
    s.push_str("});\n\n");
    let numbered: Vec<String> = TABLE
        .iter()
        .filter(|r| r.numbered)
        .map(|r| format!("0x{:02x}", r.ty))
        .collect();
    let _ = writeln!(
        s,
        "/** Server message types that are numbered reliable events (PROTOCOL.md §7.1). */\n\
         export const NUMBERED = Object.freeze([{}]);\n",
        numbered.join(", ")
    );
    s.push_str(
        "/** Error code → name (PROTOCOL.md §6). */\nexport const ERROR_NAMES = Object.freeze({\n",
    );
    for c in ErrorCode::ALL {
        let _ = writeln!(s, "  {}: '{}',", c.as_u16(), c.name());
    }
    s.push_str("});\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bytes_are_unique_and_in_their_direction_range() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(TABLE[i + 1..].iter().all(|b| b.ty != a.ty), "{a:?}");
            // Only server messages are numbered events.
            assert!(!a.numbered || a.ty >= 0x81, "{a:?}");
        }
    }

    /// `client/wire.js` is what the table generates. After changing the
    /// table or the error codes, regenerate it with
    /// `RALLY_BLESS=1 cargo test wire_js`.
    #[test]
    fn wire_js_is_generated_from_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/client/wire.js");
        let want = wire_js();
        if std::env::var_os("RALLY_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let got = std::fs::read_to_string(path).unwrap();
        assert!(
            got == want,
            "client/wire.js is stale: run `RALLY_BLESS=1 cargo test wire_js`"
        );
    }
}
