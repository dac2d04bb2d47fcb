#!/usr/bin/env bash
# Issue 6 in one run: PostgreSQL limits, CAF limits, the peer job systems
# and Drover's workloads, on this machine, one after the other, into one
# JSON-lines file; then the plots.
#
#   bench/run-all.sh [--quick] [--runs R] [--out FILE] [--only LIST] [--no-plot]
#
#   --quick     short version: small job counts, 1 run, short limits (about
#               10 minutes here)
#   --runs R    runs of each no-op B1 (Drover, and the peers except Celery
#               and graphile-worker's default mode, which get one), of
#               Drover's B7, B3, B2 and of B6 (default 3, quick 1)
#   --out FILE  default bench/results/run-<UTC time>.jsonl
#   --only LIST comma-separated subset of: limits,peers,drover (drover
#               includes B6 and the HTTP submit rate: benchmarks/http/run.sh)
#   --no-plot   do not call bench/plot.py
#
# Every line of FILE is one JSON object: first a header (machine, versions,
# commit), then one line per result as the scripts print them, each with
# "run_id" and "part" added. Progress goes to stderr. Peers need
# bench/setup-peers.sh (run once, as root); without it they are skipped with
# a message.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
log() { printf '[run-all] %s\n' "$*" >&2; }

quick=0; runs=""; out=""; only="limits,peers,drover"; plot=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --no-plot) plot=0; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) log "unknown option $1"; exit 2 ;;
  esac
done
# What the runs themselves need from Debian (the peers: bench/setup-peers.sh).
if ! command -v jq >/dev/null || ! command -v wrk >/dev/null; then
  log "installing jq and wrk"
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]+"${as_root[@]}"}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends jq wrk >&2
fi
runs=${runs:-$([ $quick -eq 1 ] && echo 1 || echo 3)}
run_id=$(date -u +%Y%m%dT%H%M%SZ)
out=${out:-$ROOT/bench/results/run-$run_id.jsonl}
mkdir -p "$(dirname "$out")"
: >"$out"
has() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# Appends the JSON lines of a command to $out (and shows them), tagged.
record() {
  local part=$1; shift
  log "--- $part: $* (load $(cut -d' ' -f1-3 /proc/loadavg))"
  local t0=$SECONDS rc=0
  "$@" | while IFS= read -r line; do
    case "$line" in
      \{*) printf '%s\n' "$line" | jq -c --arg id "$run_id" --arg part "$part" \
             '. + {run_id: $id, part: $part}' | tee -a "$out" ;;
      *) printf '%s\n' "$line" >&2 ;;
    esac
  done || rc=$?
  log "--- $part done in $((SECONDS - t0)) s (rc $rc)"
  return 0
}

# -- header ---------------------------------------------------------------------
ver() { "$@" 2>/dev/null | head -n 1 || echo unknown; }
pgv=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
jq -cn --arg id "$run_id" \
  --arg date "$(date -u +%FT%TZ)" \
  --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  --arg cores "$(nproc)" \
  --arg mem "$(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo)" \
  --arg kernel "$(uname -r)" \
  --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg dirty "$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)" \
  --arg gcc "$(ver g++ --version)" \
  --arg caf "$(dpkg-query -W -f='${Version}' libcaf-dev 2>/dev/null || echo unknown)" \
  --arg capnp "$(dpkg-query -W -f='${Version}' libcapnp-dev 2>/dev/null || echo unknown)" \
  --arg postgres "$(ver "$pgv/postgres" --version)" \
  --arg redis "$(ver redis-server --version)" \
  --arg node "$(ver node --version)" \
  --arg ruby "$(ver ruby --version)" \
  --arg python "$(ver /usr/bin/python3 --version)" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson quick "$quick" --argjson runs "$runs" \
  '{header: true, run_id: $id, date: $date, quick: ($quick == 1), runs: $runs,
    machine: {cpu: $cpu, cores: ($cores | tonumber), memory: $mem, kernel: $kernel},
    commit: $commit, uncommitted_files: ($dirty | tonumber),
    versions: {gcc: $gcc, caf: $caf, capnproto: $capnp, postgres: $postgres,
               redis: $redis, node: $node, ruby: $ruby, python: $python},
    loadavg_at_start: $load}' | tee "$out"
