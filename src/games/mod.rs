//! The built-in games: users of the game API, written as a game developer
//! would write theirs. `rally serve --game NAME` picks one; their bytes are
//! documented in PROTOCOL.md §12.

pub mod dots;
pub mod relay;
pub mod shooter;
pub mod synthetic;

use crate::room::GameFactory;

/// Every built-in game, by name.
pub const NAMES: [&str; 4] = ["dots", "relay", "shooter", "synthetic"];

/// The built-in game called `name`.
pub fn builtin(name: &str) -> Option<GameFactory> {
    Some(match name {
        "dots" => GameFactory::new(name, dots::Dots::new),
        "relay" => GameFactory::new(name, relay::Relay::new),
        "shooter" => GameFactory::new(name, shooter::Shooter::new),
        "synthetic" => GameFactory::new(name, synthetic::Synthetic::new),
        _ => return None,
    })
}

/// Checks a built-in game's options, so a bad one stops the server at
/// startup with a message naming it.
pub fn check(name: &str, room: &crate::game::RoomInfo<'_>) -> Result<(), String> {
    match name {
        "synthetic" => synthetic::Synthetic::check(room),
        _ => Ok(()),
    }
}
