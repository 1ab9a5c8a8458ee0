#!/usr/bin/env bash
# Edge memory per host: starts portico-edge (release) with snapshots of
# 0, 10k and 100k hosts, each host with its own certificate, and prints the
# resident set size once the snapshot is loaded, and the KiB per host.
#   tests/bench/edge-rss.sh [counts...]      (default: 0 10000 100000)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${EDGE_BIN:-$here/../../target/release/portico-edge}
snap_bin=${SNAPSHOT_BIN:-$here/../../target/release/bench-snapshot}
work=$(mktemp -d /tmp/edge-rss.XXXX); trap 'rm -rf "$work"' EXIT
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(0 10000 100000)
base=""
printf '%8s %12s %14s %12s\n' hosts rss_kib load_seconds kib_per_host
for n in "${counts[@]}"; do
  "$snap_bin" --out "$work/snap.json" --hosts "$n" 2>/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  start=$(date +%s.%N)
  "$bin" --snapshot "$work/snap.json" --data-dir "$work/data-$n" --threads 1 \
    --http 127.0.0.1:0 --https 127.0.0.1:0 --admin "127.0.0.1:$port" >"$work/edge-$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { cat "$work/edge-$n.log"; exit 1; }
    sleep 0.1
  done
  loaded=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  [ -z "$base" ] && base=$rss
  if [ "$n" -gt 0 ]; then per=$(python3 -c "print(round(($rss - $base) / $n, 2))"); else per="-"; fi
  printf '%8s %12s %14s %12s\n' "$n" "$rss" "$loaded" "$per"
done