log "results: $out"

# -- limits ---------------------------------------------------------------------
if has limits; then
  secs=$([ $quick -eq 1 ] && echo 3 || echo 10)
  record limits "$ROOT/bench/limits/run.sh" all --seconds "$secs"
  record limits "$ROOT/bench/drover/run.sh" caf $([ $quick -eq 1 ] && echo --quick)
fi

# -- peers ----------------------------------------------------------------------
if has peers; then
  if "$ROOT/bench/setup-peers.sh" --check 2>/dev/null; then
    pj=(); [ $quick -eq 1 ] && pj=(--jobs 10000)
    # The fast peers get --runs runs; Celery (about 100 s per 100,000 jobs
    # here) and graphile-worker's default mode one.
    record peers "$ROOT/bench/peers/run.sh" graphile B1 --batched "${pj[@]+"${pj[@]}"}" --runs "$runs"
    record peers "$ROOT/bench/peers/run.sh" graphile B1 "${pj[@]+"${pj[@]}"}" --runs 1
    record peers "$ROOT/bench/peers/run.sh" bullmq B1 --durability D0 "${pj[@]+"${pj[@]}"}" --runs "$runs"
    record peers "$ROOT/bench/peers/run.sh" bullmq B1 --durability D2 "${pj[@]+"${pj[@]}"}" --runs "$runs"
    record peers "$ROOT/bench/peers/run.sh" sidekiq B1 "${pj[@]+"${pj[@]}"}" --runs "$runs"
    record peers "$ROOT/bench/peers/run.sh" celery B1 "${pj[@]+"${pj[@]}"}" --runs 1
    record peers "$ROOT/bench/peers/run.sh" graphile B3
    record peers "$ROOT/bench/peers/run.sh" bullmq B3 --durability D0
    record peers "$ROOT/bench/peers/run.sh" bullmq B3 --durability D2
    record peers "$ROOT/bench/peers/run.sh" sidekiq B3
    # B2 where the peer's program has an open-loop submitter.
    record peers "$ROOT/bench/peers/run.sh" bullmq B2 --durability D0
    record peers "$ROOT/bench/peers/run.sh" bullmq B2 --durability D2
    record peers "$ROOT/bench/peers/run.sh" graphile B2 --batched
  else
    log "peers skipped: run bench/setup-peers.sh (as root) first"
  fi
fi

# -- Drover ---------------------------------------------------------------------
if has drover; then
  q=(); [ $quick -eq 1 ] && q=(--quick)
  record drover "$ROOT/bench/drover/run.sh" B1 "${q[@]+"${q[@]}"}" --runs "$runs"
  # B7, B3 and B2 get --runs runs too; B4 and B5 (minutes each) one.
  for w in B7 B3 B2; do
    record drover "$ROOT/bench/drover/run.sh" "$w" "${q[@]+"${q[@]}"}" --runs "$runs"
  done
  for w in B4 B5; do
    record drover "$ROOT/bench/drover/run.sh" "$w" "${q[@]+"${q[@]}"}"
  done
  # B6 and the HTTP submit rate: a real node behind the gateway, wrk and
  # drover_bench_sse (benchmarks/http/run.sh).
  if [ $quick -eq 1 ]; then
    record drover "$ROOT/benchmarks/http/run.sh" --duration 3 --subscribers "1 100 1000"
  else
    for run in $(seq 1 "$runs"); do
      record drover "$ROOT/benchmarks/http/run.sh" --duration 10 --subscribers "1 100 1000 10000"
    done
  fi
fi

jq -cn --arg id "$run_id" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{footer: true, run_id: $id, loadavg_at_end: $load}' | tee -a "$out"
log "results: $out"
if [ $plot -eq 1 ]; then
  /usr/bin/python3 "$ROOT/bench/plot.py" "$out" || log "plotting failed"
fi
