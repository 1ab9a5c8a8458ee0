#!/usr/bin/env bash
# Multi-region rehearsal of a Fly-like deployment on one machine (root).
#
# Network namespaces joined by a router namespace (iproute2 veth pairs;
# only 10.77.0.0/16 inside the namespaces this script creates):
#   core    10.77.0.2   Postgres, two control-plane replicas (serve + jobs), Pebble
#   r1..r3  10.77.N.2   one portico-edge each (--proxy-protocol v2)
#   client  10.77.5.2   curl, the DNS server, the customer's origin;
#           10.77.5.1N  "anycast" addresses of region N: delay relays that add
#                       a PROXY v2 header, as Fly's proxy does
# Latency per region (40/90/150 ms each way) comes from tests' delay-relay
# (the kernel has no netem): on each region's path to the control plane
# (in the region: 127.0.0.1:7000 → cp1, failing over to cp2 per connection,
# as the edge does across the addresses of a multi-machine name on Fly) and to its
# clients (in the client namespace).
#
# As an operator: register edges, add a domain, verify DNS, get a Pebble
# certificate on demand, HTTPS from the client to every region; cut one
# region from the control plane (all keep serving; the cut one from its
# table), kill a control-plane replica (edges fail over), restore both.
# Prints what each step took; figures go to docs/benchmarks.md.
#
#   sudo tests/rehearsal/regions.sh            # builds release binaries first
#   PROFILE=debug tests/rehearsal/regions.sh   # reuse a debug build (faster to build)
#   BIN=/path/to/dir tests/rehearsal/regions.sh   # prebuilt binaries, no build
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

[ "$(id -u)" = 0 ] || { echo "regions.sh: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || apt-get install -y -qq iproute2 >/dev/null
for tool in pebble curl jq openssl; do
  command -v "$tool" >/dev/null || apt-get install -y -qq "$tool" >/dev/null
done
PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")

T0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
log() { printf '[%6ss] %s\n' "$(secs "$T0" "$(now)")" "$*" >&2; }
RESULTS=()
result() { RESULTS+=("$1|$2"); log "RESULT $1: $2"; }

# The two binaries under test in $PROFILE; the rehearsal's own tools
# (delay-relay, rehearsal-dns) in debug: their speed is not what is measured.
PROFILE=${PROFILE:-release}
TOOLS=$ROOT/target/debug
if [ -z "${BIN:-}" ]; then
  t=$(now)
  log "building $PROFILE binaries"
  flag=$([ "$PROFILE" = release ] && echo --release || true)
  SQLX_OFFLINE=true nice -n 15 cargo build -q $flag -p portico-edge -p portico-control-plane --bins
  BIN=$ROOT/target/$PROFILE
  result "build ($PROFILE)" "$(secs "$t" "$(now)") s"
fi
if [ ! -x "$TOOLS/delay-relay" ] || [ ! -x "$TOOLS/rehearsal-dns" ] || [ -z "${NO_BUILD:-}" ]; then
  SQLX_OFFLINE=true nice -n 15 cargo build -q -p portico-e2e --bin delay-relay --bin rehearsal-dns
fi

WORK=$(mktemp -d /tmp/portico-rehearsal.XXXXXX)
chmod 755 "$WORK"
NS=(pr-router pr-core pr-r1 pr-r2 pr-r3 pr-client)
DELAY=(0 40 90 150)
PIDS=()

cleanup() {
  local rc=$?
  log "tearing down (exit $rc)"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5 # allow-sleep: let processes exit before their namespaces go
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -f "$WORK/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Starts a background process in a namespace, logging to $WORK/NAME.log.
spawn() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}
# Polls a command until it succeeds, at most $1 seconds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.05 # allow-sleep: polling with a deadline
  done
}

