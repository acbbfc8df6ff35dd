#!/usr/bin/env bash
# TLS overhead: two local 3-node clusters, one plain and one with mutual TLS (certificates made
# by `replog cluster --tls`, run for a moment),
# measured by `replog bench` in alternating rounds at each client count; prints
# every run and the medians. Only the nodes started here are stopped, by PID.
#   scripts/bench-tls.sh [ROUNDS] [SECONDS]
set -euo pipefail
rounds=${1:-3}
seconds=${2:-5}
cd "$(dirname "$0")/.."
cargo build --release --quiet -p replog
bin=$PWD/target/release/replog
dir=$(mktemp -d)
base=$((20000 + RANDOM % 12000))
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
# Certificates: `replog cluster --tls` writes them before starting its nodes; run it for a
# moment on ports of its own and keep the files.
"$bin" cluster --tls --nodes 3 --base-port $((base + 10)) --data-dir "$dir/certs" >/dev/null 2>&1 & gen=$!
for _ in $(seq 50); do [ -f "$dir/certs/tls/cli.key" ] && break; sleep 0.1; done
sleep 0.5; kill -TERM $gen; wait $gen 2>/dev/null || true
tls=$dir/certs/tls
start_cluster() { # NAME FIRST_PORT [TLS]
  local name=$1 port=$2 flags=()
  local a=(127.0.0.1:$port 127.0.0.1:$((port + 1)) 127.0.0.1:$((port + 2)))
  for k in 0 1 2; do
    local peers=() j
    for j in 0 1 2; do [ $j != $k ] && peers+=("${a[$j]}"); done
    flags=()
    if [ -n "${3:-}" ]; then flags=(--tls-cert "$tls/node$((k + 1)).pem" --tls-key "$tls/node$((k + 1)).key" --tls-ca "$tls/ca.pem"); fi
    local leader=(); [ $k = 0 ] && leader=(--leader)
    "$bin" start -i "node$((k + 1))" -a "${a[$k]}" -p "${peers[0]},${peers[1]}" "${leader[@]}" "${flags[@]}" \
      --data-dir "$dir/$name" 2>"$dir/$name-n$k.log" & pids+=($!)
  done
}
start_cluster plain "$base"
start_cluster tls $((base + 3)) tls
sleep 2
for clients in ${CLIENTS:-1 64}; do
  : >"$dir/plain.$clients"; : >"$dir/tls.$clients"
  for _ in $(seq "$rounds"); do
    "$bin" bench -t 127.0.0.1:$base --clients "$clients" --duration "$seconds" --json >>"$dir/plain.$clients"
    "$bin" bench -t 127.0.0.1:$((base + 3)) --clients "$clients" --duration "$seconds" --json \
      --tls-cert "$tls/cli.pem" --tls-key "$tls/cli.key" --tls-ca "$tls/ca.pem" >>"$dir/tls.$clients"
  done
  for kind in plain tls; do
    python3 - "$kind" "$dir/$kind.$clients" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
for r in rows:
    print("  %s clients=%d %.0f appends/s p50 %.3f ms p99 %.3f ms" % (sys.argv[1], r["clients"], r["appends_per_second"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
med = lambda key, sub=None: statistics.median([r[key][sub] if sub else r[key] for r in rows])
print("%s clients=%d median of %d: %.0f appends/s, p50 %.3f ms, p99 %.3f ms" % (sys.argv[1], rows[0]["clients"], len(rows), med("appends_per_second"), med("latency_ms", "p50"), med("latency_ms", "p99")))
PY
  done
done
