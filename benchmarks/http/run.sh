#!/usr/bin/env bash
# HTTP gateway benchmark: submit requests/s and latency with wrk, and SSE
# fan-out with drover_bench_sse, against a real drover-node. Prints one JSON
# line per measurement (stdout); progress goes to stderr.
#
#   benchmarks/http/run.sh [--duration 10] [--connections 64] [--subscribers "1 100 1000 10000"]
#
# Measurements, in this order, in one run:
#   reference  wrk GET /healthz: the gateway's HTTP ceiling, no node work
#   submit D0  wrk POST /api/jobs, --store memory (nothing durable)
#   submit D2  wrk POST /api/jobs, --store postgres (each 202 after COMMIT,
#              fsync and synchronous_commit on; private PostgreSQL, fresh DB)
#   sse        one job reporting progress to N subscribers (memory store)
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

DURATION=10
CONNS=64
SUBS="1 100 1000 10000"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

PACKAGES+=(wrk)
install_packages
build "$ROOT/build" >&2
BIN=$ROOT/build
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

NODE_PID=
stop_node() {
  if [ -n "$NODE_PID" ]; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
    NODE_PID=
  fi
}
trap stop_node EXIT

# start_node <args...>: starts drover-node, sets PORT from its ready line.
start_node() {
  local out; out=$(mktemp)
  "$BIN/nodes/drover-node" --admin-port 0 --http-port 0 --slots cpu=2 \
    --http-max-streams-per-key 100000 "$@" >"$out" 2>/dev/null &
  NODE_PID=$!
  local deadline=$((SECONDS + 60))
  until grep -q " node: ready " "$out"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$NODE_PID" 2>/dev/null; then
      echo "drover-node did not start" >&2; cat "$out" >&2; exit 1
    fi
    sleep 0.1
  done
  PORT=$(sed -n 's/.* http=127.0.0.1:\([0-9]*\).*/\1/p' "$out")
  rm -f "$out"
}

run_wrk() { # <label> <durability> <script> <path>
  log "$1"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$ROOT/benchmarks/http/$3" \
    "http://127.0.0.1:$PORT$4" | tail -n 1 |
    sed "s|^{|{\"label\":\"$1\",\"durability\":\"$2\",\"connections\":$CONNS,\"load_1m\":$(cut -d' ' -f1 /proc/loadavg),|"
}

start_node --store memory
run_wrk "reference GET /healthz" "n/a" get.lua /healthz
run_wrk "submit memory store" "D0" submit.lua /api/jobs
stop_node

pg_start
DB=drover_bench_http
psql "$DROVER_PG_URL" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
BENCH_URL=${DROVER_PG_URL/\/\/\/drover\?/\/\/\/$DB?}
start_node --store postgres --pg-url "$BENCH_URL"
run_wrk "submit postgres store" "D2" submit.lua /api/jobs
stop_node
psql "$DROVER_PG_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null

for n in $SUBS; do
  start_node --store memory
  log "sse: $n subscribers"
  "$BIN/benchmarks/drover_bench_sse" --port "$PORT" --subscribers "$n" \
    --job-ms 5000 --steps 100 || echo "{\"bench\":\"sse\",\"subscribers\":$n,\"failed\":true}"
  stop_node
done
