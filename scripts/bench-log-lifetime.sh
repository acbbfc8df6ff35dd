#!/usr/bin/env bash
# Memory and start-up of one node as its log grows (issue 9's benchmarks).
#
#   scripts/bench-log-lifetime.sh [REPLOG_BINARY] [TARGETS...]
#
# Starts a single node (its own data folder under a temp dir) with the given binary (default:
# target/release/replog), appends 100-byte commands with `replog bench --clients 64` until the
# log holds each target count of entries (default: 1000000 10000000), and at each target
# prints: entries, the node's resident memory (VmRSS), then stops it cleanly, restarts it and
# prints the time until it answers `status` again and its memory after the restart.
# Everything it starts it stops by PID; the data folder is removed at the end.
set -euo pipefail
BIN=${1:-target/release/replog}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(1000000 10000000)
PORT=$((20000 + RANDOM % 20000))
ADDR=127.0.0.1:$PORT
DIR=$(mktemp -d /tmp/replog-lifetime-XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

start() {
  "$BIN" start -i n1 -a "$ADDR" --leader --data-dir "$DIR" 2>>"$DIR/node.log" &
  PID=$!
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status"; }
last_index() { "$BIN" status -t "$ADDR" --json 2>/dev/null | sed -n 's/.*"last_index":\([0-9]*\).*/\1/p'; }
wait_ready() {
  local began=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    if "$BIN" status -t "$ADDR" >/dev/null 2>&1; then
      echo "$(date +%s.%N) - $began" | bc
      return
    fi
    sleep 0.01
  done
  echo "node did not come back" >&2; exit 1
}

start
wait_ready >/dev/null
printf "%-10s %12s %14s %12s %16s\n" binary entries rss_MiB start_s rss_after_MiB
for target in "${TARGETS[@]}"; do
  while :; do
    have=$(last_index)
    [ "${have:-0}" -ge "$target" ] && break
    # Bounded: each round runs 10 s at most.
    "$BIN" bench -t "$ADDR" --clients 64 --duration 10 --size 100 --json >/dev/null
  done
  rss=$(rss_mib)
  kill -TERM "$PID"; wait "$PID" || true
  start
  took=$(wait_ready)
  sleep 1
  printf "%-10s %12s %14s %12.3f %16s\n" "$(basename "$BIN")" "$(last_index)" "$rss" "$took" "$(rss_mib)"
done
