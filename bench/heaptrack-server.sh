#!/bin/sh
# Runs `rally` under heaptrack's allocation tracker, for
#   rally load s3 --server-bin bench/heaptrack-server.sh …
# (same pid as the server, so the load command's RSS and CPU readings still
# apply). Needs `apt-get install heaptrack`. Output: $HEAPTRACK_OUT
# (default /tmp/rally-heaptrack.zst); read it with
#   heaptrack_print -f /tmp/rally-heaptrack.zst --print-peaks 1
set -eu
out="${HEAPTRACK_OUT:-/tmp/rally-heaptrack.zst}"
rally="${RALLY_BIN:-$(dirname "$0")/../target/release/rally}"
pipe="$(mktemp -u /tmp/rally-heaptrack-pipe.XXXXXX)"
mkfifo "$pipe"
/usr/lib/heaptrack/libexec/heaptrack_interpret < "$pipe" | zstd -q -c > "$out" &
(sleep 10; rm -f "$pipe") &
exec env LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT="$pipe" "$rally" "$@"
