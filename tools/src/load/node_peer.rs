//! The Node.js peer of S2 (`bench/node-peer`): a `ws` broadcast server that
//! speaks enough of protocol 2 for the load clients and sends the bytes of
//! a dots snapshot of the same size at the same rate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `bench/node-peer` of this source tree (the workspace root, above this
/// crate), or of the working directory.
pub fn default_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("bench/node-peer");
    if built.join("server.js").exists() {
        built
    } else {
        PathBuf::from("bench/node-peer")
    }
}

/// Makes sure `dir` has its dependencies (`npm ci` when `node_modules` is
/// missing) and returns the server script.
pub async fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let script = dir.join("server.js");
    if !script.exists() {
        bail!("no Node peer at {}", script.display());
    }
    if !dir.join("node_modules/ws").exists() {
        eprintln!(
            "installing the Node peer's dependencies (npm ci) in {}",
            dir.display()
        );
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .context("running npm ci (is Node.js installed?)")?;
        if !status.success() {
            bail!("npm ci failed in {}", dir.display());
        }
    }
    Ok(script)
}
