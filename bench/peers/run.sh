#!/usr/bin/env bash
# Peer job systems on this machine, for Drover's benchmarks (issue 6).
#
#   bench/peers/run.sh <peer> <workload> [--jobs N] [--runs R] [--durability D0|D2]
#                      [--batched] [--concurrency C]
#   bench/peers/run.sh all [--jobs N] [--runs R]
#
#   peer:     bullmq | sidekiq | celery | graphile
#   workload: B1 (preload N no-op jobs, then drain; default N = 100000)
#             B2 (bullmq, graphile: open-loop submits at 500, 2000, 8000,
#                 16000, 32000/s for 5 s each while the worker runs them; ack
#                 latency per rate, until the first saturated rate)
#             B3 (one-at-a-time submit -> handler start, idle system; default N = 200)
#   --durability  Redis peers: D0 (no persistence, default) or D2 (appendonly
#                 yes + appendfsync always). graphile is always D2 (PostgreSQL
#                 with fsync and synchronous_commit on).
#   --batched     graphile: localQueue 500 + completion batching (default:
#                 graphile-worker's default one-job fetch and completion);
#                 concurrency 16 either way
#
# One JSON line per run on stdout; everything else on stderr. Each
# invocation starts its own servers and stops them on exit. Needs
# bench/setup-peers.sh to have run once.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
peer=$1; shift

if [ "$peer" = "all" ]; then
  # The issue's table: B1 for every peer and setting, then B3 where practical.
  rc=0
  runone() {
    blog "=== $* ==="
    "$0" "$@" || { rc=1; blog "FAILED: $*"; }
  }
  runone graphile B1 --batched "$@"
  runone graphile B1 "$@"
  runone bullmq B1 --durability D0 "$@"
  runone bullmq B1 --durability D2 "$@"
  runone sidekiq B1 --durability D0 "$@"
  runone celery B1 --durability D0 "$@"
  # B3 keeps its own job count (200).
  b3args=()
  while [ $# -gt 0 ]; do
    case "$1" in --runs) b3args+=("$1" "$2"); shift 2 ;; --jobs) shift 2 ;; *) shift ;; esac
  done
  runone graphile B3 "${b3args[@]+"${b3args[@]}"}"
  runone bullmq B3 --durability D0 "${b3args[@]+"${b3args[@]}"}"
  runone bullmq B3 --durability D2 "${b3args[@]+"${b3args[@]}"}"
  runone sidekiq B3 --durability D0 "${b3args[@]+"${b3args[@]}"}"
  exit $rc
fi

[ $# -ge 1 ] || usage
workload=$1; shift
jobs=""; runs=1; durability=""; batched=0; concurrency=""
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --batched) batched=1; shift ;;
    --concurrency) concurrency=$2; shift 2 ;;
    -h|--help) usage ;;
    *) blog "unknown option $1"; usage ;;
  esac
done
case "$workload" in B1|B2|B3) ;; *) bdie "unknown workload '$workload' (B1, B2, B3)" ;; esac
case "$workload" in
  B1) jobs=${jobs:-100000} ;;
  B2) jobs=${jobs:-1000000000000} ;; # the worker runs whatever arrives
  B3) jobs=${jobs:-200} ;;
esac

[ -d "$HERE/node/node_modules/bullmq" ] && [ -d "$HERE/node/node_modules/graphile-worker" ] \
  || bdie "node packages are missing: run bench/setup-peers.sh"

DRIVER_PID=""
trap cleanup EXIT
trap '[ -n "$DRIVER_PID" ] && kill "$DRIVER_PID" 2>/dev/null; exit 130' INT TERM

args=(--peer "$peer" --workload "$workload" --jobs "$jobs" --runs "$runs")
[ -n "$concurrency" ] && args+=(--concurrency "$concurrency")
case "$peer" in
  bullmq|sidekiq|celery)
    durability=${durability:-D0}
    [ "$batched" -eq 0 ] || bdie "--batched is for graphile"
    case "$peer" in
      sidekiq) command -v ruby >/dev/null && ruby -e 'require "sidekiq"' 2>/dev/null \
                 || bdie "Sidekiq is missing: run bench/setup-peers.sh" ;;
      celery) /usr/bin/python3 -c 'import celery, redis' 2>/dev/null \
                 || bdie "Celery is missing: run bench/setup-peers.sh" ;;
    esac
    [ "$peer" = celery ] && [ "$workload" = B3 ] && bdie "B3 is not implemented for celery"
    [ "$workload" = B2 ] && [ "$peer" != bullmq ] && bdie "B2 is implemented for bullmq and graphile only"
    redis_start "$durability"
    ;;
  graphile)
    [ -z "$durability" ] || [ "$durability" = D2 ] || bdie "graphile runs at D2 only"
    durability=D2
    pg_up
    pg_db_create drover_bench_gw
    PG_URL=$PG_DB_URL
    export PG_URL
    args+=(--batched "$batched")
    ;;
  *) bdie "unknown peer '$peer' (bullmq, sidekiq, celery, graphile)" ;;
esac
args+=(--durability "$durability")

# In the background, so that a signal reaches the traps at once; the driver
# kills its own children when it is signalled.
node "$HERE/node/driver.js" "${args[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
