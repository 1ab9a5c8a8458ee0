# Shared by scripts/dev and scripts/test: install what is missing, find or
# start Postgres. Source it; it defines functions and changes nothing by itself.
# shellcheck shell=bash

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# at_exit CMD — run CMD when the calling script exits (last registered runs first).
exit_hooks=()
at_exit() {
  exit_hooks+=("$*")
  trap run_exit_hooks EXIT
}
run_exit_hooks() {
  local i
  for ((i = ${#exit_hooks[@]} - 1; i >= 0; i--)); do eval "${exit_hooks[$i]}" || true; done
}

apt_updated=0
# ensure_packages CMD:PACKAGE ... — apt-get installs PACKAGE when CMD is missing.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/$cmd" >/dev/null; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then $sudo apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust 1.95 with rustup (https://rustup.rs)"
}

# pg_answers URL — true when a server accepts a connection at URL.
pg_answers() {
  psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

# ensure_postgres — exports DATABASE_URL pointing at a reachable server:
# $DATABASE_URL if set, else 127.0.0.1:5432 with trust auth, else a private
# cluster (initdb + pg_ctl) under $TMPDIR, stopped when the calling script exits.
# PORTICO_PRIVATE_PG=1 skips straight to the private cluster.
ensure_postgres() {
  ensure_packages psql:postgresql-client
  if [ "${PORTICO_PRIVATE_PG:-}" = 1 ]; then
    start_private_postgres
    return
  fi
  if [ -n "${DATABASE_URL:-}" ]; then
    pg_answers "$DATABASE_URL" || die "DATABASE_URL is set but Postgres does not answer there"
    log "Postgres: DATABASE_URL"
    return
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_answers "$local_url"; then
    export DATABASE_URL="$local_url"
    log "Postgres: 127.0.0.1:5432"
    return
  fi
  start_private_postgres
}

start_private_postgres() {
  ensure_packages initdb:postgresql
  local bin; bin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1)")
  [ -x "$bin/initdb" ] || die "initdb not found after installing postgresql"
  PORTICO_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portico-pg.XXXXXX")
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PORTICO_PG_DIR"
    as=(runuser -u postgres --)
  fi
  log "Postgres: starting a private cluster in $PORTICO_PG_DIR on port $port"
  "${as[@]}" "$bin/initdb" -D "$PORTICO_PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$PORTICO_PG_DIR/data" -l "$PORTICO_PG_DIR/log" -w \
    -o "-p $port -k $PORTICO_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  export PORTICO_PG_BIN="$bin" PORTICO_PG_AS="${as[*]}"
  at_exit stop_private_postgres
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_private_postgres() {
  [ -n "${PORTICO_PG_DIR:-}" ] || return 0
  log "stopping the private Postgres cluster"
  # shellcheck disable=SC2086
  $PORTICO_PG_AS "$PORTICO_PG_BIN/pg_ctl" -D "$PORTICO_PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$PORTICO_PG_DIR"
}

# with_database URL NAME — URL with its database name replaced by NAME.
with_database() {
  local url=$1 name=$2 query=""
  case "$url" in *\?*) query="?${url#*\?}"; url=${url%%\?*};; esac
  printf '%s/%s%s' "${url%/*}" "$name" "$query"
}