# --- network ---------------------------------------------------------------
t=$(now)
for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
in_ns pr-router sysctl -qw net.ipv4.ip_forward=1
link() { # link NS SUBNET_OCTET: veth NS <-> router, 10.77.OCTET.0/24
  local ns=$1 n=$2
  ip link add "v$n-rt" netns pr-router type veth peer name "v$n-leaf" netns "$ns"
  in_ns pr-router ip addr add "10.77.$n.1/24" dev "v$n-rt"
  in_ns pr-router ip link set "v$n-rt" up
  in_ns "$ns" ip addr add "10.77.$n.2/24" dev "v$n-leaf"
  in_ns "$ns" ip link set "v$n-leaf" up
  in_ns "$ns" ip route add default via "10.77.$n.1"
}
link pr-core 0; link pr-r1 1; link pr-r2 2; link pr-r3 3; link pr-client 5
for r in 1 2 3; do in_ns pr-client ip addr add "10.77.5.1$r/24" dev v5-leaf; done
result "network (6 namespaces)" "$(secs "$t" "$(now)") s"

# --- core: Postgres, Pebble, two control planes -------------------------------
t=$(now)
mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
echo "host all all 10.77.0.0/16 trust" >>"$WORK/pg/data/pg_hba.conf"
in_ns pr-core runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p 5432 -k $WORK/pg -c listen_addresses=10.77.0.2 -c fsync=off -c max_connections=200" start >/dev/null
in_ns pr-core psql -h 10.77.0.2 -U postgres -qc 'create database portico' >/dev/null
DB=postgres://postgres@10.77.0.2:5432/portico

# Pebble's own HTTPS certificate, for 10.77.0.2.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=rehearsal-root \
  -keyout "$WORK/root.key" -out "$WORK/root.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=pebble \
  -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:10.77.0.2\nbasicConstraints=CA:FALSE\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/root.pem" -CAkey "$WORK/root.key" -CAcreateserial \
  -days 2 -extfile "$WORK/ext" -out "$WORK/tls.pem" 2>/dev/null
