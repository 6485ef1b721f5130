//! Rally's tools: what measures and exercises a Rally server from outside,
//! on top of the `rally` library. None of it is in a game server.
//!
//! - `bot`: native bots with a game-specific behaviour (`rally bot`)
//! - `soak`: churn, drops and resumes on both transports (`rally soak`)
//! - `load`: the load scenarios S1-S3 against a server child (`rally load`)
//! - `lab`: the transport comparison through packet-level impairment in
//!   network namespaces (`rally compare`)
//!
//! The tools start the server as a child process: the `rally` binary that
//! cargo builds beside `rally-tools` (see [`server_bin`]), through
//! `rally::launch`.

pub mod bot;
pub mod lab;
pub mod load;
pub mod soak;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Bytes of a snapshot before the game's payload: type, `ack_seq`, `tick`,
/// `server_time_us` (PROTOCOL.md §5).
pub const SNAPSHOT_OVERHEAD: usize =
    rally::protocol::SNAPSHOT_HEADER_LEN + rally::protocol::SNAPSHOT_PREFIX_LEN;

/// The size of a snapshot message on the wire (without framing).
pub fn snapshot_len(s: &rally::protocol::Snapshot) -> usize {
    SNAPSHOT_OVERHEAD + s.payload.len()
}

/// Environment variable naming the `rally` server binary, instead of the
/// one beside this executable (every tool's `--server-bin` reads it).
pub const SERVER_BIN_ENV: &str = "RALLY_SERVER_BIN";

/// The `rally` server binary beside this executable: cargo builds both
/// into `target/<profile>/`.
pub fn server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    server_bin_beside(&exe)
}

/// The `rally` binary in the directory of `exe`, or in its parent when
/// `exe` is in `deps/` (a test binary). A clear error when it is missing:
/// building one package (`-p rally-tools`) does not build the server.
pub fn server_bin_beside(exe: &Path) -> anyhow::Result<PathBuf> {
    let name = format!("rally{}", std::env::consts::EXE_SUFFIX);
    let dir = exe.parent().context("the executable has no directory")?;
    let mut candidates = vec![dir.join(&name)];
    if dir.file_name().is_some_and(|d| d == "deps") {
        if let Some(up) = dir.parent() {
            candidates.push(up.join(&name));
        }
    }
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "the rally server binary is missing: expected {} beside {} (build the workspace: \
         `cargo build --release --workspace`, or `cargo build --release -p rally`; or name \
         another build with --server-bin / {SERVER_BIN_ENV})",
        candidates[0].display(),
        exe.display()
    )
}

/// `explicit` when given, else the `rally` binary beside this executable.
pub fn server_bin_or(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => bail!("the server binary {} does not exist", p.display()),
        None => server_bin(),
    }
}

/// This executable (`rally-tools`), for the tools that run a part of
/// themselves as a child process (`lab-client`, `load echo-server`).
pub fn tools_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the rally-tools executable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_binary_is_found_beside_the_tools_or_above_deps() {
        let dir = std::env::temp_dir().join(format!(
            "rally-tools-bin-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let deps = dir.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        let tools = dir.join("rally-tools");
        let err = server_bin_beside(&tools).unwrap_err().to_string();
        assert!(err.contains("cargo build --release --workspace"), "{err}");
        let server = dir.join(format!("rally{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&server, b"").unwrap();
        assert_eq!(server_bin_beside(&tools).unwrap(), server);
        assert_eq!(server_bin_beside(&deps.join("load-1234")).unwrap(), server);
        let _ = std::fs::remove_dir_all(dir);
    }
}
