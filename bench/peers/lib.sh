# Shared by bench/peers/run.sh and bench/limits/run.sh. Source it; do not run it.
# Private servers for the benchmarks, stopped by cleanup() (install it with
# `trap cleanup EXIT`): a Redis of our own on a unix socket, no TCP, its data
# under .drover/bench/; databases of our own in the project's private
# PostgreSQL cluster (scripts/pg), dropped afterwards.

set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_STATE=${DROVER_BENCH_STATE:-$BENCH_ROOT/.drover/bench}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

blog() { printf '[bench] %s\n' "$*" >&2; }
bdie() { blog "ERROR: $*"; exit 1; }

REDIS_PID=""
REDIS_DIR=""
PG_DBS=()
PG_STARTED_BY_US=0
PG_ADMIN_URL=""

# redis_start D0|D2: D0 = no persistence at all; D2 = append-only file with
# fsync before every reply (appendfsync always). Sets REDIS_SOCK, REDIS_PID.
redis_start() {
  local mode=$1
  command -v redis-server >/dev/null || bdie "redis-server is missing: run bench/setup-peers.sh"
  mkdir -p "$BENCH_STATE"
  REDIS_DIR=$(mktemp -d "$BENCH_STATE/redis.XXXXXX")
  if [ ${#REDIS_DIR} -gt 90 ]; then
    rmdir "$REDIS_DIR"
    REDIS_DIR=$(mktemp -d /tmp/drover-bench-redis.XXXXXX)
  fi
  REDIS_SOCK=$REDIS_DIR/redis.sock
  {
    echo "port 0"
    echo "unixsocket $REDIS_SOCK"
    echo "unixsocketperm 700"
    echo "dir $REDIS_DIR"
    echo "logfile $REDIS_DIR/redis.log"
    echo "daemonize no"
    echo 'save ""'
    echo "maxmemory-policy noeviction"
    case "$mode" in
      D0) echo "appendonly no" ;;
      D2) echo "appendonly yes"; echo "appendfsync always" ;;
      *) bdie "unknown Redis durability '$mode' (D0, D2)" ;;
    esac
  } >"$REDIS_DIR/redis.conf"
  redis-server "$REDIS_DIR/redis.conf" </dev/null >/dev/null 2>&1 &
  REDIS_PID=$!
  local deadline=$((SECONDS + 20))
  until redis-cli -s "$REDIS_SOCK" ping 2>/dev/null | grep -q PONG; do
    kill -0 "$REDIS_PID" 2>/dev/null || { cat "$REDIS_DIR/redis.log" >&2 || true; bdie "redis-server exited"; }
    [ $SECONDS -lt $deadline ] || bdie "redis-server not answering within 20 s"
    sleep 0.1
  done
  blog "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') ($mode) on $REDIS_SOCK, pid $REDIS_PID"
  export REDIS_SOCK REDIS_PID
}

redis_stop() {
  [ -n "$REDIS_PID" ] || return 0
  if kill -0 "$REDIS_PID" 2>/dev/null; then
    redis-cli -s "$REDIS_SOCK" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$REDIS_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -9 "$REDIS_PID" 2>/dev/null || true
  fi
  wait "$REDIS_PID" 2>/dev/null || true
  [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"
  REDIS_PID=""
  REDIS_DIR=""
}

# pg_up: starts the project's private cluster if needed (scripts/pg).
# Sets PG_ADMIN_URL (database drover), PG_POSTMASTER_PID, PG_SOCKET_DIR.
pg_up() {
  if ! "$BENCH_ROOT/scripts/pg" status >/dev/null 2>&1; then
    PG_STARTED_BY_US=1
  fi
  PG_ADMIN_URL=$("$BENCH_ROOT/scripts/pg" start | tail -n 1)
  PG_SOCKET_DIR=$(printf '%s' "$PG_ADMIN_URL" | sed -n 's/.*host=\([^&]*\).*/\1/p')
  local datadir
  datadir=$(psql "$PG_ADMIN_URL" -XAtqc 'show data_directory')
  PG_POSTMASTER_PID=$(head -n 1 "$datadir/postmaster.pid")
  [ -n "$PG_POSTMASTER_PID" ] || bdie "no postmaster pid in $datadir"
  export PG_POSTMASTER_PID
}

# pg_db_create NAME: a fresh database, dropped by cleanup; sets PG_DB_URL.
# (Not in a command substitution: the list of databases to drop lives here.)
pg_db_create() {
  local name=$1
  PGOPTIONS="-c client_min_messages=warning" psql "$PG_ADMIN_URL" -XAtq -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >&2
  PG_DBS+=("$name")
  PG_DB_URL="postgresql:///$name?host=$PG_SOCKET_DIR&user=drover"
}

pg_down() {
  [ -n "$PG_ADMIN_URL" ] || return 0
  local db
  for db in "${PG_DBS[@]+"${PG_DBS[@]}"}"; do
    psql "$PG_ADMIN_URL" -XAtq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2 || true
  done
  PG_DBS=()
  # Leave the cluster as we found it, unless somebody else is using it now.
  if [ "$PG_STARTED_BY_US" -eq 1 ]; then
    local others
    others=$(psql "$PG_ADMIN_URL" -XAtqc "select count(*) from pg_stat_activity
      where backend_type = 'client backend' and pid <> pg_backend_pid()" 2>/dev/null || echo 1)
    if [ "$others" = "0" ]; then
      "$BENCH_ROOT/scripts/pg" stop >&2 || true
    else
      blog "leaving the private PostgreSQL running: $others other client(s) connected"
    fi
  fi
  PG_ADMIN_URL=""
}

cleanup() {
  local rc=$?
  redis_stop || true
  pg_down || true
  return $rc
}