cat >"$WORK/pebble.json" <<EOF
{"pebble": {"listenAddress": "10.77.0.2:14000", "managementListenAddress": "10.77.0.2:15000",
  "certificate": "$WORK/tls.pem", "privateKey": "$WORK/tls.key", "httpPort": 80, "tlsPort": 443,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
spawn pebble pr-core env PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble.json" -dnsserver 10.77.5.2:53 -strict=false

OPERATOR=rehearsal-operator-token-0123456789abcdef
cp_env=(DATABASE_URL=$DB PORTICO_OPERATOR_TOKEN=$OPERATOR PORTICO_WORKER_IN_SERVE=true
  PORTICO_ENCRYPTION_KEYS=test1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
  PORTICO_CNAME_TARGET=edge.portico.test PORTICO_DNS_NAMESERVERS=10.77.5.2:53
  PORTICO_ALLOW_LOCAL_TARGETS=true PORTICO_ISSUER=acme PORTICO_ACME_DIRECTORY=https://10.77.0.2:14000/dir
  PORTICO_ACME_CA_FILE=$WORK/root.pem PORTICO_ACME_CHALLENGE=http-01 RUST_LOG=info)
in_ns pr-core env "${cp_env[@]}" "$BIN/portico-control-plane" migrate >/dev/null
start_cp() { # start_cp N: replica N on 10.77.0.2:808N
  spawn "cp$1" pr-core env "${cp_env[@]}" PORTICO_LISTEN="10.77.0.2:808$1" PORTICO_MIGRATE=false \
    $BIN/portico-control-plane serve
  wait_for 60 "control plane $1" in_ns pr-core curl -sf "http://10.77.0.2:808$1/readyz"
}
start_cp 1; start_cp 2
wait_for 30 pebble in_ns pr-core curl -skf https://10.77.0.2:14000/dir
in_ns pr-core curl -sk https://10.77.0.2:15000/roots/0 >"$WORK/pebble-root.pem"
result "core up (Postgres, Pebble, 2 control planes)" "$(secs "$t" "$(now)") s"

API=http://10.77.0.2:8081
api() { # api METHOD PATH TOKEN [JSON]
  in_ns pr-core curl -sS -X "$1" "$API$2" -H "Authorization: Bearer $3" \
    -H 'content-type: application/json' ${4:+-d "$4"}
}

# --- customer side: origin (echoes headers) ---------------------------------
cat >"$WORK/origin.py" <<'EOF'
import json, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("10.77.5.2", 8090), H).serve_forever()
EOF
spawn origin pr-client python3 "$WORK/origin.py"

# --- edges: register, start (each behind its delay relays) -------------------
t=$(now)
for r in 1 2 3; do
  d=${DELAY[$r]}
  token=$(api POST /v1/ops/edges "$OPERATOR" "{\"name\":\"r$r\",\"region\":\"r$r\"}" | jq -r .token)
  [ -n "$token" ] && [ "$token" != null ] || { log "edge r$r registration failed"; exit 1; }
  spawn "cprelay$r" "pr-r$r" "$TOOLS/delay-relay" --listen 127.0.0.1:7000 --to 10.77.0.2:8081 --to 10.77.0.2:8082 --delay-ms "$d"
  mkdir -p "$WORK/edge$r"
  spawn "edge$r" "pr-r$r" env RUST_LOG=info PORTICO_EDGE_TOKEN="$token" \
    $BIN/portico-edge --http "10.77.$r.2:80" --https "10.77.$r.2:443" --admin 127.0.0.1:9180 \
    --data-dir "$WORK/edge$r" --control-plane http://127.0.0.1:7000 --name "r$r" --proxy-protocol v2
  for port in 80 443; do
    spawn "clientrelay$r-$port" pr-client "$TOOLS/delay-relay" --listen "10.77.5.1$r:$port" \
      --to "10.77.$r.2:$port" --delay-ms "$d" --proxy-v2
  done
done
for r in 1 2 3; do
  wait_for 60 "edge r$r ready" in_ns "pr-r$r" curl -sf http://127.0.0.1:9180/readyz
done
result "3 edges registered, streaming and ready" "$(secs "$t" "$(now)") s"

# --- tenant and domain --------------------------------------------------------
HOST=shop.customer.test
KEY=$(api POST /v1/tenants "$OPERATOR" '{"name":"Rehearsal","plan":"pro"}' | jq -r .api_key.key)
[ -n "$KEY" ] && [ "$KEY" != null ] || { log "tenant creation failed"; exit 1; }
t=$(now)
domain=$(api POST /v1/domains "$KEY" "{\"hostname\":\"$HOST\",\"target\":\"http://10.77.5.2:8090\"}")
DOMAIN_ID=$(jq -r .id <<<"$domain")
txt_name=$(jq -r '.verification.records[] | select(.type=="TXT") | .name' <<<"$domain")
txt_value=$(jq -r '.verification.records[] | select(.type=="TXT") | .value' <<<"$domain")
spawn dns pr-client "$TOOLS/rehearsal-dns" --listen 10.77.5.2:53 \
  --record "$HOST CNAME edge.portico.test" --record "$txt_name TXT $txt_value" \
  --record "edge.portico.test A 10.77.5.11" --record "edge.portico.test A 10.77.5.12" \
  --record "edge.portico.test A 10.77.5.13"
sleep 0.3 # allow-sleep: the DNS server binds
status=$(api POST "/v1/domains/$DOMAIN_ID/verify" "$KEY" | jq -r .status)
[ "$status" = active ] || { log "verify: $status"; api GET "/v1/domains/$DOMAIN_ID" "$KEY" >&2; exit 1; }
result "domain added and DNS verified" "$(secs "$t" "$(now)") s"

# --- HTTPS from the client to every region ------------------------------------
https_via() { # https_via R: one request to region R's anycast address; prints X-Forwarded-For
  in_ns pr-client curl -sf --max-time 20 --cacert "$WORK/pebble-root.pem" \
    --resolve "$HOST:443:10.77.5.1$1" "https://$HOST/" | jq -er '.headers["x-forwarded-for"]'
}
for r in 1 2 3; do
  t=$(now)
  wait_for 90 "HTTPS via r$r" https_via "$r"
  xff=$(https_via "$r")
  [ "$xff" = 10.77.5.2 ] || { log "r$r: X-Forwarded-For $xff, expected the client 10.77.5.2"; exit 1; }
  result "first HTTPS 200 via r$r (+${DELAY[$r]} ms)" "$(secs "$t" "$(now)") s (X-Forwarded-For $xff)"
done
t=$(now); for i in 1 2 3 4 5; do https_via 3 >/dev/null; done
result "5 sequential HTTPS requests via r3 (new connection each)" "$(secs "$t" "$(now)") s"

# --- propagation of a change ----------------------------------------------------
version_of() { in_ns "pr-r$1" curl -sf http://127.0.0.1:9180/readyz | awk '{print $2}'; }
CHANGES=0
propagate() { # propagate LABEL REGIONS...: change the domain, time each region's apply
  local label=$1; shift
  local before; before=$(version_of 1 || echo 0)
  for r in "$@"; do local v; v=$(version_of "$r"); [ "$v" -gt "$before" ] && before=$v; done
  CHANGES=$((CHANGES + 1))
  local keep; keep=$([ $((CHANGES % 2)) = 1 ] && echo true || echo false)
  local t; t=$(now)
  api PATCH "/v1/domains/$DOMAIN_ID" "$KEY" "{\"keep_host\":$keep}" >/dev/null
  local pending=("$@") deadline=$(( $(date +%s) + 60 ))
  while [ ${#pending[@]} -gt 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do
    local left=()
    for r in "${pending[@]}"; do
      if [ "$(version_of "$r")" -gt "$before" ]; then
        result "$label: r$r (+${DELAY[$r]} ms) applied" "$(secs "$t" "$(now)") s"
      else
        left+=("$r")
      fi
    done
    pending=("${left[@]}")
    sleep 0.02 # allow-sleep: polling with a deadline
  done
  for r in "${pending[@]}"; do result "$label: r$r" "NOT applied within 60 s"; done
}
propagate "change propagation" 1 2 3

# --- cut region 2 from the control plane ------------------------------------------
t=$(now)
in_ns pr-r2 ip route add blackhole 10.77.0.0/24
in_ns pr-core ip route add blackhole 10.77.2.0/24
https_via 2 >/dev/null && result "r2 cut off: still serves HTTPS from its table" "yes"
https_via 1 >/dev/null && https_via 3 >/dev/null && result "r2 cut off: r1 and r3 serve" "yes"
propagate "change while r2 is cut" 1 3
v2=$(version_of 2); v1=$(version_of 1)
result "r2 during the cut" "version $v2 (r1 at $v1)"
t=$(now)
in_ns pr-r2 ip route del blackhole 10.77.0.0/24
in_ns pr-core ip route del blackhole 10.77.2.0/24
caught_up() { [ "$(version_of 2)" -ge "$v1" ]; }
if wait_for 120 "r2 catches up" caught_up; then
  result "r2 restored: caught up" "$(secs "$t" "$(now)") s"
else
  result "r2 restored" "did not catch up within 120 s"
fi

# --- kill control-plane replica 1 (every edge's relay prefers it) ---------------
kill "$PID_cp1"; wait "$PID_cp1" 2>/dev/null || true
API=http://10.77.0.2:8082
propagate "change after cp1 died (edges fail over to cp2)" 1 2 3
for r in 1 2 3; do https_via "$r" >/dev/null; done && result "all regions serve with cp1 down" "yes"
t=$(now)
start_cp 1
result "cp1 restarted and ready" "$(secs "$t" "$(now)") s"
propagate "change with cp1 back" 1 2 3

# --- report --------------------------------------------------------------------------
for r in 1 2 3; do
  m=$(in_ns "pr-r$r" curl -sf http://127.0.0.1:9180/metrics | awk '/proxy_protocol_headers_total/ && !/^#/ {printf "%s ", $0}')
  result "r$r PROXY v2 headers" "${m:-none}"
done
result "total" "$(secs "$T0" "$(now)") s"
echo
echo "| step | figure |"
echo "|---|---|"
for line in "${RESULTS[@]}"; do echo "| ${line%%|*} | ${line#*|} |"; done
