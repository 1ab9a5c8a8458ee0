#!/usr/bin/env bash
# EDGE_CMD for ../shared/bench/peers.sh: starts portico-edge (release build)
# in the peers' work dir with HTTP on 127.0.0.1:18090, HTTPS on
# 127.0.0.1:18490, routing bench.test to the upstream at 127.0.0.1:18080 with
# the peers' certificate (cert.pem, key.pem). One worker thread, like them.
# EDGE_BIN overrides the binary; EXTRA_HOSTS=N loads N more hosts with
# certificates (bench-snapshot) so the table is realistic.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${EDGE_BIN:-$here/../../target/release/portico-edge}
snap_bin=${SNAPSHOT_BIN:-$here/../../target/release/bench-snapshot}
dir=${PEERS_DIR:-$PWD}
"$snap_bin" --out "$dir/edge-snapshot.json" --hosts "${EXTRA_HOSTS:-0}" \
  --host bench.test --target 127.0.0.1:18080 --cert "$dir/cert.pem" --key "$dir/key.pem"
exec "$bin" --snapshot "$dir/edge-snapshot.json" --data-dir "$dir/edge-data" --threads 1 \
  --http 127.0.0.1:18090 --https 127.0.0.1:18490 --admin 127.0.0.1:18990
