//! What the tools' tests share: the binaries under test, and a server to
//! point bots at.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rally::launch::{Launch, ServerProcess};

/// The `rally-tools` binary of this build.
pub fn tools_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rally-tools"))
}

/// The `rally` server binary beside it. Cargo builds it for the workspace
/// (`cargo test --release` at the root), not for `-p rally-tools` alone: a
/// missing one fails the test, naming the command that builds it.
pub fn server_bin() -> PathBuf {
    rally_tools::server_bin_beside(tools_bin()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `rally serve` with `extra` flags, its logs at warn.
pub fn server(extra: &[&str]) -> ServerProcess {
    let mut launch = Launch::rally(server_bin());
    launch.args(extra).env(
        "RALLY_LOG",
        std::env::var("RALLY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    launch.spawn().expect("start rally serve")
}

/// True under CI, where a missing prerequisite fails instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
