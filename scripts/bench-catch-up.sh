#!/usr/bin/env bash
# Catch-up speed of a far-behind follower (issue 9's benchmark), next to the disk's own speed.
#
#   scripts/bench-catch-up.sh [REPLOG_BINARY] [MEGABYTES] [COMMAND_BYTES]
#
# Three nodes on loopback. node3 is stopped; the leader takes MEGABYTES (default 256) of
# COMMAND_BYTES-byte commands (default 4096); node3 restarts and the time until its durable
# index reaches the leader's last index gives the catch-up rate in MB/s of commands. Then `dd`
# writes the same amount to the same file system with one fdatasync at the end: the disk's
# sequential write speed, for comparison. Everything started is stopped by PID.
set -euo pipefail
BIN=${1:-target/release/replog}
MB=${2:-256}
SIZE=${3:-4096}
DIR=$(mktemp -d /tmp/replog-catchup-XXXXXX)
BASE=$((20000 + RANDOM % 20000))
A=(127.0.0.1:$BASE 127.0.0.1:$((BASE + 1)) 127.0.0.1:$((BASE + 2)))
PIDS=(0 0 0)
cleanup() { for p in "${PIDS[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

start() {
  local k=$1; shift
  local peers=()
  for j in 0 1 2; do [ "$j" != "$k" ] && peers+=("${A[$j]}"); done
  "$BIN" start -i "n$((k + 1))" -a "${A[$k]}" -p "$(IFS=,; echo "${peers[*]}")" --data-dir "$DIR" "$@" \
    2>>"$DIR/n$((k + 1)).log" &
  PIDS[$k]=$!
}
field() { "$BIN" status -t "$1" --json 2>/dev/null | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }

start 0 --leader; start 1; start 2
sleep 2
kill -TERM "${PIDS[2]}"; wait "${PIDS[2]}" || true; PIDS[2]=0
# The leader takes the data while node3 is down: bounded rounds of 10 s.
target=$((MB * 1024 * 1024 / SIZE))
while [ "$(field "${A[0]}" last_index)" -lt "$target" ]; do
  "$BIN" bench -t "${A[0]}" --clients 16 --duration 10 --size "$SIZE" --json >/dev/null
done
last=$(field "${A[0]}" last_index)
began=$(date +%s.%N)
start 2
for _ in $(seq 1 60000); do
  durable=$(field "${A[2]}" durable_index)
  [ "${durable:-0}" -ge "$last" ] && break
  sleep 0.01
done
took=$(echo "$(date +%s.%N) - $began" | bc)
mb=$(echo "$last * $SIZE / 1048576" | bc)
echo "catch-up: $last entries ($mb MiB of commands) in ${took}s: $(echo "scale=1; $mb / $took" | bc) MiB/s"
dd if=/dev/zero of="$DIR/dd.bin" bs=1M count="$mb" conv=fdatasync 2>&1 | tail -1 | sed 's/^/disk (dd, one fdatasync): /'
