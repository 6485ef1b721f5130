#!/usr/bin/env bash
# Runs every test Rally has, installing what the tests need first.
#
#   ./scripts/test.sh
#
# Steps: formatting and lints, the Rust unit and integration tests of the
# server and of the tools (real server processes on ephemeral ports, real
# WebTransport and WebSocket clients, the lab through network namespaces,
# which needs root), the adversarial suite with third-party Python peers
# (pip, in a venv), then the browser tests in headless Debian Chromium and
# Firefox ESR (apt, npm; the client's types checked with tsc). A missing prerequisite is a
# failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings

step "the rally library depends on none of the tools (lab plotting, rally-tools)"
if cargo tree -p rally -e normal --prefix none | grep -E '^(plotters|rally-tools) '; then
  echo "a game depending on rally would compile the tools" >&2
  exit 1
fi

step "a game outside this workspace builds on rally (examples/race as its own crate)"
ext="$(mktemp -d)"
trap 'rm -rf "$ext"' EXIT
mkdir -p "$ext/src"
cat > "$ext/Cargo.toml" <<TOML
[package]
name = "outside-game"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rally = { path = "$PWD" }
tokio = { version = "1", features = ["full"] }
anyhow = "1"
TOML
cp examples/race.rs examples/race.html "$ext/src/"
mv "$ext/src/race.rs" "$ext/src/main.rs"
# Its own target directory under ours: shares the registry, not our builds.
CARGO_TARGET_DIR="$PWD/target/outside-game" cargo build --release --quiet --manifest-path "$ext/Cargo.toml"

step "redis-server for the cluster tests (Debian's, installed when missing)"
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: need root to apt-get install redis-server" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y redis-server
fi
# The tests start their own redis-server on free ports; Debian's service,
# if the package started one, is not used.
redis-server --version

step "cargo test (unit, property and integration tests; the server and the tools)"
cargo test --release --workspace

step "adversarial peers: aioquic (HTTP/3, WebTransport), websockets, kosoku (Autobahn)"
RALLY_BIN="$PWD/target/release/rally" tests/adversarial/run.sh

step "browser tests (headless Chromium and Firefox ESR)"
RALLY_BIN="$PWD/target/release/rally" tests/browser/run.sh
