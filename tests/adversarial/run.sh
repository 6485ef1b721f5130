#!/usr/bin/env bash
# Adversarial suite: third-party peers (aioquic WebTransport, websockets,
# kosoku/Autobahn, httpx/h2 HTTP streaming) against the real `rally` binary.
#
#   tests/adversarial/run.sh [pytest args…]
#
# Uses the venv tests/adversarial/.venv (created on first run), installs the
# pinned requirements, and runs pytest. Anything missing is an error, never a
# skip: the script exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"

export RALLY_BIN="${RALLY_BIN:-$ROOT/target/release/rally}"
if [[ ! -x "$RALLY_BIN" ]]; then
  echo "error: rally binary not found at $RALLY_BIN (cargo build --release, or set RALLY_BIN)" >&2
  exit 2
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
"$VENV/bin/python" - <<'PY'
import aioquic, websockets, kosoku, pytest, httpx, h2, prometheus_client  # fail loudly if any is missing
PY

cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q tests/adversarial "$@"
