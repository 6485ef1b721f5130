#!/usr/bin/env bash
# Browser tests: headless Debian Chromium (never a downloaded browser) drives
# the demo page against the real server binary.
#
#   tests/browser/run.sh            # uses target/release/rally
#   RALLY_BIN=/path/to/rally tests/browser/run.sh
#
# Fails, never skips, when a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: /usr/bin/chromium missing; installing Debian chromium" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: need root to apt-get install chromium" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y chromium
fi
/usr/bin/chromium --version

repo="$(cd ../.. && pwd)"
export RALLY_BIN="${RALLY_BIN:-$repo/target/release/rally}"
if [ ! -x "$RALLY_BIN" ]; then
  echo "run.sh: server binary $RALLY_BIN not found; run 'cargo build --release' first or set RALLY_BIN" >&2
  exit 1
fi

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# Playwright must never fetch a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec node --test
