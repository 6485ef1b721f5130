#!/usr/bin/env bash
# Runs every test Rally has, installing what the tests need first.
#
#   ./scripts/test.sh
#
# Steps: formatting and lints, the Rust unit and integration tests (real
# server processes on ephemeral ports, real WebTransport and WebSocket
# clients), then the browser tests in headless Debian Chromium. A missing
# prerequisite is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --release -- -D warnings

step "cargo test (unit, property and integration tests)"
cargo test --release

step "browser tests (headless Chromium)"
RALLY_BIN="$PWD/target/release/rally" tests/browser/run.sh
