#!/usr/bin/env bash
# Browser client checks, in order:
#   1. types: client/rally.d.ts must say exactly what client/rally.js does,
#      and every client module and game page must type-check (tsc);
#   2. pure tests (codec, client logic against fake transports, helpers);
#   3. headless Debian Chromium (playwright-core) and Firefox ESR
#      (puppeteer-core over WebDriver BiDi) — never a downloaded browser —
#      driving the game pages against the real server binary.
#
#   tests/browser/run.sh            # uses target/release/rally
#   RALLY_BIN=/path/to/rally tests/browser/run.sh
#
# Fails, never skips, when a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's browsers, installed when missing; a browser that cannot be
# installed fails the run.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: missing ${missing[*]}; installing from Debian" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
/usr/bin/chromium --version
/usr/bin/firefox-esr --version

repo="$(cd ../.. && pwd)"
export RALLY_BIN="${RALLY_BIN:-$repo/target/release/rally}"
if [ ! -x "$RALLY_BIN" ]; then
  echo "run.sh: server binary $RALLY_BIN not found; run 'cargo build --release' first or set RALLY_BIN" >&2
  exit 1
fi

# Playwright and Puppeteer must never fetch a browser of their own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PUPPETEER_SKIP_DOWNLOAD=1
npm ci --no-audit --no-fund

# Types: derive declarations from the code, compare them with the
# hand-written ones, and check the pages (see types/gen-check.mjs).
rm -rf .types
npx tsc -p tsconfig.emit.json
node types/gen-check.mjs
npx tsc --noEmit -p tsconfig.json

exec node --test
