#!/usr/bin/env bash
# Time for a new node to join a loaded cluster and become a voter (membership changes).
#
#   scripts/bench-promote.sh [REPLOG_BINARY] [ENTRIES] [RETAIN_ENTRIES]
#
# Three nodes on loopback take ENTRIES (default 1000000) 100-byte commands from
# `replog bench` (bounded rounds of 10 s). A fourth node then starts with `--join`: it is
# added as a learner, catches up, and the leader promotes it once it is within 256 entries of
# the commit index. Printed: the time from its start until `member list` shows it as a voter,
# the bytes of log it received (its data folder) and the rate, how it caught up (log copy, or
# the leader's snapshot then the log after it), and the slowest `member list` answer while it
# caught up (how responsive the leader stayed). With RETAIN_ENTRIES every node runs with
# `--retain-entries RETAIN_ENTRIES`: the log before that is snapshotted and deleted, so the new
# node gets a snapshot. Everything started is stopped by PID; the data folder is removed.
set -euo pipefail
BIN=${1:-target/release/replog}
ENTRIES=${2:-1000000}
RETAIN=${3:-}
DIR=$(mktemp -d /tmp/replog-promote-XXXXXX)
BASE=$((20000 + RANDOM % 20000))
A=(127.0.0.1:$BASE 127.0.0.1:$((BASE + 1)) 127.0.0.1:$((BASE + 2)) 127.0.0.1:$((BASE + 3)))
PIDS=(0 0 0 0)
cleanup() { for p in "${PIDS[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
FLAGS=()
[ -n "$RETAIN" ] && FLAGS=(--retain-entries "$RETAIN")

start() {
  local k=$1; shift
  "$BIN" start -i "n$((k + 1))" -a "${A[$k]}" --data-dir "$DIR" "${FLAGS[@]}" "$@" 2>>"$DIR/n$((k + 1)).log" &
  PIDS[$k]=$!
}
field() { "$BIN" status -t "$1" --json 2>/dev/null | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
now() { date +%s.%N; }

start 0 -p "${A[1]},${A[2]}" --leader
start 1 -p "${A[0]},${A[2]}"
start 2 -p "${A[0]},${A[1]}"
sleep 2
# The load: bounded rounds of 10 s, as many as 1,000 appends a second would need at worst.
rounds=$((ENTRIES / 10000 + 10))
loaded=$(now)
for _ in $(seq 1 "$rounds"); do
  [ "$(field "${A[0]}" last_index)" -ge "$ENTRIES" ] && break
  "$BIN" bench -t "${A[0]}" --clients 256 --duration 10 --size 100 --json >/dev/null
done
last=$(field "${A[0]}" last_index)
[ "$last" -ge "$ENTRIES" ] || { echo "the load reached only $last entries" >&2; exit 1; }
printf "loaded %d entries in %.1f s; the leader's log starts at index %d\n" "$last" "$(echo "$(now) - $loaded" | bc)" "$(field "${A[0]}" first_index)"
leader_bytes=$(du -sb "$DIR/n1" | cut -f1)

began=$(now)
start 3 --join "${A[0]}"
voter=
slowest=0
for _ in $(seq 1 12000); do # 10 minutes at most
  asked=$(now)
  rows=$("$BIN" member list -t "${A[0]}" --json 2>/dev/null || true)
  took=$(echo "$(now) - $asked" | bc)
  [ "$(echo "$took > $slowest" | bc)" = 1 ] && slowest=$took
  if echo "$rows" | grep -q "\"address\":\"${A[3]}\",\"role\":\"voter\""; then
    voter=$(echo "$(now) - $began" | bc)
    break
  fi
  sleep 0.05
done
[ -n "$voter" ] || { echo "n4 did not become a voter in 10 minutes" >&2; tail -5 "$DIR/n4.log" >&2; exit 1; }
# Its log may still trail by up to 256 entries: wait (bounded) until it holds the leader's last.
target=$(field "${A[0]}" last_index)
for _ in $(seq 1 3000); do
  [ "$(field "${A[3]}" durable_index)" -ge "$target" ] && break
  sleep 0.01
done
caught=$(echo "$(now) - $began" | bc)
bytes=$(du -sb "$DIR/n4" | cut -f1)
first=$(field "${A[3]}" first_index)
if grep -q "installed the leader's snapshot" "$DIR/n4.log"; then
  how="the leader's snapshot, then the log from index $first"
else
  how="a copy of the whole log (first index $first)"
fi
received=$((target - first + 1))
printf "n4 joined: a voter after %.3f s, holding the leader's last entry (%d) after %.3f s\n" "$voter" "$target" "$caught"
echo "  caught up through $how"
printf "  received %d entries, %.1f MiB of log (leader's folder: %.1f MiB): %.1f MiB/s, %.0f entries/s\n" \
  "$received" "$(echo "$bytes / 1048576" | bc -l)" "$(echo "$leader_bytes / 1048576" | bc -l)" \
  "$(echo "$bytes / 1048576 / $caught" | bc -l)" "$(echo "$received / $caught" | bc -l)"
printf "  slowest \`member list\` answer meanwhile: %.0f ms\n" "$(echo "$slowest * 1000" | bc -l)"
