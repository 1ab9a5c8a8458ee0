#!/usr/bin/env bash
# Full TLS handshakes per proxy CPU-second: portico-edge against nginx and
# HAProxy, on loopback, in alternating rounds, same upstream, one worker
# thread each. Complements ../shared/bench/peers.sh, whose https-close mode
# cannot include the edge: pingora 0.9 builds the rustls ServerConfig itself
# (256-entry session cache) and offers no way to refuse resumption, and wrk
# resumes whenever the server allows it.
#
# Here the client never offers resumption instead: `h2load --h1 -n N -c N`
# makes N clients that each open one connection, do one full handshake
# (TLS 1.3, X25519, ECDSA P-256) and send one request (BENCHMARKING.md:
# "use h2load -n N -c N (one request per client)"). The proxies refuse
# resumption too (nginx, HAProxy), as in peers.sh. For each run: wall-clock
# handshakes/s (bound by the client on 2 cores), the proxy's CPU seconds
# (utime+stime of its process group from /proc), and handshakes per proxy
# CPU-second, with its ratio to HAProxy and to nginx; medians over rounds.
#
# Usage: tests/bench/handshakes.sh [connections-per-run] [rounds]
# env: EDGE_BIN (target/release/portico-edge), SNAPSHOT_BIN (bench-snapshot),
#      EXTRA_HOSTS (0: more hosts with certificates in the edge's table)
# Needs: nginx haproxy h2load openssl curl setsid (apt-get install -y
# nginx-light haproxy nghttp2-client). Listens on 127.0.0.1 only.
set -uo pipefail
N=${1:-3000}; R=${2:-5}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for t in nginx haproxy h2load openssl curl setsid; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done
UP=19080; declare -A port=([nginx]=19481 [haproxy]=19482 [edge]=19490)
W=$(mktemp -d /tmp/handshakes.XXXX); cd "$W"
pgids=()
cleanup(){ for p in "${pgids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; sleep 0.3
  for p in "${pgids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
declare -A pgid=()
start(){ local n=$1; shift; setsid "$@" >"$W/$n.log" 2>&1 </dev/null & pgid[$n]=$!; pgids+=($!); disown; }
wait_ok(){ for _ in $(seq 100); do
    [ "$(curl -sk -o /dev/null -m 2 -w '%{http_code}' --resolve "bench.test:$2:127.0.0.1" "$1://bench.test:$2/")" = 200 ] && return 0
    sleep 0.1; done; echo "$3 did not answer on $2; log:" >&2; tail "$W/$3.log" >&2; exit 1; }
cpu_ticks(){ # utime+stime of every process in the group, in clock ticks
  local total=0 f
  for f in /proc/[0-9]*/stat; do
    read -r -a s < "$f" 2>/dev/null || continue
    # fields after the ")" of comm: s[4] is pgrp, s[13]/s[14] utime/stime (comm has no spaces here)
    [ "${s[4]:-}" = "$1" ] && total=$((total + s[13] + s[14]))
  done; echo "$total"; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test >/dev/null 2>&1
cat cert.pem key.pem > both.pem
cat > up.conf <<NG
worker_processes 1; daemon off; pid $W/up.pid; error_log stderr;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP reuseport backlog=4096; location / { return 200 "ok\n"; } } }
NG
cat > px.conf <<NG
worker_processes 1; daemon off; pid $W/px.pid; error_log stderr;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:${port[nginx]} ssl backlog=4096; server_name bench.test;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_session_cache off; ssl_session_tickets off;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
cat > hap.cfg <<HP
global
  nbthread 1
  maxconn 8192
  tune.ssl.cachesize 0
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:${port[haproxy]} ssl crt $W/both.pem alpn http/1.1 no-tls-tickets
  default_backend b
backend b
  server s1 127.0.0.1:$UP
HP
"${SNAPSHOT_BIN:-$here/../../target/release/bench-snapshot}" --out snap.json --hosts "${EXTRA_HOSTS:-0}" \
  --host bench.test --target "127.0.0.1:$UP" --cert cert.pem --key key.pem >/dev/null
start upstream nginx -c "$W/up.conf" -p "$W"
start nginx nginx -c "$W/px.conf" -p "$W"
start haproxy haproxy -f "$W/hap.cfg" -db
start edge "${EDGE_BIN:-$here/../../target/release/portico-edge}" --snapshot snap.json --data-dir "$W/edge-data" \
  --threads 1 --http 127.0.0.1:19090 --https "127.0.0.1:${port[edge]}" --admin 127.0.0.1:19990
for n in nginx haproxy edge; do wait_ok https "${port[$n]}" "$n"; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "each run: h2load --h1 -n $N -c $N (one full handshake + one request per connection); $R rounds, order rotating"
hz=$(getconf CLK_TCK)
declare -A rps=() per_cpu=()
names=(nginx haproxy edge)
for ((r = 0; r < R; r++)); do
  for ((i = 0; i < 3; i++)); do
    n=${names[$(((i + r) % 3))]}
    before=$(cpu_ticks "${pgid[$n]}")
    out=$(h2load --h1 -n "$N" -c "$N" -t 1 --connect-to="127.0.0.1:${port[$n]}" "https://bench.test:${port[$n]}/" 2>&1); [ -n "${DEBUG:-}" ] && echo "$out"
    after=$(cpu_ticks "${pgid[$n]}")
    ok=$(sed -n 's/.* \([0-9]*\) succeeded.*/\1/p' <<<"$out" | head -1)
    secs=$(sed -n 's/^finished in \([0-9.]*\)\(m\?s\),.*/\1 \2/p' <<<"$out")
    if [ "${ok:-0}" -lt $((N * 99 / 100)) ]; then echo "!! $n round $r: only ${ok:-0}/$N succeeded"; continue; fi
    read -r t unit <<<"$secs"; [ "$unit" = ms ] && t=$(awk -v t="$t" 'BEGIN{print t/1000}')
    cpu=$(awk -v a="$before" -v b="$after" -v hz="$hz" 'BEGIN{print (b-a)/hz}')
    rps[$n]+="$(awk -v n="$ok" -v t="$t" 'BEGIN{printf "%.0f", n/t}') "
    per_cpu[$n]+="$(awk -v n="$ok" -v c="$cpu" 'BEGIN{printf "%.0f", (c > 0 ? n/c : 0)}') "
    printf '  round %d %-8s %6s ok  %7.3f s  %6.2f proxy cpu-s\n' "$r" "$n" "$ok" "$t" "$cpu"
  done
done
median(){ tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print (NR ? a[int((NR+1)/2)] : 0)}'; }
echo
printf '%-8s %14s %22s %10s %10s\n' proxy "handshakes/s" "handshakes/proxy-cpu-s" "vs nginx" "vs haproxy"
ng=$(median "${per_cpu[nginx]:-}"); hp=$(median "${per_cpu[haproxy]:-}")
for n in nginx haproxy edge; do
  pc=$(median "${per_cpu[$n]:-}")
  printf '%-8s %14s %22s %9.2fx %9.2fx\n' "$n" "$(median "${rps[$n]:-}")" "$pc" \
    "$(awk -v a="$pc" -v b="$ng" 'BEGIN{print (b ? a/b : 0)}')" "$(awk -v a="$pc" -v b="$hp" 'BEGIN{print (b ? a/b : 0)}')"
done
