#!/usr/bin/env bash
# Measures a local 3-node cluster with `replog bench`: RUNS runs (default 3) at each client
# count, printing every result and the median throughput and p50/p99. Everything runs on
# loopback in a temporary folder; only the nodes started here are stopped, by PID.
#   tests/bench-cluster.sh [RUNS] [SECONDS]
set -euo pipefail
runs=${1:-3}
seconds=${2:-5}
cd "$(dirname "$0")/.."
cargo build --release --quiet -p replog
bin=$PWD/target/release/replog
dir=$(mktemp -d)
base=$((20000 + RANDOM % 12000)) # below the ephemeral port range (32768+)
a=(127.0.0.1:$base 127.0.0.1:$((base + 1)) 127.0.0.1:$((base + 2)))
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
"$bin" start -i node1 -a "${a[0]}" -p "${a[1]},${a[2]}" --leader --data-dir "$dir/data" 2>"$dir/n1.log" & pids+=($!)
"$bin" start -i node2 -a "${a[1]}" -p "${a[0]},${a[2]}" --data-dir "$dir/data" 2>"$dir/n2.log" & pids+=($!)
"$bin" start -i node3 -a "${a[2]}" -p "${a[0]},${a[1]}" --data-dir "$dir/data" 2>"$dir/n3.log" & pids+=($!)
sleep 2
for clients in ${CLIENTS:-1 64 256}; do
  results=()
  for _ in $(seq "$runs"); do
    results+=("$("$bin" bench -t "${a[0]}" --clients "$clients" --duration "$seconds" --json)")
  done
  printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
rows = [json.loads(line) for line in sys.stdin]
for r in rows:
    print("  clients=%d %.0f appends/s p50 %.3f ms p99 %.3f ms" % (r["clients"], r["appends_per_second"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
med = lambda key, sub=None: statistics.median([r[key][sub] if sub else r[key] for r in rows])
print("clients=%d median of %d: %.0f appends/s, p50 %.3f ms, p99 %.3f ms" % (rows[0]["clients"], len(rows), med("appends_per_second"), med("latency_ms", "p50"), med("latency_ms", "p99")))
'
done
